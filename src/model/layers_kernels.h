// The bodies of the fused RoPE, GQE query-gather, SwiGLU, residual-add + RMSNorm and GQE
// output-slot kernels (layers_cuda.cu), and the drivers that check the tensors, allocate the
// outputs and hand the bodies to a launcher. Elementwise bodies are functors of one element index; row bodies (RMSNorm) are functors of a
// row and a lane (below). layers_cuda.cu launches them on the GPU; the tests run the same code on
// the CPU with plain loops, so CI (which has no GPU) checks their arithmetic and indexing against
// the ATen path. Only the launchers themselves (layers_cuda.cu) need a GPU to be checked.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include "model/vector_access.h"

namespace gqe::kernels {

// The drivers' handling of optional tensors and of layouts the bodies read through strides.
inline at::Tensor contiguous_if_defined(const at::Tensor& t) { return t.defined() ? t.contiguous() : t; }
template <class T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}
template <class T>
T* mutable_data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
// t itself where its last dim is contiguous (any strides elsewhere), else a contiguous copy.
inline at::Tensor last_dim_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

// Pairs i .. i + V - 1 of one row of D = 2 half values: dst = src cos + sign swap_halves(src)
// signed_sin, pair i covering columns i and i + half; c and s are the row's position's tables.
template <int V, class T>
GQE_HOST_DEVICE void rotate_pairs(const T* src, T* dst, const float* c, const float* s, int64_t i, int64_t half, float sign) {
  const Pack<T, V> lo = load<V>(src + i), hi = load<V>(src + i + half);
  const Pack<float, V> c_lo = load<V>(c + i), c_hi = load<V>(c + i + half), s_lo = load<V>(s + i), s_hi = load<V>(s + i + half);
  Pack<T, V> y_lo, y_hi;
  for (int k = 0; k < V; ++k) {
    const float l = static_cast<float>(lo.v[k]), h = static_cast<float>(hi.v[k]);
    y_lo.v[k] = static_cast<T>(l * c_lo.v[k] + sign * h * s_lo.v[k]);
    y_hi.v[k] = static_cast<T>(h * c_hi.v[k] + sign * l * s_hi.v[k]);
  }
  store<V>(dst + i, y_lo);
  store<V>(dst + i + half, y_hi);
}

// y = x cos + sign swap_halves(x) signed_sin for pairs p V .. p V + V - 1 of a row, pair i covering
// columns i and i + D/2 (both outputs need both inputs). x and y are [N0, N1, T, D] with their own
// strides for the first three dims and a contiguous last dim; the tables are [T, D] fp32.
template <class T, int V = 1>
struct RotaryPairs {
  static constexpr int width = V;
  const T* x;
  T* y;
  const float* cos;
  const float* signed_sin;
  int64_t x_stride[3], y_stride[3];
  int64_t n1, len, half;
  float sign;

  GQE_HOST_DEVICE void operator()(int64_t p) const {
    const int64_t chunks = half / V, i = p % chunks * V, row = p / chunks;
    const int64_t t = row % len, r = row / len, a = r / n1, b = r % n1;
    rotate_pairs<V>(x + a * x_stride[0] + b * x_stride[1] + t * x_stride[2], y + a * y_stride[0] + b * y_stride[1] + t * y_stride[2],
                    cos + t * 2 * half, signed_sin + t * 2 * half, i, half, sign);
  }
};

// GQE's queries: token n = b T + t's slot s (of S; the first S0 routed, the rest the shared head)
// is row index[n S + s] of rows [R, D] (the query projection's output, one row per token and head),
// rotated for position t. Forward (sign +1) writes it to q0 [B, T, S0, D] or q1 [B, T, S - S0, D];
// backward (sign -1) reads the gradients g0 and g1 ([B, S0 or S - S0, T, D], any strides with a
// contiguous last dim) and writes the rotated gradient to row index[n S + s] of d_rows.
template <class T, int V = 1>
struct GqeQueryPairs {
  static constexpr int width = V;
  const T* rows;  // forward: the gather's source; backward: null
  T* d_rows;      // backward: the scatter's target; forward: null
  T* q[2];        // forward's outputs (q[1] null without a shared head)
  const T* g[2];  // backward's inputs
  int64_t g_stride[2][3];
  const int64_t* index;
  const float* cos;
  const float* signed_sin;
  int64_t len, slots, routed, half;

