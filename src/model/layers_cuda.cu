#include "model/layers_cuda.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace gqe {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

struct Strides3 {
  int64_t n0, n1, t;
};

// One thread per pair (i, i + D/2) of a row: both outputs need both inputs.
template <class T>
__global__ void rotary(const T* __restrict__ x, Strides3 xs, T* __restrict__ y, Strides3 ys, const float* __restrict__ cos,
                       const float* __restrict__ ssin, int64_t n1, int64_t len, int64_t half, float sign, int64_t pairs) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= pairs) return;
  const int64_t i = p % half, row = p / half;
  const int64_t t = row % len, r = row / len;
  const int64_t a = r / n1, b = r % n1;
  const T* xr = x + a * xs.n0 + b * xs.n1 + t * xs.t;
  T* yr = y + a * ys.n0 + b * ys.n1 + t * ys.t;
  const float* c = cos + t * 2 * half;
  const float* s = ssin + t * 2 * half;
  const float lo = static_cast<float>(xr[i]), hi = static_cast<float>(xr[i + half]);
  yr[i] = static_cast<T>(lo * c[i] + sign * hi * s[i]);
  yr[i + half] = static_cast<T>(hi * c[i + half] + sign * lo * s[i + half]);
}

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

template <class T>
__global__ void swiglu(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = static_cast<float>(gate[i]);
  y[i] = static_cast<T>(g * sigmoid(g) * static_cast<float>(up[i]));
}

// d gate = dy * up * silu'(g), silu'(g) = s (1 + g (1 - s)); d up = dy * silu(g).
template <class T>
__global__ void swiglu_grad(const T* __restrict__ dy, const T* __restrict__ gate, const T* __restrict__ up,
                            T* __restrict__ dgate, T* __restrict__ dup, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float d = static_cast<float>(dy[i]), g = static_cast<float>(gate[i]), u = static_cast<float>(up[i]);
  const float s = sigmoid(g);
  dgate[i] = static_cast<T>(d * u * s * (1.f + g * (1.f - s)));
  dup[i] = static_cast<T>(d * g * s);
}

}  // namespace

at::Tensor rotary_cuda(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& signed_sin, float sign) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  TORCH_CHECK(x_in.dim() == 4 && cos.scalar_type() == at::kFloat && signed_sin.scalar_type() == at::kFloat &&
                  cos.is_contiguous() && signed_sin.is_contiguous() && cos.size(0) == x_in.size(2) &&
                  cos.size(1) == x_in.size(3) && x_in.size(3) % 2 == 0,
              "rotary_cuda: x [N0, N1, T, D] and fp32 tables [T, D] expected");
  const at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  at::Tensor y = at::empty_like(x);  // x's layout where it is dense, else contiguous
  const int64_t half = x.size(3) / 2, pairs = x.numel() / 2;
  if (pairs == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gqe_rotary", [&] {
    rotary<scalar_t><<<blocks_for(pairs), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), {x.stride(0), x.stride(1), x.stride(2)}, y.data_ptr<scalar_t>(),
        {y.stride(0), y.stride(1), y.stride(2)}, cos.const_data_ptr<float>(), signed_sin.const_data_ptr<float>(),
        x.size(1), x.size(2), half, sign, pairs);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor swiglu_cuda(const at::Tensor& gate_in, const at::Tensor& up_in) {
  const c10::cuda::CUDAGuard guard(gate_in.device());
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  TORCH_CHECK(gate.sizes() == up.sizes() && gate.scalar_type() == up.scalar_type(), "swiglu_cuda: gate and up differ");
  at::Tensor y = at::empty_like(gate);
  const int64_t n = gate.numel();
  if (n == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "gqe_swiglu", [&] {
    swiglu<scalar_t><<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gate.const_data_ptr<scalar_t>(), up.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::pair<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& grad_in, const at::Tensor& gate_in,
                                                       const at::Tensor& up_in) {
  const c10::cuda::CUDAGuard guard(gate_in.device());
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous(),
                   grad = grad_in.to(gate.scalar_type()).contiguous();
  TORCH_CHECK(grad.sizes() == gate.sizes(), "swiglu_backward_cuda: gradient of another shape");
  at::Tensor dgate = at::empty_like(gate), dup = at::empty_like(up);
  const int64_t n = gate.numel();
  if (n == 0) return {dgate, dup};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "gqe_swiglu_grad", [&] {
    swiglu_grad<scalar_t><<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(), up.const_data_ptr<scalar_t>(),
        dgate.data_ptr<scalar_t>(), dup.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dgate, dup};
}

}  // namespace gqe
