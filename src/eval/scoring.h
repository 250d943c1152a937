// Scores of a model (docs/evaluation.md): validation loss over fixed windows of the val split, and
// zero-shot multiple choice by log-likelihood, split over the ranks of a job.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "dist/communicator.h"
#include "eval/tasks.h"
#include "model/decoder.h"

namespace gqe {

// Mean cross-entropy (nats per token) over the first `windows` windows of seq_len + 1 tokens of
// the stream, this rank's block of them, reduced over the world. Nothing if there are none.
std::optional<double> validation_loss(DecoderImpl& model, const std::shared_ptr<const TokenStream>& val, int64_t seq_len,
                                      uint64_t windows, int64_t batch_size, bool bf16, Communicator& comm);

// Sum of log-probabilities of each continuation's tokens given its context, for items
// [begin, end): result[i][c] for item begin + i, choice c. Sequences longer than max_len + 1 keep
// their last tokens.
std::vector<std::vector<double>> continuation_log_likelihoods(DecoderImpl& model, const EvalSet& set, size_t begin, size_t end,
                                                              int64_t batch_size, int64_t max_len, bool bf16);

// The choice acc picks (highest log-likelihood) and the one acc_norm picks (highest log-likelihood
// per byte of the choice); ties go to the first.
std::pair<size_t, size_t> best_choices(const std::vector<double>& log_likelihoods, const std::vector<uint32_t>& bytes);

struct TaskScore {
  std::string task;
  uint64_t items = 0;
  double acc = 0, acc_norm = 0;
};

// Accuracy over the whole set; rank r scores the block [r*n/W, (r+1)*n/W) of the items.
TaskScore score_eval_set(DecoderImpl& model, const EvalSet& set, int64_t batch_size, int64_t max_len, bool bf16,
                         Communicator& comm);

// The fields of a metrics.jsonl evaluation line and of eval.json: val_loss and val_ppl (if any),
// then "tasks": {name: {acc, acc_norm, items}} and "tasks_average": {acc, acc_norm} (if any).
nlohmann::ordered_json evaluation_json(std::optional<double> val_loss, const std::vector<TaskScore>& tasks);

}  // namespace gqe