  GQE_HOST_DEVICE void operator()(int64_t e) const {
    const int64_t chunks = half / V, i = e % chunks * V, r = e / chunks, s = r % slots, n = r / slots, t = n % len,
                  b = n / len;
    // Selects, not q[part]: indexing the kernel's parameters at run time would copy them to local memory.
    const bool first = s < routed;
    const int64_t width_of_part = first ? routed : slots - routed, slot = first ? s : s - routed, D = 2 * half;
    const int64_t row = index[n * slots + s];
    const float* c = cos + t * D;
    const float* sn = signed_sin + t * D;
    if (rows) {
      rotate_pairs<V>(rows + row * D, (first ? q[0] : q[1]) + (n * width_of_part + slot) * D, c, sn, i, half, 1.f);
    } else {
      const int64_t offset = first ? b * g_stride[0][0] + slot * g_stride[0][1] + t * g_stride[0][2]
                                   : b * g_stride[1][0] + slot * g_stride[1][1] + t * g_stride[1][2];
      rotate_pairs<V>((first ? g[0] : g[1]) + offset, d_rows + row * D, c, sn, i, half, -1.f);
    }
  }
};

GQE_HOST_DEVICE inline float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

// y = silu(gate) * up, computed in fp32, elements i V .. i V + V - 1.
template <class T, int V = 1>
struct SwiGLUForward {
  static constexpr int width = V;
  const T* gate;
  const T* up;
  T* y;
  GQE_HOST_DEVICE void operator()(int64_t i) const {
    const Pack<T, V> g = load<V>(gate + i * V), u = load<V>(up + i * V);
    Pack<T, V> out;
    for (int k = 0; k < V; ++k) {
      const float gk = static_cast<float>(g.v[k]);
      out.v[k] = static_cast<T>(gk * sigmoid(gk) * static_cast<float>(u.v[k]));
    }
    store<V>(y + i * V, out);
  }
};

// d gate = dy up silu'(g) with silu'(g) = s (1 + g (1 - s)), s = sigmoid(g); d up = dy silu(g).
template <class T, int V = 1>
struct SwiGLUBackward {
  static constexpr int width = V;
  const T* dy;
  const T* gate;
  const T* up;
  T* dgate;
  T* dup;
  GQE_HOST_DEVICE void operator()(int64_t i) const {
    const Pack<T, V> dyv = load<V>(dy + i * V), gv = load<V>(gate + i * V), uv = load<V>(up + i * V);
    Pack<T, V> dg, du;
    for (int k = 0; k < V; ++k) {
      const float d = static_cast<float>(dyv.v[k]), g = static_cast<float>(gv.v[k]), u = static_cast<float>(uv.v[k]);
      const float s = sigmoid(g);
      dg.v[k] = static_cast<T>(d * u * s * (1.f + g * (1.f - s)));
      du.v[k] = static_cast<T>(d * g * s);
    }
    store<V>(dgate + i * V, dg);
    store<V>(dup + i * V, du);
  }
};

// The o_proj input of the GQE variant, y [B*T, S + 2, dh]: for token n = b*T + t, slot s < S copies
// the routed head's attention output o[b, s, t, :]; slot S is their weighted sum, sum_s w[n, s]
// o[b, s, t, :] in fp32; slot S + 1 copies the shared head's shared[b, 0, t, :]. o and shared are
// [B, heads, T, dh] in any strides with a contiguous last dim (SDPA's output layout). Index e covers
// elements e V .. e V + V - 1 of y.
template <class T, int V = 1>
struct GqeSlotsForward {
  static constexpr int width = V;
  const T* o;
  const T* shared;
  const float* w;
  T* y;
  int64_t o_stride[3], shared_stride[3];
  int64_t len, slots, dh;

  GQE_HOST_DEVICE void operator()(int64_t e) const {
    const int64_t chunks = dh / V, j = e % chunks * V, r = e / chunks, s = r % (slots + 2), n = r / (slots + 2), t = n % len,
                  b = n / len;
    const T* ot = o + b * o_stride[0] + t * o_stride[2] + j;
    Pack<T, V> out;
    if (s < slots) {
      out = load<V>(ot + s * o_stride[1]);
    } else if (s == slots) {
      float acc[V] = {};
      for (int64_t k = 0; k < slots; ++k) {
        const Pack<T, V> ok = load<V>(ot + k * o_stride[1]);
        for (int m = 0; m < V; ++m) acc[m] += w[n * slots + k] * static_cast<float>(ok.v[m]);
      }
      for (int m = 0; m < V; ++m) out.v[m] = static_cast<T>(acc[m]);
    } else {
      out = load<V>(shared + b * shared_stride[0] + t * shared_stride[2] + j);
    }
    store<V>(y + e * V, out);
  }
};

