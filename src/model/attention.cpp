#include "model/attention.h"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

#include "model/autocast.h"
#include "model/router.h"

#include "model/fused_kernels.h"
#ifdef GQE_CUDA_KERNELS
#include "model/layers_cuda.h"
#endif

namespace gqe {
namespace {

// Causal fused attention. q: [B, Hq, Tq, dh] for the last Tq of the Tk positions of k/v:
// [B, Hkv, Tk, dh], Hq a multiple of Hkv; query head h reads KV head h / (Hq / Hkv), without
// materialising the repeated K/V.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t tq = q.size(2), tk = k.size(2);
  std::optional<at::Tensor> mask;
  if (tq != tk && tq > 1)  // queries continue a cached prefix: causal, aligned at the end
    mask = at::arange(tk, q.options().dtype(at::kLong)).unsqueeze(0) <=
           at::arange(tk - tq, tk, q.options().dtype(at::kLong)).unsqueeze(1);
  return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/tq == tk && tq > 1,
                                          /*scale=*/std::nullopt, /*enable_gqa=*/q.size(1) != k.size(1));
}

// rows[index] for an index without repeats. ATen's index_select backward is an index_add (on a
// GPU, atomic adds in bf16, 2.8 ms of the 250M model's step on an H100); with distinct rows each
// gradient row is written once, by an index_copy into zeros.
class SelectDistinctRows : public torch::autograd::Function<SelectDistinctRows> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& index) {
    ctx->save_for_backward({index});
    ctx->saved_data["rows"] = rows.size(0);
    return rows.index_select(0, index);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const at::Tensor index = ctx->get_saved_variables()[0];
    at::Tensor grad = at::zeros({ctx->saved_data["rows"].toInt(), g[0].size(1)}, g[0].options());
    return {grad.index_copy_(0, index, g[0]), at::Tensor()};
  }
};

// The mean over dim 1, kept (the shared head's keys and values: the groups' mean). ATen's backward
// divides the expanded gradient, a pass over all of [B, G, T, dh] (1.3 ms of GQE's H200 step);
// dividing before expanding gives the same numbers.
class MeanOverGroups : public torch::autograd::Function<MeanOverGroups> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->saved_data["sizes"] = x.sizes().vec();
    return x.mean(1, /*keepdim=*/true);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const std::vector<int64_t> sizes = ctx->saved_data["sizes"].toIntVector();
    return {(g[0] / static_cast<double>(sizes[1])).expand(sizes)};
  }
};

#ifdef GQE_CUDA_KERNELS
// GQE's selected queries on a GPU: the gather from the query projection's rows and RoPE in one
// kernel each way (kernels::gqe_queries), written as attention reads them, routed and shared apart.
// ATen takes an index_select, RoPE over the gathered rows and the split's views forward, and back
// a concatenation, RoPE's adjoint, zeros and an index_copy.
class RoutedQueries : public torch::autograd::Function<RoutedQueries> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows,
                                                const at::Tensor& index, const RotaryTables& rope, int64_t B, int64_t T,
                                                int64_t routed) {
    ctx->save_for_backward({index, rope.cos, rope.signed_sin});
    ctx->saved_data["rows"] = rows.size(0);
    const kernels::GqeQueries q = gqe_queries_cuda(rows, index, rope.cos, rope.signed_sin, B, T, routed);
    ctx->saved_data["shared"] = q.shared.defined() ? q.shared.size(1) : 0;
    return {q.routed, q.shared.defined() ? q.shared : at::empty({B, 0, T, rows.size(1)}, rows.options())};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const auto saved = ctx->get_saved_variables();
    const int64_t shared = ctx->saved_data["shared"].toInt();
    const at::Tensor g_shared =
        shared == 0 ? at::Tensor() : g[1].defined() ? g[1] : at::zeros({g[0].size(0), shared, g[0].size(2), g[0].size(3)}, g[0].options());
    const at::Tensor d_rows = gqe_queries_backward_cuda(g[0], g_shared, saved[0], saved[1], saved[2], ctx->saved_data["rows"].toInt());
    return {d_rows, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The GQE variant's o_proj input [B, T, (S + 2) dh] from the S routed heads' outputs o [B, S, T, dh],
// their weights w [B, T, S] and the shared head's output [B, 1, T, dh], by one kernel each way on
// a GPU (kernels::gqe_slots). ATen takes a copy of o to the token-major layout, a product and a
// sum in fp32, a cast and a concatenation forward, and about as many kernels back.
class GqeSlots : public torch::autograd::Function<GqeSlots> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& o, const at::Tensor& shared,
                            const at::Tensor& w) {
    ctx->save_for_backward({o, w});
    return gqe_slots_cuda(o, shared, w);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const auto saved = ctx->get_saved_variables();
    const kernels::GqeSlotsGrad d = gqe_slots_backward_cuda(g[0], saved[0], saved[1]);
    return {d.o, d.shared, d.w};
  }
};
#endif

}  // namespace

