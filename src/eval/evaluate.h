// gqe eval and gqe sample: a run's newest checkpoint (or a given one) scored on the validation
// split and zero-shot tasks, or asked to write text (docs/evaluation.md).
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "dist/environment.h"
#include "eval/generate.h"

namespace gqe {

struct EvalOptions {
  std::filesystem::path target;                            // a run directory or a checkpoint directory
  std::vector<std::pair<std::string, std::string>> tasks;  // task name -> eval set file (none: the config's eval.tasks)
  bool val = false;
  int64_t batch_size = 0;                                  // 0: the config's eval.batch_size
  std::filesystem::path log_samples;                       // per-item JSON lines here (empty: none)
};

// Scores, prints a table, writes RUN_DIR/eval.json and a line of RUN_DIR/evals.jsonl (rank 0).
void evaluate(const EvalOptions& options);
// What evaluate() would refuse, checked by a launcher before it starts ranks that would each
// refuse it: `last` is the last local rank (its device must exist too).
void check_eval_input(const EvalOptions& options, const DistEnvironment& last);

struct SampleCommand {
  std::filesystem::path target;
  std::string prompt;
  int num_samples = 1;
  bool ids = false;  // print token ids (JSON) instead of text
  SampleOptions sampling;
};

// Prints each sample: the prompt, then what the model wrote; with `ids`, one JSON line per sample:
// {"prompt": [ids, the EOS in front], "generated": [ids, a final EOS included]}.
void sample(const SampleCommand& command);

}  // namespace gqe
