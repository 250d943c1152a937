#include "model/fused_kernels.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <mutex>

#include "model/attention.h"
#include "model/autocast.h"
#include "model/cross_entropy.h"
#include "model/layers.h"

namespace gqe {
namespace {

std::array<std::atomic<bool>, std::size(kFusedKernels)> g_enabled{true, true, true, true, true, true};

std::atomic<bool>& flag(FusedKernel kernel) { return g_enabled[static_cast<size_t>(kernel)]; }

// Outputs, then the gradients of a random projection of them with respect to `inputs`.
std::vector<at::Tensor> with_grads(const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& inputs) {
  at::Tensor loss = at::zeros({}, outputs.front().options().dtype(at::kFloat));
  for (const at::Tensor& y : outputs) {
    const at::Tensor r = at::sin(at::arange(y.numel(), y.options().dtype(at::kFloat)).view(y.sizes()));  // fixed, not uniform
    loss = loss + (y.to(at::kFloat) * r).sum();
  }
  std::vector<at::Tensor> out;
  for (const at::Tensor& y : outputs) out.push_back(y.detach());
  for (const at::Tensor& g : torch::autograd::grad({loss}, inputs)) out.push_back(g);
  return out;
}

// An error's first line, without c10's backtrace.
std::string error_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string what = c10_error ? c10_error->what_without_backtrace() : e.what();
  return what.substr(0, what.find('\n'));
}

at::Tensor leaf(at::IntArrayRef shape, at::Device device, at::ScalarType dtype = at::kFloat) {
  return at::randn(shape, at::TensorOptions().device(device)).to(dtype).requires_grad_(true);
}

}  // namespace

const char* fused_kernel_name(FusedKernel kernel) {
  switch (kernel) {
    case FusedKernel::cross_entropy: return "cross-entropy";
    case FusedKernel::rope: return "RoPE";
    case FusedKernel::swiglu: return "SwiGLU";
    case FusedKernel::add_rmsnorm: return "residual-add + RMSNorm";
    case FusedKernel::gqe_slots: return "GQE output slots";
    case FusedKernel::gqe_queries: return "GQE query gather";
  }
  return "?";
}

bool fused_enabled(FusedKernel kernel) { return flag(kernel).load(std::memory_order_relaxed); }
void set_fused_enabled(FusedKernel kernel, bool enabled) { flag(kernel).store(enabled); }

std::vector<FusedKernel> check_fused_kernels(const std::vector<KernelCheck>& checks, double tolerance,
                                             const std::function<void(const std::string&)>& warn) {
  std::vector<FusedKernel> disabled;
  for (const KernelCheck& check : checks) {
    if (std::find(disabled.begin(), disabled.end(), check.kernel) != disabled.end()) continue;
    const double allowed = check.tolerance > 0 ? check.tolerance : tolerance;
    std::string failure;  // the kernel cannot run here: built for another GPU, a launch asking for too much, ...
    std::vector<at::Tensor> fused, aten;
    set_fused_enabled(check.kernel, true);
    try {
      fused = check.run();
    } catch (const std::exception& e) {
      failure = error_line(e);
    }
    set_fused_enabled(check.kernel, false);
    double worst = 0;
    try {
      aten = check.run();
      for (size_t i = 0; failure.empty() && i < fused.size() && i < aten.size(); ++i) {
        const double scale = aten[i].abs().max().item<double>() + 1e-30;
        const double diff = (fused[i].to(at::kDouble) - aten[i].to(at::kDouble)).abs().max().item<double>();
        worst = std::max(worst, std::isfinite(diff) ? diff / scale : INFINITY);
      }
    } catch (const std::exception& e) {
      // ATen's path fails too: a kernel error that left the GPU unusable (an illegal memory access
      // surfaces at a later synchronisation), which no fallback mends.
      throw std::runtime_error(fmt::format("the first-contact check of the fused {} kernel failed on this GPU: {} "
                                           "(train.fused_kernels: off runs without our kernels)",
                                           fused_kernel_name(check.kernel), error_line(e)));
    }
    const bool ok = failure.empty() && fused.size() == aten.size() && worst <= allowed;
    set_fused_enabled(check.kernel, ok);
    if (ok) continue;
    disabled.push_back(check.kernel);
    const std::string what =
        failure.empty() ? fmt::format("disagrees with ATen on this GPU (largest relative difference {:.3g}, tolerance {:.0e})", worst, allowed)
                        : fmt::format("fails on this GPU ({})", failure);
    warn(fmt::format("the fused {} kernel {}; ATen serves it for this run (train.fused_kernels: off turns all of them off)",
                     fused_kernel_name(check.kernel), what));
  }
  return disabled;
}

