#include "model/layers_cuda.h"

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

// One thread per index, on the current stream (the kernel bodies are in layers_kernels.h).
struct CudaLaunch {
  template <class F>
  void operator()(const F& f, int64_t n) const {
    for_each_index<<<(n + kThreads - 1) / kThreads, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(f, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

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