// d o[b, s, t, j] = dy[n, s, j] + w[n, s] dy[n, S, j], V elements of o each (j .. j + V - 1),
// written in d_o's strides.
template <class T, int V = 1>
struct GqeSlotsBackwardO {
  static constexpr int width = V;
  const T* dy;
  const float* w;
  T* d_o;
  int64_t d_o_stride[3];
  int64_t len, slots, dh;

  GQE_HOST_DEVICE void operator()(int64_t e) const {
    const int64_t chunks = dh / V, j = e % chunks * V, r = e / chunks, t = r % len, bs = r / len, s = bs % slots,
                  b = bs / slots, n = b * len + t;
    const T* row = dy + n * (slots + 2) * dh;
    const Pack<T, V> own = load<V>(row + s * dh + j), weighted = load<V>(row + slots * dh + j);
    const float ws = w[n * slots + s];
    Pack<T, V> out;
    for (int m = 0; m < V; ++m)
      out.v[m] = static_cast<T>(static_cast<float>(own.v[m]) + ws * static_cast<float>(weighted.v[m]));
    store<V>(d_o + b * d_o_stride[0] + s * d_o_stride[1] + t * d_o_stride[2] + j, out);
  }
};

// d w[n, s] = dy[n, S, :] . o[b, s, t, :], one (token, slot) each, read V elements at a time and
// summed in order.
template <class T, int V = 1>
struct GqeSlotsBackwardW {
  static constexpr int width = V;
  const T* dy;
  const T* o;
  float* d_w;
  int64_t o_stride[3];
  int64_t len, slots, dh;

  GQE_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t s = i % slots, n = i / slots, t = n % len, b = n / len;
    const T* g = dy + (n * (slots + 2) + slots) * dh;
    const T* os = o + b * o_stride[0] + s * o_stride[1] + t * o_stride[2];
    float acc = 0.f;
    for (int64_t j = 0; j < dh; j += V) {
      const Pack<T, V> gj = load<V>(g + j), oj = load<V>(os + j);
      for (int m = 0; m < V; ++m) acc += static_cast<float>(gj.v[m]) * static_cast<float>(oj.v[m]);
    }
    d_w[i] = acc;
  }
};

// Runs an elementwise kernel on the CPU, ranges of indices in parallel. The model's CPU path is
// ATen's; wide (vector) bodies only where a test asks for them.
struct HostLaunch {
  bool wide = false;

  template <class F>
  void operator()(const F& f, int64_t n) const {
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) f(i);
    });
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
  const at::Tensor x = last_dim_contiguous(x_in);
  at::Tensor y = at::empty_like(x);  // x's layout where it is dense, else contiguous
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gqe_rotary", [&] {
    constexpr int V = kWide<scalar_t>;
    const int64_t half = x.size(3) / 2;
    const bool wide = launch.wide && half % V == 0 && aligned(V, {x, y, cos, signed_sin});
    with_width<V>(wide, [&](auto width) {
      constexpr int W = decltype(width)::value;
      launch(RotaryPairs<scalar_t, W>{x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), cos.const_data_ptr<float>(),
                                      signed_sin.const_data_ptr<float>(), {x.stride(0), x.stride(1), x.stride(2)},
                                      {y.stride(0), y.stride(1), y.stride(2)}, x.size(1), x.size(2), half, sign},
             pairs / W);
    });
  });
  return y;
}

struct GqeQueries {
  at::Tensor routed;  // [B, S0, T, D], a transposed [B, T, S0, D] (attention's layout)
  at::Tensor shared;  // [B, S - S0, T, D] likewise; undefined when S = S0
};

