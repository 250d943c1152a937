// The bodies of the fused RoPE and SwiGLU kernels (layers_cuda.cu): functors of one element index,
// and the drivers that check the tensors, allocate the outputs and hand the functors to a launcher.
// layers_cuda.cu launches them on the GPU; the tests run the same code on the CPU with a plain
// loop, so CI (which has no GPU) checks their arithmetic and indexing against the ATen path. Only
// the launcher itself (CudaLaunch in layers_cuda.cu) needs a GPU to be checked.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#ifdef __CUDACC__
#define GQE_HOST_DEVICE __host__ __device__
#else
#define GQE_HOST_DEVICE
#endif

namespace gqe::kernels {

// y = x cos + sign swap_halves(x) signed_sin for pair p = (row, i), which covers columns i and
// i + D/2 of one row (both outputs need both inputs). x and y are [N0, N1, T, D] with their own
// strides for the first three dims and a contiguous last dim; the tables are [T, D] fp32.
template <class T>
struct RotaryPairs {
  const T* x;
  T* y;
  const float* cos;
  const float* signed_sin;
  int64_t x_stride[3], y_stride[3];
  int64_t n1, len, half;
  float sign;

  GQE_HOST_DEVICE void operator()(int64_t p) const {
    const int64_t i = p % half, row = p / half;
    const int64_t t = row % len, r = row / len, a = r / n1, b = r % n1;
    const T* xr = x + a * x_stride[0] + b * x_stride[1] + t * x_stride[2];
    T* yr = y + a * y_stride[0] + b * y_stride[1] + t * y_stride[2];
    const float* c = cos + t * 2 * half;
    const float* s = signed_sin + t * 2 * half;
    const float lo = static_cast<float>(xr[i]), hi = static_cast<float>(xr[i + half]);
    yr[i] = static_cast<T>(lo * c[i] + sign * hi * s[i]);
    yr[i + half] = static_cast<T>(hi * c[i + half] + sign * lo * s[i + half]);
  }
};

GQE_HOST_DEVICE inline float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

// y = silu(gate) * up, computed in fp32.
template <class T>
struct SwiGLUForward {
  const T* gate;
  const T* up;
  T* y;
  GQE_HOST_DEVICE void operator()(int64_t i) const {
    const float g = static_cast<float>(gate[i]);
    y[i] = static_cast<T>(g * sigmoid(g) * static_cast<float>(up[i]));
  }
};

// d gate = dy up silu'(g) with silu'(g) = s (1 + g (1 - s)), s = sigmoid(g); d up = dy silu(g).
template <class T>
struct SwiGLUBackward {
  const T* dy;
  const T* gate;
  const T* up;
  T* dgate;
  T* dup;
  GQE_HOST_DEVICE void operator()(int64_t i) const {
    const float d = static_cast<float>(dy[i]), g = static_cast<float>(gate[i]), u = static_cast<float>(up[i]);
    const float s = sigmoid(g);
    dgate[i] = static_cast<T>(d * u * s * (1.f + g * (1.f - s)));
    dup[i] = static_cast<T>(d * g * s);
  }
};

// launch(functor, n) runs functor(i) for every i in [0, n).
template <class Launch>
at::Tensor rotary(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& signed_sin, float sign, Launch&& launch) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.size(3) % 2 == 0 && cos.scalar_type() == at::kFloat &&
                  signed_sin.scalar_type() == at::kFloat && cos.is_contiguous() && signed_sin.is_contiguous() &&
                  cos.dim() == 2 && cos.sizes() == signed_sin.sizes() && cos.size(0) == x_in.size(2) &&
                  cos.size(1) == x_in.size(3),
              "rotary: x [N0, N1, T, D] and fp32 tables [T, D] expected");
  const at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  at::Tensor y = at::empty_like(x);  // x's layout where it is dense, else contiguous
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gqe_rotary", [&] {
    launch(RotaryPairs<scalar_t>{x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), cos.const_data_ptr<float>(),
                                 signed_sin.const_data_ptr<float>(), {x.stride(0), x.stride(1), x.stride(2)},
                                 {y.stride(0), y.stride(1), y.stride(2)}, x.size(1), x.size(2), x.size(3) / 2, sign},
           pairs);
  });
  return y;
}

template <class Launch>
at::Tensor swiglu(const at::Tensor& gate_in, const at::Tensor& up_in, Launch&& launch) {
  TORCH_CHECK(gate_in.sizes() == up_in.sizes() && gate_in.scalar_type() == up_in.scalar_type(),
              "swiglu: gate and up of different shapes or dtypes");
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  at::Tensor y = at::empty_like(gate);
  if (gate.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "gqe_swiglu", [&] {
    launch(SwiGLUForward<scalar_t>{gate.const_data_ptr<scalar_t>(), up.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>()},
           gate.numel());
  });
  return y;
}

template <class Launch>
std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& grad_in, const at::Tensor& gate_in,
                                                  const at::Tensor& up_in, Launch&& launch) {
  TORCH_CHECK(grad_in.sizes() == gate_in.sizes() && gate_in.sizes() == up_in.sizes() &&
                  gate_in.scalar_type() == up_in.scalar_type(),
              "swiglu_backward: gradient, gate and up of different shapes or dtypes");
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous(),
                   grad = grad_in.to(gate.scalar_type()).contiguous();
  at::Tensor dgate = at::empty_like(gate), dup = at::empty_like(up);
  if (gate.numel() == 0) return {dgate, dup};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "gqe_swiglu_backward", [&] {
    launch(SwiGLUBackward<scalar_t>{grad.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
                                    up.const_data_ptr<scalar_t>(), dgate.data_ptr<scalar_t>(), dup.data_ptr<scalar_t>()},
           gate.numel());
  });
  return {dgate, dup};
}

}  // namespace gqe::kernels
