// Subcommands of `gqe` and `gqe-data`. Each adds itself to the app with its options, help and
// examples, and does its work in the CLI11 callback; errors propagate to run_cli() as exceptions.
#pragma once

namespace CLI {
class App;
}

namespace gqe {

// gqe
void add_info_command(CLI::App& app);
void add_train_command(CLI::App& app, int argc, char** argv);  // argv: for the ranks --nproc starts
void add_export_command(CLI::App& app);
void add_eval_commands(CLI::App& app, int argc, char** argv);  // eval, sample
void add_experiment_commands(CLI::App& app);                   // experiment run|status, compare
void add_ladder_commands(CLI::App& app);                       // ladder run|status|fit
void add_bench_command(CLI::App& app, int argc, char** argv);  // comm: argv for its ranks
void add_data_forwarding(CLI::App& app);  // `gqe data ...` runs gqe-data

// gqe-data (argc/argv: recorded in the dataset manifest)
void add_data_commands(CLI::App& app, int argc, char** argv);

}  // namespace gqe