// rows [B T H, D] and index [B T S] (rows distinct per token) -> the selected rows rotated, split
// into the first S0 slots and the rest (GqeQueryPairs).
template <class Launch>
GqeQueries gqe_queries(const at::Tensor& rows_in, const at::Tensor& index_in, const at::Tensor& cos, const at::Tensor& signed_sin,
                       int64_t B, int64_t T, int64_t routed, Launch&& launch) {
  const at::Tensor rows = rows_in.contiguous(), index = index_in.contiguous();
  const int64_t D = rows.size(1), S = index.numel() / std::max<int64_t>(B * T, 1);
  TORCH_CHECK(rows.dim() == 2 && D % 2 == 0 && index.scalar_type() == at::kLong && index.numel() == B * T * S && routed <= S &&
                  cos.scalar_type() == at::kFloat && signed_sin.scalar_type() == at::kFloat && cos.is_contiguous() &&
                  signed_sin.is_contiguous() && cos.sizes() == signed_sin.sizes() && cos.dim() == 2 && cos.size(0) == T &&
                  cos.size(1) == D,
              "gqe_queries: rows [R, D], a long index [B T S] and fp32 tables [T, D] expected");
  GqeQueries q{at::empty({B, T, routed, D}, rows.options()).transpose(1, 2),
               S > routed ? at::empty({B, T, S - routed, D}, rows.options()).transpose(1, 2) : at::Tensor()};
  if (index.numel() == 0 || D == 0) return q;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rows.scalar_type(), "gqe_queries", [&] {
    constexpr int V = kWide<scalar_t>;
    with_width<V>(launch.wide && (D / 2) % V == 0 && aligned(V, {rows, q.routed, q.shared, cos, signed_sin}), [&](auto width) {
      constexpr int W = decltype(width)::value;
      launch(GqeQueryPairs<scalar_t, W>{rows.const_data_ptr<scalar_t>(), nullptr,
                                        {q.routed.data_ptr<scalar_t>(), mutable_data_or_null<scalar_t>(q.shared)}, {nullptr, nullptr},
                                        {}, index.const_data_ptr<int64_t>(), cos.const_data_ptr<float>(),
                                        signed_sin.const_data_ptr<float>(), T, S, routed, D / 2},
             B * T * S * (D / 2) / W);
    });
  });
  return q;
}

// The gradient of gqe_queries' rows [R, D] from those of its outputs (g_shared undefined when
// there is no shared slot); rows no slot selected get zeros.
template <class Launch>
at::Tensor gqe_queries_backward(const at::Tensor& g_routed_in, const at::Tensor& g_shared_in, const at::Tensor& index_in,
                                const at::Tensor& cos, const at::Tensor& signed_sin, int64_t R, Launch&& launch) {
  const at::Tensor g_routed = last_dim_contiguous(g_routed_in), g_shared = g_shared_in.defined() ? last_dim_contiguous(g_shared_in) : g_shared_in,
                   index = index_in.contiguous();
  const int64_t B = g_routed.size(0), routed = g_routed.size(1), T = g_routed.size(2), D = g_routed.size(3);
  const int64_t S = routed + (g_shared.defined() ? g_shared.size(1) : 0);
  TORCH_CHECK(index.numel() == B * T * S && (!g_shared.defined() || g_shared.scalar_type() == g_routed.scalar_type()),
              "gqe_queries_backward: gradients [B, S0, T, D] and [B, S - S0, T, D] of one dtype, and the forward's index, expected");
  at::Tensor d_rows = at::zeros({R, D}, g_routed.options());
  if (index.numel() == 0 || D == 0) return d_rows;
  auto strides = [](const at::Tensor& t) {
    return std::array<int64_t, 3>{t.defined() ? t.stride(0) : 0, t.defined() ? t.stride(1) : 0, t.defined() ? t.stride(2) : 0};
  };
  const std::array<int64_t, 3> s0 = strides(g_routed), s1 = strides(g_shared);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g_routed.scalar_type(), "gqe_queries_backward", [&] {
    constexpr int V = kWide<scalar_t>;
    with_width<V>(launch.wide && (D / 2) % V == 0 && aligned(V, {g_routed, g_shared, d_rows, cos, signed_sin}),
                  [&](auto width) {
                    constexpr int W = decltype(width)::value;
                    launch(GqeQueryPairs<scalar_t, W>{nullptr, d_rows.data_ptr<scalar_t>(), {nullptr, nullptr},
                                                      {g_routed.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(g_shared)},
                                                      {{s0[0], s0[1], s0[2]}, {s1[0], s1[1], s1[2]}}, index.const_data_ptr<int64_t>(),
                                                      cos.const_data_ptr<float>(), signed_sin.const_data_ptr<float>(), T, S, routed,
                                                      D / 2},
                           B * T * S * (D / 2) / W);
                  });
  });
  return d_rows;
}

