// The fused CUDA kernels behind token_cross_entropy on a GPU (built when the torch in use has
// CUDA): the forward reads each row of logits once, the backward reads it once more and writes the
// gradient, in the logits' dtype. ATen's chunked path (cross_entropy.cpp) makes ~8 passes.
#pragma once

#include <ATen/core/Tensor.h>

namespace gqe {

struct CrossEntropyRows {
  at::Tensor lse;   // [N] fp32 log-sum-exp of each row
  at::Tensor loss;  // [N] fp32 lse - logits[target]
};

// logits [N, V] contiguous (fp32, bf16 or fp16), targets [N] int64 in [0, V).
CrossEntropyRows cross_entropy_rows_cuda(const at::Tensor& logits, const at::Tensor& targets);

// (softmax(logits) - onehot(targets)) * grad_loss / N, in the logits' dtype; grad_loss is the
// gradient of the mean loss (a one-element fp32 tensor on the device, read there: no sync).
at::Tensor cross_entropy_backward_cuda(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse,
                                       const at::Tensor& grad_loss);

}  // namespace gqe
