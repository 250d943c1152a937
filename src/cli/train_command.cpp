// gqe train CONFIG: token-budget training with checkpoints and exact resume, on one process, on N
// local processes (--nproc), or as one rank of a job started by torchrun or SLURM.
#include <CLI/CLI.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "common/error.h"
#include "config/config_loader.h"
#include "cli/nproc.h"
#include "common/files.h"
#include "dist/communicator.h"
#include "train/trainer.h"

namespace gqe {
void add_train_command(CLI::App& app, int argc, char** argv) {
  auto o = std::make_shared<TrainOptions>();
  auto run_dir = std::make_shared<std::string>();
  auto nproc = std::make_shared<int>(1), max_restarts = std::make_shared<int>(0);
  CLI::App* cmd = app.add_subcommand("train", "Train the config's model on its dataset until train.tokens are seen");
  cmd->add_option("config", o->config_file, "YAML config file")->required();
  cmd->add_option("--set", o->overrides, "Override a config key, e.g. --set train.tokens=4M (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--run-dir", *run_dir, "Run directory (default: log.dir/log.name, i.e. runs/<config name>)");
  cmd->add_option("--resume", o->resume,
                  "auto: continue from the newest complete checkpoint of the run directory, if any; never: refuse "
                  "an existing run; or a checkpoint directory")
      ->capture_default_str();
  add_nproc_option(cmd, *nproc);
  add_restarts_option(cmd, *max_restarts);
  cmd->footer(
      "Examples:\n"
      "  gqe train configs/tiny/gqe.yaml\n"
      "  gqe train configs/tiny/gqe.yaml --set train.tokens=4M --run-dir runs/gqe-long\n"
      "  gqe train configs/gqe-250m.yaml --nproc 8 --max-restarts 3\n"
      "  torchrun --nproc-per-node 8 --no-python build/gqe train configs/gqe-250m.yaml\n"
      "  gqe train configs/gqe-250m.yaml --resume runs/gqe-250m/checkpoints/step_00010000\n"
      "Ctrl-C (SIGINT) or SIGTERM: the current step finishes, a checkpoint is saved, and the same command continues.");
  cmd->callback([o, run_dir, nproc, max_restarts, argc, argv] {
    job_command(*nproc, [&] {
      check_restarts(*max_restarts);
      o->run_dir = *run_dir;
      const LoadedConfig config = load_config(o->config_file, o->overrides);  // bad input fails before any rank starts
      if (hosts_rank0(*nproc)) {  // only rank 0's machine needs the run directory
        if (run_dir->empty())
          check_output_path(std::filesystem::path(config.config.log.dir) / config.config.log.name,
                            config.origin("log.dir") + ": log.dir/log.name", /*directory=*/true);
        else
          check_output_path(*run_dir, "--run-dir", /*directory=*/true);
      }
      if (const std::optional<DistEnvironment> last = last_launched_rank(*nproc)) {
        const at::Device device = job_device(config, *last);
        // The data, the batch shape and the memory: before any rank starts on one machine. On several,
        // the ranks check them in the job (Communicator::check_input), each rank its share of the
        // shards on its own machine.
        if (last->one_machine()) check_training_input(config, last->world, device, device.is_cpu() ? *nproc : 1);
      }
      if (!launch_if_requested(*nproc, argc, argv, *max_restarts)) train(config, *o);
    });
  });
}

}  // namespace gqe
