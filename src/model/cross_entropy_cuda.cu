#include "model/cross_entropy_cuda.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "model/vector_access.h"

namespace gqe {
namespace {

constexpr int kThreads = 512;

// A running (max, sum of exp(x - max)) pair; merging two is exact up to rounding.
struct MaxSum {
  float max, sum;
};

__device__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.f};
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

// Adds one logit with one exponential (merge takes two). A NaN poisons the sum, as it must (the
// step is then skipped); a -inf adds nothing.
__device__ void add(MaxSum& a, float x) {
  if (x > a.max) {
    a.sum = a.sum * expf(a.max - x) + 1.f;
    a.max = x;
  } else if (x != -INFINITY) {
    a.sum += expf(x - a.max);
  }
}

__device__ MaxSum warp_merge(MaxSum v) {
  for (int offset = 16; offset > 0; offset /= 2)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.max, offset), __shfl_xor_sync(0xffffffffu, v.sum, offset)});
  return v;
}

// One block per row; each thread reads V logits at a time (vector_access.h).
template <class T, int V>
__global__ void cross_entropy_rows(const T* __restrict__ logits, const int64_t* __restrict__ targets, int64_t vocab,
                                   float* __restrict__ lse, float* __restrict__ loss) {
  const int64_t row = blockIdx.x;
  const T* z = logits + row * vocab;
  MaxSum acc{-INFINITY, 0.f};
  for (int64_t j = threadIdx.x * V; j < vocab; j += static_cast<int64_t>(blockDim.x) * V) {
    const kernels::Pack<T, V> x = kernels::load<V>(z + j);
    for (int k = 0; k < V; ++k) add(acc, static_cast<float>(x.v[k]));
  }
  acc = warp_merge(acc);
  __shared__ MaxSum partial[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = acc;
  __syncthreads();
  if (warp != 0) return;
  acc = warp_merge(lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : MaxSum{-INFINITY, 0.f});
  if (lane == 0) {
    const float l = acc.max + logf(acc.sum);
    lse[row] = l;
    loss[row] = l - static_cast<float>(z[targets[row]]);
  }
}

template <class T, int V>
__global__ void cross_entropy_grad(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                   const float* __restrict__ lse, const float* __restrict__ grad_loss, float inv_rows,
                                   int64_t vocab, T* __restrict__ grad) {
  const int64_t row = blockIdx.x;
  const float l = lse[row], scale = grad_loss[0] * inv_rows;
  const int64_t target = targets[row];
  const T* z = logits + row * vocab;
  T* g = grad + row * vocab;
  for (int64_t j = threadIdx.x * V; j < vocab; j += static_cast<int64_t>(blockDim.x) * V) {
    const kernels::Pack<T, V> x = kernels::load<V>(z + j);
    kernels::Pack<T, V> out;
    for (int k = 0; k < V; ++k)
      out.v[k] = static_cast<T>((expf(static_cast<float>(x.v[k]) - l) - (j + k == target ? 1.f : 0.f)) * scale);
    kernels::store<V>(g + j, out);
  }
}

}  // namespace

CrossEntropyRows cross_entropy_rows_cuda(const at::Tensor& logits, const at::Tensor& targets) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  CrossEntropyRows out{at::empty({rows}, logits.options().dtype(at::kFloat)), at::empty({rows}, logits.options().dtype(at::kFloat))};
  if (rows == 0) return out;
  const at::Tensor t = targets.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "gqe_cross_entropy_rows", [&] {
    constexpr int V = kernels::kWide<scalar_t>;
    kernels::with_width<V>(vocab % V == 0 && kernels::aligned(V, {logits}), [&](auto width) {
      cross_entropy_rows<scalar_t, decltype(width)::value><<<rows, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          logits.const_data_ptr<scalar_t>(), t.const_data_ptr<int64_t>(), vocab, out.lse.data_ptr<float>(),
          out.loss.data_ptr<float>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor cross_entropy_backward_cuda(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse,
                                       const at::Tensor& grad_loss) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  at::Tensor grad = at::empty_like(logits);
  if (rows == 0) return grad;
  const at::Tensor t = targets.contiguous(), g = grad_loss.to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "gqe_cross_entropy_grad", [&] {
    constexpr int V = kernels::kWide<scalar_t>;
    kernels::with_width<V>(vocab % V == 0 && kernels::aligned(V, {logits, grad}), [&](auto width) {
      cross_entropy_grad<scalar_t, decltype(width)::value><<<rows, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          logits.const_data_ptr<scalar_t>(), t.const_data_ptr<int64_t>(), lse.const_data_ptr<float>(),
          g.const_data_ptr<float>(), 1.f / static_cast<float>(rows), vocab, grad.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace gqe
