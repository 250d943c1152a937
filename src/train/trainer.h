// gqe train: trains the config's model on the config's dataset until train.tokens have been seen,
// logging to the console, train.log and metrics.jsonl, checkpointing every
// train.checkpoint.every_tokens, at the end and on SIGINT/SIGTERM, and resuming exactly
// (docs/training.md).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "config/config_loader.h"

namespace gqe {

struct TrainOptions {
  std::string config_file;             // as given, for the resume hint
  std::vector<std::string> overrides;  // likewise
  std::filesystem::path run_dir;       // empty: log.dir / log.name
  std::string resume = "auto";         // auto | never | a checkpoint directory
};

// Returns when the budget is spent (or a stop signal was handled by saving a checkpoint).
// Throws UserError for bad input, std::runtime_error when training cannot go on.
void train(const LoadedConfig& config, const TrainOptions& options);

}  // namespace gqe