int64_t AttentionImpl::output_slots(const ModelConfig& c) {
  if (c.attention.type == AttentionType::gqa) return c.n_heads;
  const int64_t hard = c.attention.top_k * c.n_kv_heads;
  return c.attention.variant == GqeVariant::gqe ? hard + 2 : hard;
}

AttentionImpl::AttentionImpl(const ModelConfig& c)
    : attn_(c.attention), n_heads_(c.n_heads), n_kv_heads_(c.n_kv_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", make_linear(c.d_model, c.n_heads * c.head_dim));
  k_proj = register_module("k_proj", make_linear(c.d_model, c.n_kv_heads * c.head_dim));
  v_proj = register_module("v_proj", make_linear(c.d_model, c.n_kv_heads * c.head_dim));
  o_proj = register_module("o_proj", make_linear(output_slots(c) * c.head_dim, c.d_model));
  if (attn_.type == AttentionType::gqe) {
    router = register_module("router", make_linear(c.d_model, c.n_heads));
    if (attn_.variant == GqeVariant::gqe) q_shared = register_module("q_shared", make_linear(c.d_model, c.head_dim));
  }
}

AttentionOutput AttentionImpl::forward(const at::Tensor& x, const RotaryTables& rope, LayerKV* cache, int64_t start,
                                       const at::Tensor& router_x) {
  const int64_t B = x.size(0), T = x.size(1);
  const at::Tensor xc = autocast_input(x);  // one cast for the q, k and v projections
  at::Tensor k = apply_rotary(k_proj(xc).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2), rope);
  at::Tensor v = v_proj(xc).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  if (cache) {
    cache->k.narrow(2, start, T).copy_(k);
    cache->v.narrow(2, start, T).copy_(v);
    k = cache->k.narrow(2, 0, start + T);
    v = cache->v.narrow(2, 0, start + T);
  }
  AttentionOutput out;
  if (attn_.type == AttentionType::gqa) {
    const at::Tensor q = apply_rotary(q_proj(xc).view({B, T, n_heads_, head_dim_}).transpose(1, 2), rope);
    out.y = o_proj(causal_attention(q, k, v).transpose(1, 2).reshape({B, T, n_heads_ * head_dim_}));
  } else {
    out.y = o_proj(routed_slots(router_x.defined() ? router_x : x, xc, k, v, rope, out));
  }
  return out;
}