std::vector<KernelCheck> standard_kernel_checks(at::Device device) {
  std::vector<KernelCheck> checks;
  for (const bool bf16 : {false, true}) {
    // bf16: what autocast gives each kernel in training (logits and queries arrive in bf16).
    const at::ScalarType low = bf16 ? at::kBFloat16 : at::kFloat;
    const double tolerance = bf16 ? 3e-2 : 0;
    auto add = [&](FusedKernel kernel, std::function<std::vector<at::Tensor>()> run) {
      checks.push_back({kernel, [device, bf16, run] {
                          const AutocastScope autocast(device.type(), bf16);
                          return run();
                        },
                        tolerance});
    };
    add(FusedKernel::cross_entropy, [device, low] {
      at::manual_seed(1);
      const at::Tensor logits = leaf({64, 1000}, device, low);
      const at::Tensor targets = at::randint(1000, {64}, at::TensorOptions().dtype(at::kLong).device(device));
      return with_grads({token_cross_entropy(logits, targets)}, {logits});
    });
    add(FusedKernel::rope, [device, low] {
      at::manual_seed(2);
      const at::Tensor x = leaf({2, 4, 16, 32}, device, low);
      return with_grads({apply_rotary(x, rotary_tables(3, 16, 32, 10000, device))}, {x});
    });
    add(FusedKernel::swiglu, [device] {
      at::manual_seed(3);
      SwiGLU mlp(32, 96);
      mlp->to(device);
      const at::Tensor x = leaf({2, 8, 32}, device);
      return with_grads({mlp(x)}, {x, mlp->gate_proj->weight});
    });
    add(FusedKernel::add_rmsnorm, [device, low] {
      at::manual_seed(4);
      RMSNorm norm(48, 1e-5);
      norm->to(device);
      at::NoGradGuard no_grad;
      norm->weight.uniform_(0.5, 1.5);
      const at::Tensor x = leaf({2, 8, 48}, device), delta = leaf({2, 8, 48}, device, low);
      at::AutoGradMode grad(true);
      const NormedSum r = norm->add_and_norm(x, delta);
      return with_grads({r.sum, r.normed}, {x, delta, norm->weight});
    });
    // Both GQE kernels through the attention layer (routing, gather, attention, slots); each check
    // switches its own kernel alone.
    auto gqe_attention = [device] {
      at::manual_seed(5);
      ModelConfig c;
      c.d_model = 64, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16;
      c.attention.type = AttentionType::gqe;
      c.attention.variant = GqeVariant::gqe;
      c.attention.router_init = RouterInit::normal;
      Attention attention(c);
      attention->to(device);
      attention->eval();
      const at::Tensor x = leaf({2, 8, 64}, device);
      return with_grads({attention(x, rotary_tables(0, 8, 16, 10000, device)).y}, {x});
    };
    add(FusedKernel::gqe_slots, gqe_attention);
    add(FusedKernel::gqe_queries, gqe_attention);
  }
  return checks;
}

void prepare_fused_kernels(FusedKernels mode, at::Device device, const std::function<void(const std::string&)>& warn) {
  if (mode != FusedKernels::auto_) {
    for (FusedKernel k : kFusedKernels) set_fused_enabled(k, mode == FusedKernels::on);
    return;
  }
#ifdef GQE_CUDA_KERNELS
  static std::once_flag checked;  // once per process: the verdict holds for the run
  if (device.is_cuda())
    std::call_once(checked, [&] {
      const auto say = warn ? warn : [](const std::string& line) { fmt::print(stderr, "gqe: warning: {}\n", line); };
      check_fused_kernels(standard_kernel_checks(device), 1e-4, say);
    });
#else
  (void)device, (void)warn;
#endif
}

}  // namespace gqe
