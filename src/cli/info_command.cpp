// gqe info CONFIG: parameter counts, heads, FLOPs per token and memory of the config's model.
#include <ATen/Context.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "config/config_loader.h"
#include "dist/communicator.h"
#include "dist/device_info.h"
#include "model/model_info.h"

namespace gqe {

void add_info_command(CLI::App& app) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
    int nproc = 1;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("info", "Parameter counts, attention heads, FLOPs per token and memory of a config");
  cmd->add_option("config", opts->config, "YAML config file")->required();
  cmd->add_option("--set", opts->overrides, "Override a key, e.g. --set model.n_layers=8 (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--nproc", opts->nproc, "Data-parallel ranks: memory per rank with and without dist.shard_optimizer")
      ->check(CLI::Range(1, 1 << 20));
  cmd->footer(
      "Examples:\n"
      "  gqe info configs/gqa-250m.yaml\n"
      "  gqe info configs/gqe-250m.yaml --set model.attention.top_k=2 --set data.seq_len=4096\n"
      "  gqe info configs/gqe-250m.yaml --nproc 64         # per-rank memory, ZeRO-1 or not");
  cmd->callback([opts] {
    const LoadedConfig loaded = load_config(opts->config, opts->overrides);
    const ModelInfo info = describe_model(loaded.config, opts->nproc);
    fmt::print("{}\n{}", opts->config, format_model_info(loaded.config, info));
    if (opts->nproc > 1) {
      fmt::print("\nper rank of {} data-parallel ranks (estimate)\n", opts->nproc);
      for (const bool shard : {false, true}) {
        Config c = loaded.config;
        c.dist.shard_optimizer = shard;
        const ModelInfo r = describe_model(c, opts->nproc);
        fmt::print("  dist.shard_optimizer: {:<7}AdamW moments {}, with weights and gradients {}, total ~{}\n",
                   shard ? "true" : "false", gib(r.optimizer_bytes), gib(r.state_bytes()), gib(r.training_bytes()));
      }
    }
    // The verdict gqe train reaches on this machine, for one process on the config's device.
    const bool cuda_here = at::hasCUDA() && at::getNumGPUs() > 0;
    if (loaded.config.train.device == DeviceKind::cuda && !cuda_here) {
      fmt::print("  memory on cuda: no CUDA device here, not checked\n");
      return;
    }
    const at::Device device = rank_device(loaded.config.train.device, DistEnvironment{}, loaded.origin("train.device"));
    fmt::print("  {}\n", memory_verdict(info, device_name(device), available_memory(device)).text);
  });
}

}  // namespace gqe
