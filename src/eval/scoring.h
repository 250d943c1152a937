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

// The choice each metric picks, as lm-evaluation-harness does: acc the highest log-likelihood,
// acc_norm the highest per character of the choice (Python's len), acc_bytes per UTF-8 byte; ties
// go to the first.
struct Picks {
  size_t acc = 0, acc_norm = 0, acc_bytes = 0;
  bool operator==(const Picks&) const = default;
};
Picks best_choices(const std::vector<double>& log_likelihoods, const std::vector<uint32_t>& chars,
                   const std::vector<uint32_t>& bytes);

struct TaskScore {
  std::string task;
  uint64_t items = 0;
  double acc = 0, acc_norm = 0, acc_bytes = 0;
  // The harness's standard errors of the means: sample standard deviation / sqrt(items).
  double acc_stderr = 0, acc_norm_stderr = 0, acc_bytes_stderr = 0;
};

// Accuracy over the whole set; rank r scores the block [r*n/W, (r+1)*n/W) of the items. With
// `samples`, rank 0 gets one object per item, in order: its index, label, the log-likelihood of
// each choice, what each metric picked, and the texts.
TaskScore score_eval_set(DecoderImpl& model, const EvalSet& set, int64_t batch_size, int64_t max_len, bool bf16,
                         Communicator& comm, std::vector<nlohmann::ordered_json>* samples = nullptr);

// The fields of a metrics.jsonl evaluation line and of eval.json: val_loss and val_ppl (if any),
// then "tasks": {name: {acc, acc_norm, acc_bytes, their _stderr, items}} and "tasks_average":
// {acc, acc_norm, acc_bytes} (if any).
nlohmann::ordered_json evaluation_json(std::optional<double> val_loss, const std::vector<TaskScore>& tasks);

}  // namespace gqe
