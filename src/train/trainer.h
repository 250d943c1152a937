// gqe train: trains the config's model on the config's dataset until train.tokens have been seen,
// logging to the console, train.log and metrics.jsonl, checkpointing every
// train.checkpoint.every_tokens, at the end and on SIGINT/SIGTERM, and resuming exactly
// (docs/training.md).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "config/config_loader.h"
#include "data/dataset.h"
#include "eval/tasks.h"
#include "model/model_info.h"

namespace gqe {

// The run's input, checked before any rank touches a run directory or allocates the model: the
// dataset and its tokenizer, the eval sets of eval.tasks, how a global batch splits over `world`
// ranks and micro-batches, and whether training fits the memory of `device` (shared by
// `ranks_on_device` processes). Throws UserError naming what is wrong. `gqe train --nproc N` runs
// it once before it starts the ranks (so that an error is printed once), and every rank again.
struct TrainingInput {
  Manifest manifest;
  std::vector<EvalSet> eval_sets;
  MemoryVerdict memory;  // fits; the estimate may not (a warning)
};
TrainingInput check_training_input(const LoadedConfig& config, int world, at::Device device, int ranks_on_device);

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
