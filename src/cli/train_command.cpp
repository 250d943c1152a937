// gqe train CONFIG: token-budget training with checkpoints and exact resume.
#include <CLI/CLI.hpp>

#include <memory>

#include "cli/commands.h"
#include "common/error.h"
#include "config/config_loader.h"
#include "train/trainer.h"

namespace gqe {

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  auto run_dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("train", "Train the config's model on its dataset until train.tokens are seen");
  cmd->add_option("config", o->config_file, "YAML config file")->required();
  cmd->add_option("--set", o->overrides, "Override a config key, e.g. --set train.tokens=4M (repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--run-dir", *run_dir, "Run directory (default: log.dir/log.name, i.e. runs/<config name>)");
  cmd->add_option("--resume", o->resume,
                  "auto: continue from the newest complete checkpoint of the run directory, if any; never: refuse "
                  "an existing run; or a checkpoint directory")
      ->capture_default_str();
  cmd->footer(
      "Examples:\n"
      "  gqe train configs/tiny/gqe.yaml\n"
      "  gqe train configs/tiny/gqe.yaml --set train.tokens=4M --run-dir runs/gqe-long\n"
      "  gqe train configs/gqe-250m.yaml --resume runs/gqe-250m/checkpoints/step_00010000\n"
      "Ctrl-C (SIGINT) or SIGTERM: the current step finishes, a checkpoint is saved, and the same command continues.");
  cmd->callback([o, run_dir] {
    o->run_dir = *run_dir;
    train(load_config(o->config_file, o->overrides), *o);
  });
}

}  // namespace gqe