// GQE forward steps 3-6: route, attend with the selected query heads only, build the o_proj input.
at::Tensor AttentionImpl::routed_slots(const at::Tensor& x, const at::Tensor& xc, const at::Tensor& k, const at::Tensor& v,
                                       const RotaryTables& rope, AttentionOutput& out) {
  const int64_t B = x.size(0), T = x.size(1), G = n_kv_heads_, M = n_heads_ / n_kv_heads_, K = attn_.top_k;
  // Router in fp32, under autocast too (which would run the linear in bf16): its logits, softmax
  // and top-k decide which heads run.
  const Routing r = [&] {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    return route(at::linear(x.to(at::kFloat), router->weight.to(at::kFloat)), G, K);
  }();
  // The balance loss and the statistics serve training only. In eval mode (evaluation, generation,
  // prefill) their ~20 small ops per layer are skipped: at short context they are a good part of
  // GQE's cost over GQA on a GPU, where each op is a kernel launch.
  if (is_training()) {
    out.load = expert_load(r);
    out.aux = load_balancing_loss(r, out.load);
    out.entropy = router_entropy(r);
  }

  // Gather the selected experts' queries: head g*K + r attends with KV head g. RoPE commutes with
  // the gather (same rotation for every head at a position), so it runs on the selected heads only.
  // As whole rows of head_dim: an index_select, not a gather with an index per element. The
  // shared query comes out of the same matmul as the experts' (one cast of x under autocast, one
  // gradient for it) and the same gather: token t's expert m of group g is row t*H + g*M + m,
  // its shared query row t*H + N.
  const bool has_shared = attn_.variant == GqeVariant::gqe;
  const int64_t N = n_heads_, H = N + (has_shared ? 1 : 0), S = G * K + (has_shared ? 1 : 0);
  const at::Tensor rows =
      (has_shared ? at::linear(xc, at::cat({q_proj->weight, q_shared->weight})) : q_proj(xc)).view({B * T * H, head_dim_});
  const auto opts = r.topi.options();
  at::Tensor index = (at::arange(0, B * T * H, H, opts).view({B * T, 1, 1}) + at::arange(0, G * M, M, opts).view({1, G, 1}) +
                      r.topi.reshape({B * T, G, K}))
                         .view({B * T, G * K});
  if (has_shared) index = at::cat({index, at::arange(N, B * T * H, H, opts).view({B * T, 1})}, 1);
  std::vector<at::Tensor> q;
#ifdef GQE_CUDA_KERNELS
  if (rows.is_cuda() && fused_enabled(FusedKernel::gqe_queries)) q = RoutedQueries::apply(rows, index.view(-1), rope, B, T, G * K);
#endif
  if (q.empty()) {
    const at::Tensor picked = SelectDistinctRows::apply(rows, index.view(-1)).view({B, T, S, head_dim_}).transpose(1, 2);
    // Split, not narrowed: one concatenation in the backward pass.
    q = apply_rotary(picked, rope).split_with_sizes({G * K, S - G * K}, 1);
  }
  const at::Tensor o = causal_attention(q[0], k, v);  // [B, G*K, T, dh]
  if (attn_.variant == GqeVariant::gqe) {
    // Weights renormalised across all groups (within a group, k = 1 would make them all 1 and cut
    // the router off from the LM loss).
    const at::Tensor w = r.topv / r.topv.sum({2, 3}, /*keepdim=*/true).clamp_min(1e-9);
    // The always-on shared head reads the mean of the groups' keys and values: nothing to cache.
    const at::Tensor shared = causal_attention(q[1], MeanOverGroups::apply(k), MeanOverGroups::apply(v));
#ifdef GQE_CUDA_KERNELS
    if (o.is_cuda() && fused_enabled(FusedKernel::gqe_slots)) return GqeSlots::apply(o, shared, w.view({B, T, G * K}));
#endif
    // On the CPU, ATen's vectorised ops beat the kernel's body run one index at a time (8k prefill
    // of configs/bench/prefill-cpu.yaml: 650 against 617 ms).
    const at::Tensor routed = o.transpose(1, 2);  // [B, T, G*K, dh]
    const at::Tensor weighted = (routed * w.view({B, T, G * K, 1})).sum(2, /*keepdim=*/true).to(o.scalar_type());
    return at::cat({routed, weighted, shared.transpose(1, 2)}, 2).view({B, T, (G * K + 2) * head_dim_});
  }
  const at::Tensor slots = o.transpose(1, 2).reshape({B, T, G, K, head_dim_});
  if (attn_.variant == GqeVariant::hard_concat) return slots.reshape({B, T, G * K * head_dim_});
  return (slots * r.topv.unsqueeze(-1)).to(o.scalar_type()).reshape({B, T, G * K * head_dim_});  // weighted_concat
}

}  // namespace gqe
