// gqe compare (docs/experiments.md): runs side by side at matched token counts, seeds of the same
// arm grouped with their mean, spread and a Welch t-test against the first arm; tables on the
// console, in Markdown and CSV, and plots drawn by scripts/plot_runs.py.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config/config.h"
#include "experiment/stats.h"

namespace gqe {

struct RunSummary {
  std::string name;  // the run directory's name
  std::string group; // runs whose configs differ only in train.seed share it
  std::filesystem::path dir;
  Config config;
  int64_t params = 0, active_heads = 0, heads = 0;
  int64_t tokens = 0;            // reached
  double tokens_per_s = 0;       // median over steps
  std::vector<Point> train, train_ema, val, lr;
  std::vector<std::optional<double>> train_at, val_at;  // at the comparison's token points
  std::optional<double> final_val;
  std::map<std::string, std::pair<double, double>> tasks;  // eval.json: task -> (acc, acc_norm)
  std::optional<double> score;   // mean over tasks of the conventional metric (see task_score)
};

struct GroupSummary {
  std::string name;
  std::vector<size_t> runs;  // indices into Comparison::runs
  double val_mean = 0, val_std = 0, score_mean = 0, score_std = 0;
  std::optional<TTest> val_test, score_test;  // against the first group
};

struct Comparison {
  std::vector<double> points;  // tokens: the baseline's evaluations nearest 25, 50, 75, 100% of the smallest budget
  std::vector<RunSummary> runs;
  std::vector<GroupSummary> groups;
};

// HellaSwag is quoted as acc_norm, ARC-Easy and PIQA as acc (the papers' and harness's habit).
double task_score(const std::string& task, double acc, double acc_norm);

// Reads each run (config.yaml, metrics.jsonl, eval.json) and computes the comparison. Throws
// UserError naming a directory that is not a run.
Comparison compare(const std::vector<std::filesystem::path>& runs, double ema_alpha);

struct CompareOptions {
  std::vector<std::filesystem::path> runs;
  std::filesystem::path out;  // comparison.md, comparison.csv, plot_data.json, PNGs (empty: print only)
  double ema = 0.9;
  bool plots = true;
  bool log_x = false;
  std::filesystem::path tensorboard;  // event files of every run, one directory each (empty: none)
};

void compare_runs(const CompareOptions& options);

// Runs scripts/SCRIPT DATA OUT with the project's Python (GQE_PYTHON overrides) and prints what
// it says. A script that cannot write a PNG exits 3: that is an error (a full disk); a missing
// matplotlib only skips the plots, with a line saying why.
void run_plot_script(const std::string& script, const std::filesystem::path& data, const std::filesystem::path& out);

// The Markdown and CSV renderings (also printed and written by compare_runs).
std::string comparison_markdown(const Comparison& c);
std::string comparison_csv(const Comparison& c);

}  // namespace gqe