template <class Launch>
at::Tensor swiglu(const at::Tensor& gate_in, const at::Tensor& up_in, Launch&& launch) {
  TORCH_CHECK(gate_in.sizes() == up_in.sizes() && gate_in.scalar_type() == up_in.scalar_type(),
              "swiglu: gate and up of different shapes or dtypes");
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  at::Tensor y = at::empty_like(gate);
  if (gate.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "gqe_swiglu", [&] {
    constexpr int V = kWide<scalar_t>;
    with_width<V>(launch.wide && gate.numel() % V == 0 && aligned(V, {gate, up, y}), [&](auto width) {
      constexpr int W = decltype(width)::value;
      launch(SwiGLUForward<scalar_t, W>{gate.const_data_ptr<scalar_t>(), up.const_data_ptr<scalar_t>(),
                                        y.data_ptr<scalar_t>()},
             gate.numel() / W);
    });
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
    constexpr int V = kWide<scalar_t>;
    with_width<V>(launch.wide && gate.numel() % V == 0 && aligned(V, {grad, gate, up, dgate, dup}), [&](auto width) {
      constexpr int W = decltype(width)::value;
      launch(SwiGLUBackward<scalar_t, W>{grad.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
                                         up.const_data_ptr<scalar_t>(), dgate.data_ptr<scalar_t>(), dup.data_ptr<scalar_t>()},
             gate.numel() / W);
    });
  });
  return {dgate, dup};
}

// o [B, S, T, dh] and shared [B, 1, T, dh] of one dtype, w [B, T, S] fp32 -> y [B, T, (S + 2) dh].
template <class Launch>
at::Tensor gqe_slots(const at::Tensor& o_in, const at::Tensor& shared_in, const at::Tensor& w_in, Launch&& launch) {
  TORCH_CHECK(o_in.dim() == 4 && shared_in.dim() == 4 && shared_in.size(1) == 1 && shared_in.size(0) == o_in.size(0) &&
                  shared_in.size(2) == o_in.size(2) && shared_in.size(3) == o_in.size(3) &&
                  shared_in.scalar_type() == o_in.scalar_type() && w_in.scalar_type() == at::kFloat &&
                  w_in.numel() == o_in.size(0) * o_in.size(1) * o_in.size(2),
              "gqe_slots: o [B, S, T, dh], shared [B, 1, T, dh] of o's dtype and fp32 weights [B, T, S] expected");
  const at::Tensor o = last_dim_contiguous(o_in), shared = last_dim_contiguous(shared_in), w = w_in.contiguous();
  const int64_t B = o.size(0), S = o.size(1), T = o.size(2), dh = o.size(3);
  at::Tensor y = at::empty({B, T, (S + 2) * dh}, o.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, o.scalar_type(), "gqe_slots", [&] {
    constexpr int V = kWide<scalar_t>;
    const bool wide = launch.wide && dh % V == 0 && aligned(V, {o, shared, y});
    with_width<V>(wide, [&](auto width) {
      constexpr int W = decltype(width)::value;
      launch(GqeSlotsForward<scalar_t, W>{o.const_data_ptr<scalar_t>(), shared.const_data_ptr<scalar_t>(),
                                          w.const_data_ptr<float>(), y.data_ptr<scalar_t>(), {o.stride(0), o.stride(1), o.stride(2)},
                                          {shared.stride(0), shared.stride(1), shared.stride(2)}, T, S, dh},
             y.numel() / W);
    });
  });
  return y;
}

struct GqeSlotsGrad {
  at::Tensor o;       // in o's layout where it is dense
  at::Tensor shared;  // a view of dy
  at::Tensor w;       // fp32 [B, T, S]
};

