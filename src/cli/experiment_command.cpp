// gqe experiment run|status EXP.yaml, and gqe compare RUN_DIR...
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "cli/checks.h"
#include "cli/commands.h"
#include "cli/nproc.h"
#include "common/files.h"
#include "experiment/compare.h"
#include "experiment/experiment.h"

namespace gqe {

void add_experiment_commands(CLI::App& app) {
  CLI::App* experiment = app.add_subcommand("experiment", "Matched-budget experiments: arms that differ only in attention");
  experiment->require_subcommand(1);
  auto run = std::make_shared<std::pair<std::string, int>>("", 1);
  auto max_restarts = std::make_shared<int>(0);
  CLI::App* run_cmd = experiment->add_subcommand("run", "Train every arm (skipping finished ones), evaluate, compare");
  run_cmd->add_option("experiment", run->first, "Experiment file (configs/experiments/*.yaml)")->required();
  add_nproc_option(run_cmd, run->second);
  add_restarts_option(run_cmd, *max_restarts);
  run_cmd->footer(
      "Examples:\n"
      "  gqe experiment run configs/experiments/tiny.yaml\n"
      "  gqe experiment run configs/experiments/paper-table2.yaml --nproc 8 --max-restarts 3\n"
      "Interrupt it with Ctrl-C: the arm in progress saves a checkpoint; the same command continues.");
  run_cmd->callback([run, max_restarts] {
    // Over several nodes, bad input found before the first run's job (a file missing or wrong on
    // one node) stops that job on every node at once, as gqe train's does.
    job_command(run->second, [&] {
      check_restarts(*max_restarts);
      run_experiment(load_experiment(run->first), run->second, *max_restarts);
    });
  });

  auto status = std::make_shared<std::string>();
  CLI::App* status_cmd = experiment->add_subcommand("status", "Where each arm of an experiment stands");
  status_cmd->add_option("experiment", *status, "Experiment file")->required();
  status_cmd->callback([status] { print_experiment_status(load_experiment(*status)); });

  auto o = std::make_shared<CompareOptions>();
  auto runs = std::make_shared<std::vector<std::string>>();
  auto no_plots = std::make_shared<bool>(false);
  auto out = std::make_shared<std::string>();
  CLI::App* compare_cmd = app.add_subcommand("compare", "Runs side by side at matched token counts; tables and plots");
  compare_cmd->add_option("runs", *runs, "Run directories; the first is the baseline")->required();
  compare_cmd->add_option("--out", *out, "Write comparison.md, comparison.csv and PNG plots here");
  compare_cmd->add_option("--ema", o->ema, "Smoothing of the train loss (weight on the past)")->check(number_in(0, 0.999))->capture_default_str();
  compare_cmd->add_flag("--log-x", o->log_x, "Plots with a logarithmic token axis");
  compare_cmd->add_flag("--no-plots", *no_plots, "Tables only");
  auto tensorboard = std::make_shared<std::string>();
  compare_cmd->add_option("--tensorboard", *tensorboard, "Also write each run's curves as TensorBoard event files here (DIR/RUN)");
  compare_cmd->footer(
      "Examples:\n"
      "  gqe compare runs/tiny/gqa runs/tiny/gqe --out runs/tiny/comparison\n"
      "  gqe compare runs/paper/gqa-seed* runs/paper/gqe-seed*   # seeds grouped, Welch t-test\n"
      "  gqe compare runs/tiny/gqa runs/tiny/gqe --tensorboard runs/tiny/tb && tensorboard --logdir runs/tiny/tb");
  compare_cmd->callback([o, runs, no_plots, out, tensorboard] {
    o->runs.assign(runs->begin(), runs->end());
    o->out = *out;
    if (!out->empty()) check_output_path(*out, "--out", /*directory=*/true);
    o->tensorboard = *tensorboard;
    if (!tensorboard->empty()) check_output_path(*tensorboard, "--tensorboard", /*directory=*/true);
    o->plots = !*no_plots;
    compare_runs(*o);
  });
}

}  // namespace gqe
