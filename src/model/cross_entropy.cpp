#include "model/cross_entropy.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "model/fused_kernels.h"
#ifdef GQE_CUDA_KERNELS
#include "model/cross_entropy_cuda.h"
#endif

namespace gqe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Runs f(first_row, rows) over row chunks of at most `chunk_elements` values of a [N, V] tensor.
template <class F> void for_row_chunks(int64_t n, int64_t v, int64_t chunk_elements, F&& f) {
  const int64_t rows = std::max<int64_t>(1, chunk_elements / std::max<int64_t>(1, v));
  for (int64_t first = 0; first < n; first += rows) f(first, std::min(rows, n - first));
}

class CrossEntropy : public torch::autograd::Function<CrossEntropy> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            int64_t chunk_elements) {
    ctx->saved_data["chunk_elements"] = chunk_elements;
#ifdef GQE_CUDA_KERNELS
    if (logits.is_cuda() && fused_enabled(FusedKernel::cross_entropy)) {
      const CrossEntropyRows rows = cross_entropy_rows_cuda(logits, targets);
      ctx->save_for_backward({logits, targets, rows.lse});
      return rows.loss.mean();
    }
#endif
    const int64_t n = logits.size(0), v = logits.size(1);
    at::Tensor lse = at::empty({n}, logits.options().dtype(at::kFloat));
    for_row_chunks(n, v, chunk_elements, [&](int64_t first, int64_t rows) {
      at::Tensor out = lse.narrow(0, first, rows);
      at::logsumexp_out(out, logits.narrow(0, first, rows).to(at::kFloat), {1});
    });
    const at::Tensor picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1).to(at::kFloat);
    ctx->save_for_backward({logits, targets});
    return (lse - picked).mean();
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &targets = saved[1];
#ifdef GQE_CUDA_KERNELS
    if (saved.size() == 3) return {cross_entropy_backward_cuda(logits, targets, saved[2], grad_outputs[0]), at::Tensor(), at::Tensor()};
#endif
    const int64_t n = logits.size(0), v = logits.size(1);
    // d(mean)/dz = (softmax(z) - onehot(t)) / n, scaled by the incoming gradient (a tensor: no sync).
    const at::Tensor scale = grad_outputs[0].to(at::kFloat) / static_cast<double>(n);
    at::Tensor grad = at::empty_like(logits);
    for_row_chunks(n, v, ctx->saved_data["chunk_elements"].toInt(), [&](int64_t first, int64_t rows) {
      // fp32 probabilities, a scatter, one pass back to the logits' dtype.
      at::Tensor p = at::softmax(logits.narrow(0, first, rows), 1, at::kFloat);
      const at::Tensor t = targets.narrow(0, first, rows).unsqueeze(1);
      p.scatter_add_(1, t, at::full({rows, 1}, -1.0, p.options()));
      at::Tensor out = grad.narrow(0, first, rows);
      at::mul_out(out, p, scale);
    });
    return {grad, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor token_cross_entropy(const at::Tensor& logits, const at::Tensor& targets, int64_t chunk_elements) {
  return CrossEntropy::apply(logits.reshape({-1, logits.size(-1)}).contiguous(), targets.reshape(-1), chunk_elements);
}

}  // namespace gqe
