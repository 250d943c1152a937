// Small models for the model tests: a config with the paper's head layout in miniature, and
// weights large enough (O(1) activations) that a 1e-5 tolerance means something.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>

#include "config/config.h"

namespace gqe::test {

inline ModelConfig small_config(AttentionType type, GqeVariant variant = GqeVariant::gqe, int64_t n_heads = 4,
                                int64_t n_kv_heads = 2, int64_t top_k = 1) {
  ModelConfig c;
  c.vocab_size = 61;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = 8;
  c.ffn_hidden = 48;
  c.attention.type = type;
  c.attention.variant = variant;
  c.attention.top_k = top_k;
  c.attention.router_init = RouterInit::normal;  // routing that differs between tokens
  return c;
}

// Matrices ~ normal(0, 1/fan_in), vectors (norm weights) ~ normal(1, 0.1).
inline void randomize(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 2) p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
    else p.normal_(1.0, 0.1);
  }
}

}  // namespace gqe::test
