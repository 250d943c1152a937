// gqe train CONFIG: token-budget training with checkpoints and exact resume, on one process, on N
// local processes (--nproc), or as one rank of a job started by torchrun or SLURM.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "common/error.h"
#include "config/config_loader.h"
#include "dist/launcher.h"
#include "train/trainer.h"

namespace gqe {
namespace {

// The command line without --nproc, for the ranks the launcher starts.
std::vector<std::string> without_nproc(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0) continue;
    args.push_back(a);
  }
  return args;
}

}  // namespace

void add_train_command(CLI::App& app, int argc, char** argv) {
  auto o = std::make_shared<TrainOptions>();
  auto run_dir = std::make_shared<std::string>();
  auto nproc = std::make_shared<int>(1);
  CLI::App* cmd = app.add_subcommand("train", "Train the config's model on its dataset until train.tokens are seen");
  cmd->add_option("config", o->config_file, "YAML config file")->required();
  cmd->add_option("--set", o->overrides, "Override a config key, e.g. --set train.tokens=4M (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--run-dir", *run_dir, "Run directory (default: log.dir/log.name, i.e. runs/<config name>)");
  cmd->add_option("--resume", o->resume,
                  "auto: continue from the newest complete checkpoint of the run directory, if any; never: refuse "
                  "an existing run; or a checkpoint directory")
      ->capture_default_str();
  cmd->add_option("--nproc", *nproc, "Data-parallel processes on this machine (one per GPU on CUDA)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->footer(
      "Examples:\n"
      "  gqe train configs/tiny/gqe.yaml\n"
      "  gqe train configs/tiny/gqe.yaml --set train.tokens=4M --run-dir runs/gqe-long\n"
      "  gqe train configs/gqe-250m.yaml --nproc 8\n"
      "  torchrun --nproc-per-node 8 --no-python build/gqe train configs/gqe-250m.yaml\n"
      "  gqe train configs/gqe-250m.yaml --resume runs/gqe-250m/checkpoints/step_00010000\n"
      "Ctrl-C (SIGINT) or SIGTERM: the current step finishes, a checkpoint is saved, and the same command continues.");
  cmd->callback([o, run_dir, nproc, argc, argv] {
    o->run_dir = *run_dir;
    const LoadedConfig config = load_config(o->config_file, o->overrides);  // bad input fails before any rank starts
    if (*nproc > 1) {
      if (std::getenv("RANK"))
        throw UserError("--nproc: this process is already a rank of a launched job (RANK is set); drop --nproc");
      const int status =
          launch_local_ranks(*nproc, without_nproc(argc, argv), std::chrono::seconds(config.config.dist.timeout_s));
      if (status != 0) std::exit(status);  // the failing rank said why
      return;
    }
    train(config, *o);
  });
}

}  // namespace gqe
