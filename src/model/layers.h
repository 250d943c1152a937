// The decoder's small building blocks, in the Hugging Face Llama conventions (docs/model.md):
// RMSNorm computed in fp32, rotary position embedding in the rotate-half convention, SwiGLU MLP.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace gqe {

// The residual stream after a sublayer's output is added, and the next sublayer's normed input.
struct NormedSum {
  at::Tensor sum;
  at::Tensor normed;
  at::Tensor normed_fp32;  // when asked for: the same in fp32 (GQE's router reads it)
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // RMSNorm(x) in x's dtype.
  at::Tensor forward(const at::Tensor& x);
  // sum = x + delta (no delta: x itself) and RMSNorm(sum) in the dtype the next matmuls read: under
  // autocast, autocast's dtype (bf16), otherwise x's; with fp32_copy, in fp32 as well. One fused kernel each way for
  // an fp32 stream (the add, the norm and the cast forward; the norm's backward, the add of the
  // stream's and the copies' gradients and delta's cast backward), where ATen takes three to four
  // kernels and fp32 round trips each way.
  NormedSum add_and_norm(const at::Tensor& x, const at::Tensor& delta, bool fp32_copy = false);

  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// cos and sin of position * inv_freq, [length, head_dim] in fp32, for positions start..start+length-1,
// computed on `device`; the sin table has its first half negated, so that rotating x is
// x * cos + swap_halves(x) * signed_sin.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor signed_sin;
};
RotaryTables rotary_tables(int64_t start, int64_t length, int64_t head_dim, double theta, at::Device device);

// x: [..., T, head_dim] with the positions of `tables` along dim -2. Its own backward (the inverse
// rotation of the gradient), nothing saved but the tables; on a GPU one fused kernel each way.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

// down(silu(gate(x)) * up(x)); names as in Llama's mlp.{gate,up,down}_proj. On a GPU the product
// is one fused kernel each way.
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t hidden);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGLU);

// A bias-free linear layer, [out, in] as torch.nn.Linear stores it.
torch::nn::Linear make_linear(int64_t in, int64_t out);

}  // namespace gqe
