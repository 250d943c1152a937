// Activation checkpointing must change memory, not math: the same loss, gradients and router
// statistics bit for bit (fp32, and bf16 autocast, which the recomputation must run under again),
// and a peak memory of the training step well below the plain one.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "model/autocast.h"
#include "model/cross_entropy.h"
#include "model/decoder.h"
#include "model_util.h"
#include "dist/device_info.h"

namespace gqe {
namespace {

using test::describe;

struct Step {
  at::Tensor loss, aux;
  std::vector<at::Tensor> grads, load;
  double peak_bytes = 0;
};

// One training forward and backward, as the trainer runs it.
Step train_step(Decoder& model, const at::Tensor& tokens, bool checkpointing, bool bf16) {
  model->zero_grad();
  model->set_activation_checkpointing(checkpointing);
  const int64_t T = tokens.size(1) - 1;
  Step s;
  const PeakMemory peak(at::Device("cpu"));
  DecoderOutput out;
  {
    AutocastScope autocast(at::kCPU, bf16);
    out = model->forward(tokens.slice(1, 0, T));
    s.aux = out.aux_loss;
    s.loss = token_cross_entropy(out.logits, tokens.slice(1, 1)) + 0.1 * out.aux_loss;
  }
  s.loss.backward();
  s.peak_bytes = peak.bytes();
  for (const auto& p : model->parameters()) s.grads.push_back(p.grad().clone());
  for (const RouterStats& r : out.router) {
    EXPECT_FALSE(r.load.requires_grad());
    EXPECT_FALSE(r.entropy.requires_grad());
    s.load.push_back(r.load);
  }
  return s;
}

void expect_identical(const Step& a, const Step& b) {
  EXPECT_TRUE(at::equal(a.loss, b.loss)) << a.loss.item<double>() << " vs " << b.loss.item<double>();
  EXPECT_TRUE(at::equal(a.aux, b.aux));
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(at::equal(a.grads[i], b.grads[i])) << "gradient " << i << " differs by "
                                                   << (a.grads[i] - b.grads[i]).abs().max().item<double>();
  ASSERT_EQ(a.load.size(), b.load.size());
  for (size_t i = 0; i < a.load.size(); ++i) EXPECT_TRUE(at::equal(a.load[i], b.load[i]));
}

TEST(ActivationCheckpointing, SameLossGradientsAndRouterStatsInFp32AndBf16) {
  for (const ModelConfig& c : test::every_kind()) {
    for (const bool bf16 : {false, true}) {
      SCOPED_TRACE(describe(c) + (bf16 ? " bf16" : " fp32"));
      Decoder model = test::random_decoder(c, 5);
      const at::Tensor tokens = at::randint(c.vocab_size, {2, 13});
      const Step plain = train_step(model, tokens, false, bf16);
      const Step recomputed = train_step(model, tokens, true, bf16);
      expect_identical(plain, recomputed);
      EXPECT_GT(plain.grads[0].abs().sum().item<double>(), 0.0);
    }
  }
}

// Without grad mode (evaluation) or with a KV cache (generation) nothing is recomputed: the model
// gives what it gives without checkpointing.
TEST(ActivationCheckpointing, InferenceIsUnchanged) {
  const ModelConfig c = test::small_config(AttentionType::gqe);
  Decoder model = test::random_decoder(c, 6);
  const at::Tensor tokens = at::randint(c.vocab_size, {2, 9});
  at::NoGradGuard no_grad;
  const at::Tensor plain = model->forward(tokens).logits;
  model->set_activation_checkpointing(true);
  EXPECT_TRUE(at::equal(model->forward(tokens).logits, plain));
  KVCache cache(c, 2, 9, at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(at::equal(model->forward(tokens, &cache).logits, plain));
}

// What it is for: the step holds one tensor per layer between the passes, not all of them.
TEST(ActivationCheckpointing, PeakMemoryOfATrainingStepFalls) {
  ModelConfig c = test::small_config(AttentionType::gqe);
  c.d_model = 64;
  c.n_layers = 6;
  c.head_dim = 16;
  c.ffn_hidden = 172;
  Decoder model = test::random_decoder(c, 7);
  const at::Tensor tokens = at::randint(c.vocab_size, {4, 257});
  const Step plain = train_step(model, tokens, false, false);
  const Step recomputed = train_step(model, tokens, true, false);
  expect_identical(plain, recomputed);
  RecordProperty("plain_peak_bytes", std::to_string(plain.peak_bytes));
  RecordProperty("checkpointed_peak_bytes", std::to_string(recomputed.peak_bytes));
  EXPECT_LT(recomputed.peak_bytes, 0.4 * plain.peak_bytes) << plain.peak_bytes << " -> " << recomputed.peak_bytes;
}

}  // namespace
}  // namespace gqe
