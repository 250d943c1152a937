// Vector access for our CUDA kernels' bodies (layers_kernels.h, cross_entropy_cuda.cu): V
// consecutive elements read or written as one access. A GPU moves at most 16 bytes per load
// instruction, and one bf16 per thread left the elementwise kernels at a quarter of the H200's
// bandwidth, so a body takes V elements per index where its driver has found every pointer aligned
// to V elements and every length and stride a multiple of V; else V = 1, with the same arithmetic
// per element.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include <ATen/core/Tensor.h>

#ifdef __CUDACC__
#define GQE_HOST_DEVICE __host__ __device__
#else
#define GQE_HOST_DEVICE
#endif

namespace gqe::kernels {

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <int V, class T>
GQE_HOST_DEVICE Pack<T, V> load(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <int V, class T>
GQE_HOST_DEVICE void store(T* p, const Pack<T, V>& x) {
  *reinterpret_cast<Pack<T, V>*>(p) = x;
}
// 16 bytes of T.
template <class T>
constexpr int kWide = static_cast<int>(16 / sizeof(T));

// Whether accesses of V elements fit every defined tensor: its data starts on a multiple of V of its
// own elements, and every stride but the last is a multiple of V (so that each of its rows does too).
inline bool aligned(int64_t V, std::initializer_list<at::Tensor> tensors) {
  return std::all_of(tensors.begin(), tensors.end(), [&](const at::Tensor& t) {
    return !t.defined() || (reinterpret_cast<uintptr_t>(t.const_data_ptr()) % (V * t.element_size()) == 0 &&
                            std::all_of(t.strides().begin(), t.strides().end() - 1, [&](int64_t st) { return st % V == 0; }));
  });
}

// Runs body(std::integral_constant<int, V>) where wide holds, else body with V = 1.
template <int V, class Body>
void with_width(bool wide, Body&& body) {
  if (wide)
    body(std::integral_constant<int, V>{});
  else
    body(std::integral_constant<int, 1>{});
}

}  // namespace gqe::kernels