template <class Launch>
GqeSlotsGrad gqe_slots_backward(const at::Tensor& dy_in, const at::Tensor& o_in, const at::Tensor& w_in, Launch&& launch) {
  TORCH_CHECK(o_in.dim() == 4 && w_in.scalar_type() == at::kFloat && w_in.numel() == o_in.size(0) * o_in.size(1) * o_in.size(2) &&
                  dy_in.numel() == o_in.size(0) * o_in.size(2) * (o_in.size(1) + 2) * o_in.size(3),
              "gqe_slots_backward: dy [B, T, (S + 2) dh], o [B, S, T, dh] and fp32 weights [B, T, S] expected");
  const at::Tensor o = last_dim_contiguous(o_in), w = w_in.contiguous(), dy = dy_in.to(o.scalar_type()).contiguous();
  const int64_t B = o.size(0), S = o.size(1), T = o.size(2), dh = o.size(3);
  GqeSlotsGrad g{at::empty_like(o), dy.view({B, T, S + 2, dh}).narrow(2, S + 1, 1).transpose(1, 2),
                 at::empty({B, T, S}, w.options())};
  if (o.numel() == 0) return g;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, o.scalar_type(), "gqe_slots_backward", [&] {
    constexpr int V = kWide<scalar_t>;
    const bool wide = launch.wide && dh % V == 0 && aligned(V, {dy, o, g.o});
    with_width<V>(wide, [&](auto width) {
      constexpr int W = decltype(width)::value;
      launch(GqeSlotsBackwardO<scalar_t, W>{dy.const_data_ptr<scalar_t>(), w.const_data_ptr<float>(), g.o.data_ptr<scalar_t>(),
                                            {g.o.stride(0), g.o.stride(1), g.o.stride(2)}, T, S, dh},
             o.numel() / W);
      launch(GqeSlotsBackwardW<scalar_t, W>{dy.const_data_ptr<scalar_t>(), o.const_data_ptr<scalar_t>(), g.w.data_ptr<float>(),
                                            {o.stride(0), o.stride(1), o.stride(2)}, T, S, dh},
             B * T * S);
    });
  });
  return g;
}

// Row kernels. For each row a launcher runs partial(row, lane, lanes) on every lane, sums the
// partials, then finish(row, lane, lanes, total, acc) on every lane; lane l handles the columns
// l V .. l V + V - 1, then those lanes x V further on, ... (a GPU block's threads, coalesced). acc is a [d] accumulator private to the rows
// that one launcher block runs (null when the kernel needs none); each lane touches only its own
// columns of it, so it needs no atomics.

// sum = x + delta (fp32; no delta: sum is x itself, not written) and y = RMSNorm(sum) * weight,
// computed in fp32 and stored as T, and also as fp32 in y32 if asked; rstd = 1 / sqrt(mean(sum^2) +
// eps) per row, for the backward.
template <class T, int V = 1>
struct ResidualNormForward {
  static constexpr int width = V;
  const float* x;
  const T* delta;  // may be null
  float* sum;      // null when delta is
  const float* weight;
  T* y;
  float* y32;  // may be null
  float* rstd;
  int64_t d;
  float eps;

  GQE_HOST_DEVICE float partial(int64_t row, int64_t lane, int64_t lanes) const {
    float s = 0.f;
    for (int64_t j = lane * V; j < d; j += lanes * V) {
      const int64_t i = row * d + j;
      Pack<float, V> v = load<V>(x + i);
      if (delta) {
        const Pack<T, V> dv = load<V>(delta + i);
        for (int k = 0; k < V; ++k) v.v[k] = v.v[k] + static_cast<float>(dv.v[k]);
        store<V>(sum + i, v);
      }
      for (int k = 0; k < V; ++k) s += v.v[k] * v.v[k];
    }
    return s;
  }
  GQE_HOST_DEVICE void finish(int64_t row, int64_t lane, int64_t lanes, float total, float* /*acc*/) const {
    const float r = 1.f / sqrtf(total / static_cast<float>(d) + eps);
    if (lane == 0) rstd[row] = r;
    const float* h = delta ? sum : x;  // this lane's own columns, just written
    for (int64_t j = lane * V; j < d; j += lanes * V) {
      const int64_t i = row * d + j;
      const Pack<float, V> hv = load<V>(h + i), w = load<V>(weight + j);
      Pack<float, V> v;
      Pack<T, V> out;
      for (int k = 0; k < V; ++k) {
        v.v[k] = hv.v[k] * r * w.v[k];
        out.v[k] = static_cast<T>(v.v[k]);
      }
      store<V>(y + i, out);
      if (y32) store<V>(y32 + i, v);
    }
  }
};

