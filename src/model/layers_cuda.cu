#include "model/layers_cuda.h"

#include <ATen/ops/empty.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "model/layers_kernels.h"

namespace gqe {
namespace {

constexpr int kThreads = 256;

template <class F>
__global__ void for_each_index(F f, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) f(i);
}

// One thread per index, on the current stream (the kernel bodies are in layers_kernels.h), with
// the bodies' vector loads wherever the tensors allow them.
struct CudaLaunch {
  bool wide = true;

  template <class F>
  void operator()(const F& f, int64_t n) const {
    for_each_index<<<(n + kThreads - 1) / kThreads, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(f, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// A row kernel (layers_kernels.h): one block per row at a time, its threads the lanes; blockDim.x
// is a multiple of 32. With acc, the block's accumulator is in shared memory and is written out
// as row blockIdx.x of acc at the end.
template <class F>
__global__ void for_each_row(F f, int64_t rows, int64_t d, float* acc) {
  extern __shared__ float block_acc[];
  __shared__ float warp_sums[32];
  __shared__ float total;
  const int64_t lane = threadIdx.x, lanes = blockDim.x;
  float* a = acc ? block_acc : nullptr;
  if (a)
    for (int64_t j = lane; j < d; j += lanes) a[j] = 0.f;  // each lane's own columns: no barrier needed
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float v = warp_sum(f.partial(row, lane, lanes));
    if (lane % 32 == 0) warp_sums[lane / 32] = v;
    __syncthreads();
    if (lane < 32) {
      const float t = warp_sum(lane < lanes / 32 ? warp_sums[lane] : 0.f);
      if (lane == 0) total = t;
    }
    __syncthreads();
    // The next row's writes to warp_sums and total come after its first barrier, which every
    // thread reaches only once it has read this row's total.
    f.finish(row, lane, lanes, total, a);
  }
  if (a)
    for (int64_t j = lane; j < d; j += lanes) acc[blockIdx.x * d + j] = a[j];
}

struct CudaRows {
  bool wide = true;

  template <class F>
  at::Tensor operator()(const F& f, int64_t rows, int64_t d, bool accumulate) const {
    const int threads = d >= 1024 ? 256 : 128;
    // Accumulating kernels loop over rows in a few blocks per multiprocessor, so that few
    // accumulators are left to sum; the others take one block per row.
    const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const int64_t blocks = accumulate ? std::min<int64_t>(rows, 4 * sms) : std::min<int64_t>(rows, INT32_MAX);
    const size_t shared = accumulate ? static_cast<size_t>(d) * sizeof(float) : 0;
    TORCH_CHECK(shared <= 48 * 1024, "residual_rms_norm: d = ", d, " is too wide for the kernel's shared memory");
    at::Tensor acc = accumulate ? at::empty({blocks, d}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA))
                                : at::Tensor();
    for_each_row<<<blocks, threads, shared, at::cuda::getCurrentCUDAStream()>>>(
        f, rows, d, kernels::mutable_data_or_null<float>(acc));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return acc;
  }
};

}  // namespace

kernels::ResidualNorm residual_rms_norm_cuda(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight,
                                             double eps, at::ScalarType out, bool fp32_copy) {
  const c10::cuda::CUDAGuard guard(x.device());
  return kernels::residual_rms_norm(x, delta, weight, eps, out, fp32_copy, CudaRows{});
}

kernels::ResidualNormGrad residual_rms_norm_backward_cuda(const at::Tensor& dy, const at::Tensor& dy32, const at::Tensor& dsum,
                                                          const at::Tensor& h, const at::Tensor& weight, const at::Tensor& rstd,
                                                          bool grad_delta) {
  const c10::cuda::CUDAGuard guard(h.device());
  return kernels::residual_rms_norm_backward(dy, dy32, dsum, h, weight, rstd, grad_delta, CudaRows{});
}

kernels::GqeQueries gqe_queries_cuda(const at::Tensor& rows, const at::Tensor& index, const at::Tensor& cos,
                                     const at::Tensor& signed_sin, int64_t B, int64_t T, int64_t routed) {
  const c10::cuda::CUDAGuard guard(rows.device());
  return kernels::gqe_queries(rows, index, cos, signed_sin, B, T, routed, CudaLaunch{});
}

at::Tensor gqe_queries_backward_cuda(const at::Tensor& g_routed, const at::Tensor& g_shared, const at::Tensor& index,
                                     const at::Tensor& cos, const at::Tensor& signed_sin, int64_t rows) {
  const c10::cuda::CUDAGuard guard(g_routed.device());
  return kernels::gqe_queries_backward(g_routed, g_shared, index, cos, signed_sin, rows, CudaLaunch{});
}

at::Tensor gqe_slots_cuda(const at::Tensor& o, const at::Tensor& shared, const at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(o.device());
  return kernels::gqe_slots(o, shared, w, CudaLaunch{});
}

kernels::GqeSlotsGrad gqe_slots_backward_cuda(const at::Tensor& dy, const at::Tensor& o, const at::Tensor& w) {
  const c10::cuda::CUDAGuard guard(o.device());
  return kernels::gqe_slots_backward(dy, o, w, CudaLaunch{});
}

at::Tensor rotary_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin, float sign) {
  const c10::cuda::CUDAGuard guard(x.device());
  return kernels::rotary(x, cos, signed_sin, sign, CudaLaunch{});
}

at::Tensor swiglu_cuda(const at::Tensor& gate, const at::Tensor& up) {
  const c10::cuda::CUDAGuard guard(gate.device());
  return kernels::swiglu(gate, up, CudaLaunch{});
}

std::pair<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& up) {
  const c10::cuda::CUDAGuard guard(gate.device());
  return kernels::swiglu_backward(grad, gate, up, CudaLaunch{});
}

}  // namespace gqe
