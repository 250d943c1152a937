// gqe ladder fit (docs/scaling.md): each arm's final validation losses fitted against training
// compute, L(C) = E + A C^-alpha (and L(N, D) in Chinchilla's form when the ladder has several
// budgets per size), the gap to the first arm measured per rung and predicted at targets, with
// 90% intervals from a paired residual bootstrap; written as ladder.md, ladder.csv, ladder.json
// and plots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ladder/ladder.h"

namespace gqe {

// "201M@30B": a model of 201M non-embedding parameters (shaped by the ladder's shape rule)
// trained on 30B tokens.
struct LadderTarget {
  std::string label;
  double params = 0, tokens = 0;
};
// A comma-separated list; throws UserError naming the bad entry.
std::vector<LadderTarget> parse_targets(const std::string& text);

struct LadderFitOptions {
  std::vector<LadderTarget> targets;
  std::filesystem::path out;  // default: the ladder's out/fit
  int bootstrap = 1000;
  uint64_t seed = 0;
  bool plots = true;
};

// What the fit found: the text of ladder.md, and ladder.json's content as text.
struct LadderReport {
  std::string markdown, json, csv;
  size_t finished = 0;  // runs with a final validation loss (nothing to plot without them)
};
LadderReport fit_ladder(const Ladder& ladder, const LadderFitOptions& options);

// fit_ladder, printed and written to options.out (with the plots unless options.plots is false).
void fit_ladder_command(const Ladder& ladder, LadderFitOptions options);

// The ladder a `gqe ladder fit` argument names: a ladder file, or the out directory of a ladder
// run (its ladder.yaml, with out set to the directory).
Ladder load_ladder_or_run_dir(const std::string& path);

}  // namespace gqe
