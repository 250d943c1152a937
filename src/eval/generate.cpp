#include "eval/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace gqe {
namespace {

// Picks the next id from a [vocab] row of logits.
int32_t pick(at::Tensor logits, const SampleOptions& o, at::Generator& generator) {
  logits = logits.to(at::kCPU, at::kFloat);
  if (o.temperature <= 0) return static_cast<int32_t>(logits.argmax().item<int64_t>());
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    const at::Tensor kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = logits.sort(/*dim=*/-1, /*descending=*/true);
    const at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    // Drop a token when the ones before it already reach top_p (the first always stays).
    const at::Tensor drop = (cumulative - sorted.softmax(-1)) >= o.top_p;
    logits = logits.scatter(0, order, sorted.masked_fill(drop, -std::numeric_limits<float>::infinity()));
  }
  return static_cast<int32_t>(at::multinomial(logits.softmax(-1), 1, false, generator).item<int64_t>());
}

}  // namespace

std::vector<int32_t> generate(DecoderImpl& model, const std::vector<int32_t>& prompt, const SampleOptions& o) {
  const at::Device device = model.parameters().front().device();
  at::NoGradGuard no_grad;
  const bool training = model.is_training();
  model.eval();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  KVCache cache(model.config(), 1, static_cast<int64_t>(prompt.size()) + o.max_tokens,
                model.parameters().front().options());
  at::Tensor input = at::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), at::kLong).view({1, -1}).to(device);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    const at::Tensor logits = model.forward_last(input, 1, &cache).logits;
    const int32_t next = pick(logits[0][-1], o, generator);
    out.push_back(next);
    if (next == o.stop_token) break;
    input = at::full({1, 1}, next, at::TensorOptions().dtype(at::kLong).device(device));
  }
  model.train(training);
  return out;
}

}  // namespace gqe
