// Our fused CUDA kernels (the loss, RoPE, SwiGLU, residual-add + RMSNorm, GQE's output slots and
// query gather) and the switch that falls back to ATen for each (docs/performance.md). With train.fused_kernels: auto
// a process checks every kernel against its ATen path on its first GPU use (small random inputs,
// forward and backward, well under a second): one that disagrees prints one warning naming it and
// the error, and ATen serves it for the rest of the run. `on` skips the check; `off` uses ATen.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "config/config.h"

namespace gqe {

enum class FusedKernel { cross_entropy, rope, swiglu, add_rmsnorm, gqe_slots, gqe_queries };
constexpr FusedKernel kFusedKernels[] = {FusedKernel::cross_entropy, FusedKernel::rope,      FusedKernel::swiglu,
                                         FusedKernel::add_rmsnorm,   FusedKernel::gqe_slots, FusedKernel::gqe_queries};
const char* fused_kernel_name(FusedKernel kernel);

// Whether the dispatch sites use the kernel on a GPU (all true until configured).
bool fused_enabled(FusedKernel kernel);
void set_fused_enabled(FusedKernel kernel, bool enabled);

// One kernel's check: `run` computes outputs and gradients through the model's own op, so that
// with the kernel enabled it takes the kernel and with it disabled ATen.
struct KernelCheck {
  FusedKernel kernel;
  std::function<std::vector<at::Tensor>()> run;
  double tolerance = 0;  // the largest relative difference allowed; 0: check_fused_kernels' own
};

// Runs each check with its kernel on, then off; where the largest difference, relative to the
// largest ATen value, exceeds the check's tolerance (or else `tolerance`), disables the kernel and
// calls `warn` once with a line naming it; a kernel's later checks are then skipped. Returns the
// kernels disabled.
std::vector<FusedKernel> check_fused_kernels(const std::vector<KernelCheck>& checks, double tolerance,
                                             const std::function<void(const std::string&)>& warn);

// The checks of every kernel on `device`, on small random inputs: in fp32, then under bf16
// autocast as training runs them (bf16 takes the kernels' 8-wide loads; its tolerance allows bf16's
// rounding, not a misplaced element).
std::vector<KernelCheck> standard_kernel_checks(at::Device device);

// What train.fused_kernels asks of this process on `device`: off disables every kernel; on
// enables every one; auto, on a GPU with our kernels built, runs the standard checks once per
// process (later calls reuse the verdict). Warnings go to `warn` (default: stderr).
void prepare_fused_kernels(FusedKernels mode, at::Device device, const std::function<void(const std::string&)>& warn = {});

}  // namespace gqe
