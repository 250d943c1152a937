// gqe ladder run|status|fit LADDER.yaml
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/nproc.h"
#include "cli/checks.h"
#include "common/files.h"
#include "ladder/ladder.h"
#include "ladder/ladder_fit.h"

namespace gqe {

void add_ladder_commands(CLI::App& app) {
  CLI::App* ladder = app.add_subcommand("ladder", "Scaling ladders: the arms at several sizes, a scaling law per arm, the gap extrapolated");
  ladder->require_subcommand(1);
  auto run = std::make_shared<std::pair<std::string, int>>("", 1);
  auto max_restarts = std::make_shared<int>(0);
  CLI::App* run_cmd = ladder->add_subcommand("run", "Train every rung x budget x arm x seed (skipping finished runs)");
  run_cmd->add_option("ladder", run->first, "Ladder file (configs/ladders/*.yaml)")->required();
  add_nproc_option(run_cmd, run->second);
  add_restarts_option(run_cmd, *max_restarts);
  run_cmd->footer(
      "Examples:\n"
      "  gqe ladder run configs/ladders/tiny.yaml\n"
      "  gqe ladder run configs/ladders/paper.yaml --nproc 8 --max-restarts 3\n"
      "Interrupt it with Ctrl-C: the run in progress saves a checkpoint; the same command continues.");
  run_cmd->callback([run, max_restarts] {
    // Over several nodes, bad input found before the first run's job (a file missing or wrong on
    // one node) stops that job on every node at once, as gqe train's does.
    job_command(run->second, [&] {
      check_restarts(*max_restarts);
      run_ladder(load_ladder(run->first), run->second, *max_restarts);
    });
  });

  auto status = std::make_shared<std::string>();
  CLI::App* status_cmd = ladder->add_subcommand("status", "The plan (sizes, budgets, hyperparameters, cost) and where each run stands");
  status_cmd->add_option("ladder", *status, "Ladder file")->required();
  status_cmd->callback([status] { print_ladder_status(load_ladder(*status)); });

  auto fit = std::make_shared<LadderFitOptions>();
  auto fit_args = std::make_shared<std::pair<std::string, std::string>>();  // ladder, --predict
  auto out = std::make_shared<std::string>();
  auto no_plots = std::make_shared<bool>(false);
  CLI::App* fit_cmd = ladder->add_subcommand("fit", "Fit each arm's loss against compute; the gap measured and extrapolated, with 90% intervals");
  fit_cmd->add_option("ladder", fit_args->first, "Ladder file, or the directory a ladder ran in")->required();
  fit_cmd->add_option("--predict", fit_args->second, "Targets PARAMS@TOKENS, comma-separated (non-embedding parameters at tokens)");
  fit_cmd->add_option("--out", *out, "Write ladder.md, ladder.csv, ladder.json and the plots here (default: OUT/fit)");
  fit_cmd->add_option("--bootstrap", fit->bootstrap, "Bootstrap draws for the intervals")->check(whole_at_least(100, 100000))->capture_default_str();
  fit_cmd->add_option("--seed", fit->seed, "Seed of the bootstrap")->capture_default_str();
  fit_cmd->add_flag("--no-plots", *no_plots, "Tables only");
  fit_cmd->footer(
      "Examples:\n"
      "  gqe ladder fit configs/ladders/tiny.yaml --predict 1.5M@1.5M,201M@30B\n"
      "  gqe ladder fit runs/ladder-tiny --predict 201M@30B,1B@20B,7B@140B\n"
      "The fit uses the finished runs and lists the others.");
  fit_cmd->callback([fit, fit_args, out, no_plots] {
    if (!fit_args->second.empty()) fit->targets = parse_targets(fit_args->second);
    if (!out->empty()) check_output_path(*out, "--out", /*directory=*/true);
    fit->out = *out;
    fit->plots = !*no_plots;
    fit_ladder_command(load_ladder_or_run_dir(fit_args->first), *fit);
  });
}

}  // namespace gqe
