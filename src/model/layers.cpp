#include "model/layers.h"

#include <torch/autograd.h>
#include <torch/nn/functional/activation.h>

#include <ATen/autocast_mode.h>

#include "model/autocast.h"
#include "model/layers_kernels.h"

#include "model/fused_kernels.h"
#ifdef GQE_CUDA_KERNELS
#include "model/layers_cuda.h"
#endif

namespace gqe {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // ATen's rms_norm is one fused kernel forward and one backward on CUDA (six of ours otherwise);
  // it accumulates in fp32 whatever the input dtype.
  return at::rms_norm(x, {x.size(-1)}, weight.to(x.scalar_type()), eps_);
}

namespace {

kernels::ResidualNorm residual_rms_norm(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight, double eps,
                                        at::ScalarType out, bool fp32_copy) {
#ifdef GQE_CUDA_KERNELS
  if (x.is_cuda()) return residual_rms_norm_cuda(x, delta, weight, eps, out, fp32_copy);
#endif
  return kernels::residual_rms_norm(x, delta, weight, eps, out, fp32_copy, kernels::HostRows{});
}

kernels::ResidualNormGrad residual_rms_norm_backward(const at::Tensor& dy, const at::Tensor& dy32, const at::Tensor& dsum,
                                                     const at::Tensor& h, const at::Tensor& weight, const at::Tensor& rstd,
                                                     bool grad_delta) {
#ifdef GQE_CUDA_KERNELS
  if (h.is_cuda()) return residual_rms_norm_backward_cuda(dy, dy32, dsum, h, weight, rstd, grad_delta);
#endif
  return kernels::residual_rms_norm_backward(dy, dy32, dsum, h, weight, rstd, grad_delta, kernels::HostRows{});
}

// (sum, normed[, normed in fp32]) = (x + delta, RMSNorm(x + delta)...); saves sum, the weight
// and the rows' rstd.
class AddRMSNorm : public torch::autograd::Function<AddRMSNorm> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& delta, const at::Tensor& weight, double eps,
                                                at::ScalarType out, bool fp32_copy) {
    const kernels::ResidualNorm r = residual_rms_norm(x, delta, weight, eps, out, fp32_copy);
    ctx->save_for_backward({r.sum, weight, r.rstd});
    if (fp32_copy) return {r.sum, r.normed, r.normed_fp32};
    return {r.sum, r.normed};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const auto saved = ctx->get_saved_variables();
    const kernels::ResidualNormGrad d = residual_rms_norm_backward(g[1], g.size() > 2 ? g[2] : at::Tensor(), g[0], saved[0],
                                                                   saved[1], saved[2], ctx->needs_input_grad(1));
    return {d.x, d.delta, d.weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// (normed[, normed in fp32]) = RMSNorm(x), by the same kernels without the add.
class CastRMSNorm : public torch::autograd::Function<CastRMSNorm> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& weight, double eps, at::ScalarType out, bool fp32_copy) {
    const kernels::ResidualNorm r = residual_rms_norm(x, at::Tensor(), weight, eps, out, fp32_copy);
    ctx->save_for_backward({x, weight, r.rstd});
    if (fp32_copy) return {r.normed, r.normed_fp32};
    return {r.normed};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const auto saved = ctx->get_saved_variables();
    const kernels::ResidualNormGrad d = residual_rms_norm_backward(g[0], g.size() > 1 ? g[1] : at::Tensor(), at::Tensor(),
                                                                   saved[0], saved[1], saved[2], /*grad_delta=*/false);
    return {d.x, d.weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

NormedSum RMSNormImpl::add_and_norm(const at::Tensor& x, const at::Tensor& delta, bool fp32_copy) {
  const c10::DeviceType device = x.device().type();
  const at::ScalarType out = x.scalar_type() == at::kFloat && at::autocast::is_autocast_enabled(device)
                                 ? at::autocast::get_autocast_dtype(device)
                                 : x.scalar_type();
  const bool copy = fp32_copy && out != at::kFloat;  // else normed is the fp32 copy
  NormedSum r;
  // Our kernels: on the CPU always (ATen has no add + norm), on a GPU unless turned off.
  if (x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && (!delta.defined() || delta.scalar_type() == out) &&
      (!x.is_cuda() || fused_enabled(FusedKernel::add_rmsnorm))) {
    if (delta.defined()) {
      const auto y = AddRMSNorm::apply(x, delta, weight, eps_, out, copy);
      r = {y[0], y[1], copy ? y[2] : at::Tensor()};
    } else {
      const auto y = CastRMSNorm::apply(x, weight, eps_, out, copy);
      r = {x, y[0], copy ? y[1] : at::Tensor()};
    }
  } else {
    r.sum = delta.defined() ? x + delta : x;
    const at::Tensor normed = forward(r.sum);
    r.normed = autocast_input(normed);
    if (copy) r.normed_fp32 = normed.to(at::kFloat);
  }
  if (fp32_copy && !copy) r.normed_fp32 = r.normed;
  return r;
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

// x cos + sign swap(x) s with s = signed_sin: sign +1 rotates; -1 is the adjoint, g cos - swap(g) s
// (swap(v) s = R v for the rotation-by-90-degrees R, and R^T = -R).
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin, double sign) {
#ifdef GQE_CUDA_KERNELS
  if (x.is_cuda() && x.dim() == 4 && fused_enabled(FusedKernel::rope)) return rotary_cuda(x, cos, signed_sin, static_cast<float>(sign));
#endif
  return at::addcmul(x * cos.to(x.scalar_type()), swap_halves(x), signed_sin.to(x.scalar_type()), sign);
}

class Rotary : public torch::autograd::Function<Rotary> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& signed_sin) {
    ctx->save_for_backward({cos, signed_sin});
    return rotate(x, cos, signed_sin, 1);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    const auto saved = ctx->get_saved_variables();
    return {rotate(g[0], saved[0], saved[1], -1), at::Tensor(), at::Tensor()};
  }
};

#ifdef GQE_CUDA_KERNELS
// silu(gate) * up in one kernel each way; saves gate and up only (ATen also keeps silu(gate)).
class SwiGLUProduct : public torch::autograd::Function<SwiGLUProduct> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return swiglu_cuda(gate, up);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    const auto saved = ctx->get_saved_variables();
    auto [dgate, dup] = swiglu_backward_cuda(g[0], saved[0], saved[1]);
    return {dgate, dup};
  }
};
#endif

}  // namespace

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  return Rotary::apply(x, tables.cos, tables.signed_sin);
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden) {
  gate_proj = register_module("gate_proj", make_linear(dim, hidden));
  up_proj = register_module("up_proj", make_linear(dim, hidden));
  down_proj = register_module("down_proj", make_linear(hidden, dim));
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x) {
  const at::Tensor xc = autocast_input(x);  // one cast for both projections
  const at::Tensor gate = gate_proj(xc), up = up_proj(xc);
#ifdef GQE_CUDA_KERNELS
  if (gate.is_cuda() && fused_enabled(FusedKernel::swiglu)) return down_proj(SwiGLUProduct::apply(gate, up));
#endif
  return down_proj(at::silu(gate) * up);
}

torch::nn::Linear make_linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

}  // namespace gqe
