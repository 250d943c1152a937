// Fused CUDA kernels behind apply_rotary, GQE's query gather, SwiGLU, RMSNorm's add_and_norm and
// GQE's output slots on a GPU (built when the torch in use has CUDA). Each reads its inputs once and writes its outputs once, computing in fp32 whatever the
// storage dtype; ATen spends three to five elementwise kernels (and casts of the tables) on each.
// Their bodies are in layers_kernels.h, where the tests run them on the CPU too.
#pragma once

#include <utility>

#include <ATen/core/Tensor.h>

#include "model/layers_kernels.h"

namespace gqe {

// x [N0, N1, T, D] in any strides with the last dim contiguous (a transposed [B, T, H, D] view
// included); cos and signed_sin [T, D] fp32 (RotaryTables). Returns x * cos + sign *
// swap_halves(x) * signed_sin in x's dtype and layout: sign +1 rotates, -1 is the adjoint.
at::Tensor rotary_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin, float sign);

// silu(gate) * up, and its backward (d gate, d up) given the output's gradient; all of one dtype.
at::Tensor swiglu_cuda(const at::Tensor& gate, const at::Tensor& up);
std::pair<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& grad, const at::Tensor& gate,
                                                       const at::Tensor& up);

// x + delta (fp32 + T; delta may be undefined) and RMSNorm of it in `out` (T, and fp32 too if
// asked) in one pass, and the backward in one pass plus a sum of the blocks' weight gradients
// (kernels::residual_rms_norm).
kernels::ResidualNorm residual_rms_norm_cuda(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight,
                                             double eps, at::ScalarType out, bool fp32_copy);
kernels::ResidualNormGrad residual_rms_norm_backward_cuda(const at::Tensor& dy, const at::Tensor& dy32, const at::Tensor& dsum,
                                                          const at::Tensor& h, const at::Tensor& weight, const at::Tensor& rstd,
                                                          bool grad_delta);

// GQE's selected queries, gathered from the query projection's rows and rotated in one pass, and
// the gradient of the rows (kernels::gqe_queries).
kernels::GqeQueries gqe_queries_cuda(const at::Tensor& rows, const at::Tensor& index, const at::Tensor& cos,
                                     const at::Tensor& signed_sin, int64_t B, int64_t T, int64_t routed);
at::Tensor gqe_queries_backward_cuda(const at::Tensor& g_routed, const at::Tensor& g_shared, const at::Tensor& index,
                                     const at::Tensor& cos, const at::Tensor& signed_sin, int64_t rows);

// The GQE variant's o_proj input from the routed and shared heads' outputs, and its backward
// (kernels::gqe_slots).
at::Tensor gqe_slots_cuda(const at::Tensor& o, const at::Tensor& shared, const at::Tensor& w);
kernels::GqeSlotsGrad gqe_slots_backward_cuda(const at::Tensor& dy, const at::Tensor& o, const at::Tensor& w);

}  // namespace gqe
