// gqe export CHECKPOINT --out DIR: a Hugging Face model directory from a checkpoint.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/files.h"
#include "train/export.h"

namespace gqe {

void add_export_command(CLI::App& app) {
  struct Options {
    std::string checkpoint, out, dtype = "fp32";
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("export", "Write a checkpoint as model.safetensors + config.json (+ tokenizer)");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint directory (runs/NAME/checkpoints/step_...)")->required();
  cmd->add_option("--out", o->out, "Directory to create")->required();
  cmd->add_option("--dtype", o->dtype, "Weight dtype")->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  cmd->footer(
      "Examples:\n"
      "  gqe export runs/gqa/checkpoints/step_00000244 --out exports/gqa\n"
      "  python -c \"import transformers as t; t.AutoModelForCausalLM.from_pretrained('exports/gqa')\"\n"
      "  python -c \"import transformers as t; t.AutoModelForCausalLM.from_pretrained('exports/gqe', trust_remote_code=True)\"");
  cmd->callback([o] {
    check_output_path(o->out, "--out", /*directory=*/true);
    export_checkpoint({o->checkpoint, o->out, o->dtype == "bf16"});
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(o->out)) files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
    fmt::print("wrote {}: {}\n", o->out, fmt::join(files, ", "));
  });
}

}  // namespace gqe
