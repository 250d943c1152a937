// Self-attention of one decoder layer: grouped-query attention (GQA) or Grouped Query Experts
// (GQE, docs/model.md). Both share k_proj/v_proj and the group-major q_proj layout, so their
// checkpoints have the same q/k/v shapes; GQE adds `router` and, for the `gqe` variant, `q_shared`,
// and its o_proj reads S = k*G (+2) head-sized slots instead of N.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include "config/config.h"
#include "model/layers.h"

namespace gqe {

struct AttentionOutput {
  at::Tensor y;        // [B, T, d]
  // GQE in training mode (Module::is_training()); undefined for GQA and in eval mode:
  at::Tensor aux;      // this layer's load-balancing loss (scalar)
  at::Tensor load;     // [G, M] fraction of tokens per expert (no grad)
  at::Tensor entropy;  // mean router entropy in nats (no grad)
};

// One layer's part of a KV cache: post-RoPE keys and values, [B, G, capacity, head_dim], of the
// positions decoded so far. GQE needs nothing more: its shared head reads the mean of these.
struct LayerKV {
  at::Tensor k, v;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& config);
  // x: [B, T, d] at positions start..start+T-1 (the positions of `rope`). With a cache, this
  // step's keys and values are stored at those positions and the queries attend to all of
  // [0, start + T); without one, start must be 0. GQE's router reads router_x, x in fp32 where x
  // is bf16 (RMSNorm writes both at once); by default x itself.
  AttentionOutput forward(const at::Tensor& x, const RotaryTables& rope, LayerKV* cache = nullptr, int64_t start = 0,
                          const at::Tensor& router_x = {});

  // Number of head-sized slots o_proj reads: N (GQA); k*G, +2 for the `gqe` variant.
  static int64_t output_slots(const ModelConfig& config);

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  torch::nn::Linear router{nullptr}, q_shared{nullptr};  // GQE only

 private:
  // x as the router reads it (in fp32); xc as the projections read it.
  at::Tensor routed_slots(const at::Tensor& x, const at::Tensor& xc, const at::Tensor& k, const at::Tensor& v,
                          const RotaryTables& rope, AttentionOutput& out);

  AttentionConfig attn_;
  int64_t n_heads_, n_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

}  // namespace gqe
