// gqe info CONFIG: parameter counts, heads, FLOPs per token and memory of the config's model.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "config/config_loader.h"
#include "model/model_info.h"

namespace gqe {

void add_info_command(CLI::App& app) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("info", "Parameter counts, attention heads, FLOPs per token and memory of a config");
  cmd->add_option("config", opts->config, "YAML config file")->required();
  cmd->add_option("--set", opts->overrides, "Override a key, e.g. --set model.n_layers=8 (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->footer(
      "Examples:\n"
      "  gqe info configs/gqa-250m.yaml\n"
      "  gqe info configs/gqe-250m.yaml --set model.attention.top_k=2 --set data.seq_len=4096");
  cmd->callback([opts] {
    const LoadedConfig loaded = load_config(opts->config, opts->overrides);
    fmt::print("{}\n{}", opts->config, format_model_info(loaded.config, describe_model(loaded.config)));
  });
}

}  // namespace gqe