// The backward of ResidualNormForward: with dy the sum of y's and y32's gradients, g = dy * weight,
// y = weight * h * r and r = (mean(h^2) + eps)^-1/2, dh = r g - h r^3 (g . h) / d, plus dsum (the
// gradient that reached sum directly, if any). dx = dh in fp32, ddelta = dh as T, d weight += dy h r
// into acc.
template <class T, int V = 1>
struct ResidualNormBackward {
  static constexpr int width = V;
  const T* dy;
  const float* dy32;  // may be null
  const float* dsum;  // may be null
  const float* h;
  const float* weight;
  const float* rstd;
  float* dx;
  T* ddelta;  // may be null
  int64_t d;

  GQE_HOST_DEVICE float partial(int64_t row, int64_t lane, int64_t lanes) const {
    float s = 0.f;
    for (int64_t j = lane * V; j < d; j += lanes * V) {
      const Pack<float, V> g = grad(row * d + j), w = load<V>(weight + j), hv = load<V>(h + row * d + j);
      for (int k = 0; k < V; ++k) s += g.v[k] * w.v[k] * hv.v[k];
    }
    return s;
  }
  GQE_HOST_DEVICE Pack<float, V> grad(int64_t i) const {
    const Pack<T, V> a = load<V>(dy + i);
    Pack<float, V> g{};
    if (dy32) g = load<V>(dy32 + i);
    for (int k = 0; k < V; ++k) g.v[k] = static_cast<float>(a.v[k]) + (dy32 ? g.v[k] : 0.f);
    return g;
  }
  GQE_HOST_DEVICE void finish(int64_t row, int64_t lane, int64_t lanes, float total, float* acc) const {
    const float r = rstd[row], c = total * r * r * r / static_cast<float>(d);
    for (int64_t j = lane * V; j < d; j += lanes * V) {
      const int64_t i = row * d + j;
      const Pack<float, V> g = grad(i), w = load<V>(weight + j), hv = load<V>(h + i);
      Pack<float, V> ds{}, v;
      Pack<T, V> vt;
      if (dsum) ds = load<V>(dsum + i);
      for (int k = 0; k < V; ++k) {
        v.v[k] = g.v[k] * w.v[k] * r - hv.v[k] * c;
        if (dsum) v.v[k] += ds.v[k];
        vt.v[k] = static_cast<T>(v.v[k]);
        acc[j + k] += g.v[k] * hv.v[k] * r;
      }
      store<V>(dx + i, v);
      if (ddelta) store<V>(ddelta + i, vt);
    }
  }
};

// Runs a row kernel on the CPU: blocks of rows in parallel, each row's lanes one after another.
// The number of blocks depends on the rows only, so the weight gradient's summation order does
// not change with the thread count. (The tests also run it with lanes > 1, as a GPU block would.)
struct HostRows {
  int64_t lanes = 1;
  bool wide = false;  // as HostLaunch's

  template <class F>
  at::Tensor operator()(const F& f, int64_t rows, int64_t d, bool accumulate) const {
    const int64_t blocks = std::min<int64_t>(rows, 64);
    at::Tensor acc = accumulate ? at::zeros({blocks, d}, at::kFloat) : at::Tensor();
    float* acc_data = mutable_data_or_null<float>(acc);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t row = rows * b / blocks; row < rows * (b + 1) / blocks; ++row) {
          float total = 0.f;
          for (int64_t l = 0; l < lanes; ++l) total += f.partial(row, l, lanes);
          for (int64_t l = 0; l < lanes; ++l) f.finish(row, l, lanes, total, acc_data ? acc_data + b * d : nullptr);
        }
    });
    return acc;
  }
};

struct ResidualNorm {
  at::Tensor sum;          // x + delta, fp32 (undefined without delta)
  at::Tensor normed;       // RMSNorm(sum) * weight, in the requested dtype
  at::Tensor normed_fp32;  // the same in fp32, if asked for
  at::Tensor rstd;         // fp32, one per row
};

