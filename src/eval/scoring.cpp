#include "eval/scoring.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "data/loader.h"
#include "model/autocast.h"

namespace gqe {

std::optional<double> validation_loss(DecoderImpl& model, const std::shared_ptr<const TokenStream>& val, int64_t seq_len,
                                      uint64_t windows, int64_t batch_size, bool bf16, Communicator& comm) {
  ValidationReader reader(val, static_cast<uint64_t>(seq_len), windows, static_cast<uint64_t>(batch_size), comm.rank(),
                          comm.world());
  if (reader.total_windows() == 0) return std::nullopt;
  const at::Device device = model.parameters().front().device();
  const int64_t V = model.config().vocab_size;
  at::NoGradGuard no_grad;
  const bool training = model.is_training();
  model.eval();
  at::Tensor sum = at::zeros({}, at::TensorOptions().device(device).dtype(at::kDouble));
  at::Tensor count = at::zeros({}, sum.options());
  while (auto batch = reader.next()) {
    const int64_t rows = static_cast<int64_t>(batch->samples.size());
    const at::Tensor tokens = at::from_blob(batch->tokens.data(), {rows, seq_len + 1}, at::kLong).to(device, false, true);
    AutocastScope autocast(device.type(), bf16);
    const at::Tensor logits = model.forward(tokens.slice(1, 0, seq_len)).logits;
    sum += at::cross_entropy_loss(logits.reshape({-1, V}).to(at::kFloat), tokens.slice(1, 1).reshape(-1), {},
                                  at::Reduction::Sum)
               .to(at::kDouble);
    count += static_cast<double>(rows * seq_len);
  }
  model.train(training);
  comm.all_reduce_sum({sum, count});
  return sum.item<double>() / count.item<double>();
}

std::vector<std::vector<double>> continuation_log_likelihoods(DecoderImpl& model, const EvalSet& set, size_t begin, size_t end,
                                                              int64_t batch_size, int64_t max_len, bool bf16) {
  struct Sequence {
    size_t item, choice;
    std::vector<int64_t> tokens;
    int64_t continuation;  // its last `continuation` tokens are the ones scored
  };
  std::vector<Sequence> sequences;
  for (size_t i = begin; i < end; ++i) {
    const TokenizedItem& item = set.items[i];
    for (size_t c = 0; c < item.continuations.size(); ++c) {
      Sequence s{i - begin, c, {item.context.begin(), item.context.end()}, static_cast<int64_t>(item.continuations[c].size())};
      s.tokens.insert(s.tokens.end(), item.continuations[c].begin(), item.continuations[c].end());
      if (static_cast<int64_t>(s.tokens.size()) > max_len + 1) s.tokens.erase(s.tokens.begin(), s.tokens.end() - (max_len + 1));
      sequences.push_back(std::move(s));
    }
  }
  std::vector<std::vector<double>> out(end - begin);
  for (size_t i = begin; i < end; ++i) out[i - begin].resize(set.items[i].continuations.size());

  const at::Device device = model.parameters().front().device();
  at::NoGradGuard no_grad;
  const bool training = model.is_training();
  model.eval();
  for (size_t first = 0; first < sequences.size(); first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(sequences.size(), first + static_cast<size_t>(batch_size));
    int64_t longest = 0;
    for (size_t s = first; s < last; ++s) longest = std::max<int64_t>(longest, static_cast<int64_t>(sequences[s].tokens.size()));
    // Right-padded: a causal model's positions do not see what comes after them.
    at::Tensor batch = at::zeros({static_cast<int64_t>(last - first), longest}, at::kLong);
    for (size_t s = first; s < last; ++s)
      batch[static_cast<int64_t>(s - first)].narrow(0, 0, static_cast<int64_t>(sequences[s].tokens.size()))
          .copy_(at::tensor(sequences[s].tokens, at::kLong));
    batch = batch.to(device);
    at::Tensor log_probs;
    {
      AutocastScope autocast(device.type(), bf16);
      log_probs = model.forward(batch.slice(1, 0, longest - 1)).logits.to(at::kFloat).log_softmax(-1);
    }
    const at::Tensor picked = log_probs.gather(-1, batch.slice(1, 1).unsqueeze(-1)).squeeze(-1).to(at::kCPU, at::kDouble);
    for (size_t s = first; s < last; ++s) {
      const Sequence& seq = sequences[s];
      const int64_t n = static_cast<int64_t>(seq.tokens.size());
      const int64_t scored = std::min(seq.continuation, n - 1);  // all of it unless truncation reached it
      // position p predicts token p + 1: the continuation's tokens are predicted at n-1-scored .. n-2
      out[seq.item][seq.choice] = picked[static_cast<int64_t>(s - first)].narrow(0, n - 1 - scored, scored).sum().item<double>();
    }
  }
  model.train(training);
  return out;
}

Picks best_choices(const std::vector<double>& ll, const std::vector<uint32_t>& chars, const std::vector<uint32_t>& bytes) {
  Picks p;
  auto per = [&](size_t c, const std::vector<uint32_t>& length) { return ll[c] / std::max<uint32_t>(length[c], 1); };
  for (size_t c = 1; c < ll.size(); ++c) {
    if (ll[c] > ll[p.acc]) p.acc = c;
    if (per(c, chars) > per(p.acc_norm, chars)) p.acc_norm = c;
    if (per(c, bytes) > per(p.acc_bytes, bytes)) p.acc_bytes = c;
  }
  return p;
}

TaskScore score_eval_set(DecoderImpl& model, const EvalSet& set, int64_t batch_size, int64_t max_len, bool bf16,
                         Communicator& comm, std::vector<nlohmann::ordered_json>* samples) {
  const size_t n = set.items.size(), W = static_cast<size_t>(comm.world()), r = static_cast<size_t>(comm.rank());
  const size_t begin = n * r / W, end = n * (r + 1) / W;
  const auto ll = continuation_log_likelihoods(model, set, begin, end, batch_size, max_len, bf16);
  double correct[3] = {0, 0, 0};
  std::string lines;
  for (size_t i = begin; i < end; ++i) {
    const TokenizedItem& item = set.items[i];
    const Picks p = best_choices(ll[i - begin], item.choice_chars, item.choice_bytes);
    const auto label = static_cast<size_t>(item.label);
    correct[0] += p.acc == label;
    correct[1] += p.acc_norm == label;
    correct[2] += p.acc_bytes == label;
    if (samples)
      lines += nlohmann::ordered_json{{"task", set.task},
                                      {"index", i},
                                      {"label", item.label},
                                      {"loglikelihoods", ll[i - begin]},
                                      {"pred", {{"acc", p.acc}, {"acc_norm", p.acc_norm}, {"acc_bytes", p.acc_bytes}}},
                                      {"context", item.context_text},
                                      {"choices", item.choice_texts}}
                   .dump() +
               "\n";
  }
  const at::Device device = model.parameters().front().device();
  at::Tensor counts = at::tensor({correct[0], correct[1], correct[2]}, at::TensorOptions().dtype(at::kDouble)).to(device);
  comm.all_reduce_sum({counts});
  if (samples) {
    samples->clear();
    for (const std::string& part : comm.all_gather(lines)) {  // in rank order: the items in order
      std::istringstream in(part);
      for (std::string line; std::getline(in, line);) samples->push_back(nlohmann::ordered_json::parse(line));
    }
  }
  const auto c = counts.to(at::kCPU);
  const double N = static_cast<double>(n);
  // A mean of 0/1 values: sample standard deviation sqrt(p(1-p) N/(N-1)), over sqrt(N).
  auto stderr_of = [&](double p) { return n > 1 ? std::sqrt(p * (1 - p) / (N - 1)) : std::nan(""); };
  TaskScore t{set.task, n, c[0].item<double>() / N, c[1].item<double>() / N, c[2].item<double>() / N};
  t.acc_stderr = stderr_of(t.acc);
  t.acc_norm_stderr = stderr_of(t.acc_norm);
  t.acc_bytes_stderr = stderr_of(t.acc_bytes);
  return t;
}

nlohmann::ordered_json evaluation_json(std::optional<double> val_loss, const std::vector<TaskScore>& tasks) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (val_loss) {
    j["val_loss"] = *val_loss;
    j["val_ppl"] = std::exp(*val_loss);
  }
  if (!tasks.empty()) {
    double acc = 0, acc_norm = 0, acc_bytes = 0;
    for (const TaskScore& t : tasks) {
      j["tasks"][t.task] = {{"acc", t.acc},
                            {"acc_norm", t.acc_norm},
                            {"acc_bytes", t.acc_bytes},
                            {"acc_stderr", t.acc_stderr},
                            {"acc_norm_stderr", t.acc_norm_stderr},
                            {"acc_bytes_stderr", t.acc_bytes_stderr},
                            {"items", t.items}};
      acc += t.acc / static_cast<double>(tasks.size());
      acc_norm += t.acc_norm / static_cast<double>(tasks.size());
      acc_bytes += t.acc_bytes / static_cast<double>(tasks.size());
    }
    j["tasks_average"] = {{"acc", acc}, {"acc_norm", acc_norm}, {"acc_bytes", acc_bytes}};
  }
  return j;
}

}  // namespace gqe
