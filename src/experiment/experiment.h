// Matched-budget experiments (docs/experiments.md): a base config and its arms, which may differ
// only in model.attention.*, each trained (for every seed) on the identical data order and token
// budget, then evaluated and compared. Runs are resumable: a finished arm is skipped, an
// interrupted one continued.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/config_loader.h"

namespace YAML {
class Node;
}

namespace gqe {

// Shared by the files that define runs (experiments, ladders): nested mappings as dotted
// overrides ("model.attention.type=gqe"), and a mapping's keys checked against a list (UserError
// "FILE: unknown key 'where.key'; valid keys in where: ...").
void flatten_overrides(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out);
void only_keys(const YAML::Node& node, const std::string& file, const std::string& where, const std::vector<std::string>& keys);

struct ExperimentArm {
  std::string name;
  std::vector<std::string> overrides;  // "model.attention.type=gqe", ...
};

// `arms:` (name -> overrides); and the check that every arm's config loads over base (with the
// `common` overrides first) and differs from the first arm's only in model.attention.*.
std::vector<ExperimentArm> parse_arms(const YAML::Node& node, const std::string& file);
void check_arms(const std::string& file, const std::string& base, const std::vector<ExperimentArm>& arms,
                const std::vector<std::string>& common = {});

struct Experiment {
  std::string file, name, base;  // base: a config path, resolved relative to the experiment file
  std::filesystem::path out;     // arms run in out/<arm>, or out/<arm>-seed<s> with several seeds
  std::vector<int64_t> seeds{0};
  std::vector<ExperimentArm> arms;
  bool eval_val = true;
  std::map<std::string, std::string> eval_tasks;  // scored once each arm is trained
};

// One training run of the experiment: an arm with a seed.
struct ExperimentRun {
  std::string arm;
  int64_t seed = 0;
  std::filesystem::path run_dir;
  std::string label;                   // how progress lines name it: "gqe (seed 1)"
  std::vector<std::string> overrides;  // the arm's, train.seed and log.name
  LoadedConfig config;
};

// Reads and checks the file: the schema, every arm's config, and that arms differ from each other
// only in model.attention.*. Throws UserError naming the file and what is wrong.
Experiment load_experiment(const std::string& file);
std::vector<ExperimentRun> experiment_runs(const Experiment& experiment);

enum class RunState { not_started, running, interrupted, finished };
const char* run_state_name(RunState state);

struct RunStatus {
  RunState state = RunState::not_started;
  int64_t step = 0, tokens = 0;
  bool evaluated = false;  // eval.json is of the final checkpoint
};
RunStatus run_status(const ExperimentRun& run);

// The last validation loss in run_dir/metrics.jsonl (at the end of a finished run); nothing when
// none was logged.
std::optional<double> final_validation_loss(const std::filesystem::path& run_dir);

// Trains each run not finished (`gqe train base --run-dir ... --set ...` on nproc local ranks,
// started again up to max_restarts times after a fault), skipping finished ones and continuing
// interrupted ones; progress lines start with [tag], and a run that stops says to continue with
// `gqe <tag> run <file>` and the same options.
// False when a run stopped before its budget (Ctrl-C): the caller stops too. With NNODES (this
// machine is one node of several), each run is a job over all of them: every node starts every
// run's ranks in the same order, and only node 0, where rank 0 writes the run directories, reads
// them (a finished run's job ends without a step).
bool train_runs(const std::string& base, const std::vector<ExperimentRun>& runs, int nproc, int max_restarts,
                const std::string& tag, const std::string& file);

// Trains what is not finished (each run as `gqe train` on nproc local ranks), evaluates what is
// not evaluated, then writes the comparison to out/comparison. Stops, saying how to continue, when
// an arm's training or evaluation is interrupted.
void run_experiment(const Experiment& experiment, int nproc, int max_restarts = 0);

// A table: each run's state, tokens and latest losses.
void print_experiment_status(const Experiment& experiment);

}  // namespace gqe
