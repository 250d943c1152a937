// The training loss against ATen's cross-entropy (value and gradient, across chunk boundaries and
// in bf16), and the decoder's last-positions forward that prefill and generation use.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include "model/cross_entropy.h"
#include "model/decoder.h"
#include "model_util.h"

namespace gqe {
namespace {

struct Graded {
  at::Tensor loss, grad;
};

template <class Loss> Graded loss_and_grad(const at::Tensor& logits, const at::Tensor& targets, Loss&& loss_fn) {
  const at::Tensor x = logits.detach().clone().requires_grad_(true);
  const at::Tensor loss = loss_fn(x, targets);
  // A non-unit upstream gradient: the backward must scale by it.
  loss.backward(at::full({}, 0.5, loss.options()));
  return {loss.detach(), x.grad()};
}

TEST(CrossEntropy, MatchesATenValueAndGradientInEveryChunking) {
  torch::manual_seed(3);
  const at::Tensor logits = at::randn({3, 7, 11}) * 4;
  const at::Tensor targets = at::randint(11, {3, 7});
  const Graded want = loss_and_grad(logits, targets, [](const at::Tensor& x, const at::Tensor& t) {
    return at::cross_entropy_loss(x.reshape({-1, 11}), t.reshape(-1));
  });
  // 11 values per row: 1 row per chunk, 3 rows (a ragged last chunk), everything at once.
  for (int64_t chunk : {1, 33, 1 << 26}) {
    SCOPED_TRACE(chunk);
    const Graded got = loss_and_grad(logits, targets, [&](const at::Tensor& x, const at::Tensor& t) {
      return token_cross_entropy(x, t, chunk);
    });
    EXPECT_EQ(got.loss.scalar_type(), at::kFloat);
    EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-6);
    EXPECT_TRUE(at::allclose(got.grad, want.grad, 1e-6, 1e-7)) << (got.grad - want.grad).abs().max();
  }
}

TEST(CrossEntropy, LeavesFp32LogitsUntouched) {
  // For fp32 logits the saved tensor is the caller's: an in-place softmax in backward would corrupt it.
  const at::Tensor logits = at::randn({4, 5}).requires_grad_(true);
  const at::Tensor before = logits.detach().clone();
  token_cross_entropy(logits, at::randint(5, {4})).backward();
  EXPECT_TRUE(at::equal(logits.detach(), before));
}

TEST(CrossEntropy, Bf16LogitsGiveAnFp32LossAndABf16Gradient) {
  torch::manual_seed(4);
  const at::Tensor logits = (at::randn({64, 300}) * 3).to(at::kBFloat16);
  const at::Tensor targets = at::randint(300, {64});
  const Graded want = loss_and_grad(logits.to(at::kFloat), targets, [](const at::Tensor& x, const at::Tensor& t) {
    return at::cross_entropy_loss(x, t);
  });
  const Graded got = loss_and_grad(logits, targets, [](const at::Tensor& x, const at::Tensor& t) {
    return token_cross_entropy(x, t, 1000);
  });
  EXPECT_EQ(got.loss.scalar_type(), at::kFloat);
  EXPECT_EQ(got.grad.scalar_type(), at::kBFloat16);
  // The loss is computed in fp32 from the bf16 values: as exact as the fp32 reference.
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-5);
  EXPECT_TRUE(at::allclose(got.grad.to(at::kFloat), want.grad, 1e-2, 1e-5));
}

// On a GPU the loss runs fused kernels (cross_entropy_cuda.cu); they must agree with the CPU path.
// Runs where a GPU is (scripts/gpu_report.sh); CI has none.
TEST(CrossEntropy, CudaKernelsMatchTheCpuPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(6);
  for (const auto& [rows, vocab, dtype] : {std::tuple{37, 100, at::kFloat}, std::tuple{64, 1000, at::kFloat},
                                           std::tuple{64, 50304, at::kBFloat16}, std::tuple{3, 50304, at::kFloat}}) {
    SCOPED_TRACE(std::to_string(vocab) + " " + c10::toString(dtype));
    const at::Tensor logits = (at::randn({rows, vocab}) * 4).to(dtype);
    const at::Tensor targets = at::randint(vocab, {rows});
    auto loss_fn = [](const at::Tensor& x, const at::Tensor& t) { return token_cross_entropy(x, t); };
    const Graded cpu = loss_and_grad(logits, targets, loss_fn);
    const Graded gpu = loss_and_grad(logits.cuda(), targets.cuda(), loss_fn);
    EXPECT_EQ(gpu.grad.scalar_type(), dtype);
    EXPECT_NEAR(gpu.loss.item<double>(), cpu.loss.item<double>(), 1e-5 * cpu.loss.item<double>());
    const double tol = dtype == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_TRUE(at::allclose(gpu.grad.cpu().to(at::kFloat), cpu.grad.to(at::kFloat), tol, 1e-7))
        << (gpu.grad.cpu().to(at::kFloat) - cpu.grad.to(at::kFloat)).abs().max();
  }
}

TEST(Decoder, ForwardLastIsTheTailOfTheFullForward) {
  for (AttentionType type : {AttentionType::gqa, AttentionType::gqe}) {
    torch::manual_seed(5);
    const ModelConfig c = test::small_config(type);
    Decoder model(c);
    test::randomize(*model);
    const at::Tensor tokens = at::randint(c.vocab_size, {2, 9});
    const DecoderOutput full = model->forward(tokens), last = model->forward_last(tokens, 3);
    ASSERT_EQ(last.logits.sizes(), (at::IntArrayRef{2, 3, c.vocab_size}));
    EXPECT_TRUE(at::allclose(last.logits, full.logits.narrow(1, 6, 3), 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(last.aux_loss, full.aux_loss));
  }
}

}  // namespace
}  // namespace gqe
