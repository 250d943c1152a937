#include "model/router.h"

#include <ATen/ATen.h>

namespace gqe {

Routing route(const at::Tensor& logits, int64_t groups, int64_t top_k) {
  const int64_t experts = logits.size(-1) / groups;
  at::Tensor probs = logits.to(at::kFloat).unflatten(-1, {groups, experts}).softmax(-1);
  // top-1 is a max: one reduction instead of a top-k kernel, which over 2-expert rows costs as much
  // as the attention it saves at long context (docs/performance.md). Ties go to the lower index.
  auto [topv, topi] = top_k == 1 ? probs.max(-1, /*keepdim=*/true)
                                 : probs.topk(top_k, /*dim=*/-1, /*largest=*/true, /*sorted=*/true);
  return {probs, topv, topi};
}

at::Tensor expert_load(const Routing& routing) {
  const int64_t groups = routing.probs.size(-2), experts = routing.probs.size(-1);
  const at::Tensor topi = routing.topi.reshape({-1, groups, routing.topi.size(-1)});  // [N, G, k]
  // count[g, m] = number of (token, rank) pairs that picked m: each token picks a distinct set. A
  // comparison and a sum rather than a scatter_add, whose atomic adds on a GPU all land on the same
  // G*M counters (0.2 ms per layer at 32K tokens on an H100).
  const at::Tensor picked = topi.unsqueeze(-1) == at::arange(experts, topi.options());  // [N, G, k, M]
  return picked.sum(at::IntArrayRef{0, 2}, /*keepdim=*/false, routing.probs.scalar_type()) / static_cast<double>(topi.size(0));
}

at::Tensor load_balancing_loss(const Routing& routing, const at::Tensor& load) {
  const int64_t groups = routing.probs.size(-2), experts = routing.probs.size(-1);
  const at::Tensor mean_probs = routing.probs.reshape({-1, groups, experts}).mean(0);  // P[g, m]
  return (load * mean_probs).sum(-1).mul(static_cast<double>(experts)).mean();
}

at::Tensor router_entropy(const Routing& routing) {
  at::NoGradGuard no_grad;
  const at::Tensor p = routing.probs;
  return -(p * p.clamp_min(1e-30).log()).sum(-1).mean();
}

}  // namespace gqe
