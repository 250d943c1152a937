#include "model/layers.h"

#include <torch/autograd.h>
#include <torch/nn/functional/activation.h>

namespace gqe {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // ATen's rms_norm is one fused kernel forward and one backward on CUDA (six of ours otherwise);
  // it accumulates in fp32 whatever the input dtype.
  return at::rms_norm(x, {x.size(-1)}, weight.to(x.scalar_type()), eps_);
}

RotaryTables rotary_tables(int64_t start, int64_t length, int64_t head_dim, double theta, at::Device device) {
  // Angles in fp64 so that long positions keep their precision; the tables themselves are fp32.
  // On the device: at 128k positions the CPU took ~0.1 s and a pageable copy per forward.
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  const at::Tensor inv_freq = at::pow(theta, -at::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  const at::Tensor angles = at::outer(at::arange(start, start + length, f64), inv_freq);
  const at::Tensor cos = angles.cos().to(at::kFloat), sin = angles.sin().to(at::kFloat);
  return {at::cat({cos, cos}, -1), at::cat({-sin, sin}, -1)};
}

namespace {

at::Tensor swap_halves(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// y = x cos + swap(x) s with s = signed_sin; its adjoint is g cos - swap(g) s (swap(v) s = R v for
// the rotation-by-90-degrees R, and R^T = -R).
class Rotary : public torch::autograd::Function<Rotary> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& signed_sin) {
    ctx->save_for_backward({cos, signed_sin});
    return at::addcmul(x * cos, swap_halves(x), signed_sin);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    const auto saved = ctx->get_saved_variables();
    return {at::addcmul(g[0] * saved[0], swap_halves(g[0]), saved[1], /*value=*/-1), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  return Rotary::apply(x, tables.cos.to(x.scalar_type()), tables.signed_sin.to(x.scalar_type()));
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
