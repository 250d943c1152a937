#include "model/layers.h"

#include <torch/nn/functional/activation.h>

namespace gqe {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (normed * weight.to(at::kFloat)).to(x.scalar_type());
}

RotaryTables rotary_tables(int64_t start, int64_t length, int64_t head_dim, double theta, at::Device device) {
  // Angles in fp64 so that long positions keep their precision; the tables themselves are fp32.
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor inv_freq = at::pow(theta, -at::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  const at::Tensor positions = at::arange(start, start + length, f64);
  const at::Tensor angles = at::outer(positions, inv_freq);
  const at::Tensor emb = at::cat({angles, angles}, -1);
  return {emb.cos().to(device, at::kFloat), emb.sin().to(device, at::kFloat)};
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * tables.cos.to(x.scalar_type()) + rotated * tables.sin.to(x.scalar_type());
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden) {
  gate_proj = register_module("gate_proj", make_linear(dim, hidden));
  up_proj = register_module("up_proj", make_linear(dim, hidden));
  down_proj = register_module("down_proj", make_linear(hidden, dim));
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x) {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));
}

torch::nn::Linear make_linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

}  // namespace gqe
