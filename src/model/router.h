// GQE routing (docs/model.md, GQE steps 1 and 4): per token and per
// GQA group, a softmax over the group's M query-head experts, then top-k. Always fp32.
#pragma once

#include <ATen/Tensor.h>

namespace gqe {

struct Routing {
  at::Tensor probs;  // [B, T, G, M] softmax over the experts of each group (fp32, with grad)
  at::Tensor topv;   // [B, T, G, k] probabilities of the selected experts, highest first
  at::Tensor topi;   // [B, T, G, k] indices (0..M-1) of the selected experts
};

// logits: [B, T, G*M] router outputs (any dtype; computed on in fp32).
Routing route(const at::Tensor& logits, int64_t groups, int64_t top_k);

// Switch-style balance loss of one layer: mean over groups of M * sum_m f[g,m] * P[g,m], where f is
// the fraction of the micro-batch's tokens whose top-k includes expert m (no gradient) and P the
// mean router probability. 1 for balanced top-1 routing; gradient flows through P only. `load` is
// expert_load(routing), which the caller keeps too.
at::Tensor load_balancing_loss(const Routing& routing, const at::Tensor& load);

// f above: [G, M], the fraction of tokens that selected each expert (no gradient).
at::Tensor expert_load(const Routing& routing);

// Mean entropy (nats) of the per-group router distribution; log(M) means uniform (no gradient).
at::Tensor router_entropy(const Routing& routing);

}  // namespace gqe