// launch(body, rows, d, accumulate) runs a row kernel and, when accumulate, returns the blocks'
// accumulators as [blocks, d] fp32.
template <class Launch>
ResidualNorm residual_rms_norm(const at::Tensor& x_in, const at::Tensor& delta_in, const at::Tensor& weight, double eps,
                               at::ScalarType out, bool fp32_copy, Launch&& launch) {
  const int64_t d = weight.numel();
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && weight.dim() == 1 &&
                  weight.is_contiguous() && x_in.dim() >= 1 && x_in.size(-1) == d &&
                  (!delta_in.defined() || (delta_in.sizes() == x_in.sizes() && delta_in.scalar_type() == out)),
              "residual_rms_norm: fp32 x [..., d], fp32 weight [d] and a delta shaped as x in the output dtype expected");
  const at::Tensor x = x_in.contiguous(), delta = contiguous_if_defined(delta_in);
  ResidualNorm r{delta.defined() ? at::empty_like(x) : at::Tensor(), at::empty(x.sizes(), x.options().dtype(out)),
                 fp32_copy ? at::empty_like(x) : at::Tensor(), at::empty(x.sizes().slice(0, x.dim() - 1), x.options())};
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  if (rows == 0) return r;
  // The fp32 tensors set the width (16 bytes of fp32); the others are read as many elements.
  constexpr int V = kWide<float>;
  const bool wide = launch.wide && d % V == 0 && aligned(V, {x, delta, r.sum, weight, r.normed, r.normed_fp32});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out, "gqe_residual_rms_norm", [&] {
    with_width<V>(wide, [&](auto width) {
      launch(ResidualNormForward<scalar_t, decltype(width)::value>{
                 x.const_data_ptr<float>(), data_or_null<scalar_t>(delta), mutable_data_or_null<float>(r.sum),
                 weight.const_data_ptr<float>(), r.normed.data_ptr<scalar_t>(), mutable_data_or_null<float>(r.normed_fp32),
                 r.rstd.data_ptr<float>(), d, static_cast<float>(eps)},
             rows, d, /*accumulate=*/false);
    });
  });
  return r;
}

struct ResidualNormGrad {
  at::Tensor x;       // fp32
  at::Tensor delta;   // the same values in dy's dtype (undefined unless asked for)
  at::Tensor weight;  // fp32 [d]
};

// h: the tensor that was normed (sum, or x without delta); dy32 (the fp32 copy's gradient) and dsum
// may be undefined.
template <class Launch>
ResidualNormGrad residual_rms_norm_backward(const at::Tensor& dy_in, const at::Tensor& dy32_in, const at::Tensor& dsum_in,
                                            const at::Tensor& h_in, const at::Tensor& weight, const at::Tensor& rstd,
                                            bool grad_delta, Launch&& launch) {
  const int64_t d = weight.numel();
  TORCH_CHECK(h_in.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && weight.is_contiguous() &&
                  dy_in.sizes() == h_in.sizes() && h_in.size(-1) == d && rstd.is_contiguous() &&
                  rstd.numel() * d == h_in.numel() &&
                  (!dsum_in.defined() || (dsum_in.sizes() == h_in.sizes() && dsum_in.scalar_type() == at::kFloat)) &&
                  (!dy32_in.defined() || (dy32_in.sizes() == h_in.sizes() && dy32_in.scalar_type() == at::kFloat)),
              "residual_rms_norm_backward: dy, h [..., d] (fp32), fp32 weight [d] and rstd per row expected");
  const at::Tensor dy = dy_in.contiguous(), h = h_in.contiguous(), dsum = contiguous_if_defined(dsum_in),
                   dy32 = contiguous_if_defined(dy32_in);
  ResidualNormGrad g{at::empty_like(h), grad_delta ? at::empty_like(dy) : at::Tensor(), at::zeros_like(weight)};
  const int64_t rows = d == 0 ? 0 : h.numel() / d;
  if (rows == 0) return g;
  constexpr int V = kWide<float>;
  const bool wide = launch.wide && d % V == 0 && aligned(V, {dy, dy32, dsum, h, weight, g.x, g.delta});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dy.scalar_type(), "gqe_residual_rms_norm_backward", [&] {
    with_width<V>(wide, [&](auto width) {
      const at::Tensor partials = launch(
          ResidualNormBackward<scalar_t, decltype(width)::value>{
              dy.const_data_ptr<scalar_t>(), data_or_null<float>(dy32), data_or_null<float>(dsum), h.const_data_ptr<float>(),
              weight.const_data_ptr<float>(), rstd.const_data_ptr<float>(), g.x.data_ptr<float>(),
              mutable_data_or_null<scalar_t>(g.delta), d},
          rows, d, /*accumulate=*/true);
      g.weight = partials.sum(0);
    });
  });
  return g;
}

}  // namespace gqe::kernels
