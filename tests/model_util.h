// Small models for the model tests: a config with the paper's head layout in miniature, and
// weights large enough (O(1) activations) that a 1e-5 tolerance means something.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/decoder.h"

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

// GQA and every GQE variant, top-1 and top-2.
inline std::vector<ModelConfig> every_kind() {
  return {small_config(AttentionType::gqa),
          small_config(AttentionType::gqe, GqeVariant::gqe),
          small_config(AttentionType::gqe, GqeVariant::hard_concat),
          small_config(AttentionType::gqe, GqeVariant::weighted_concat),
          small_config(AttentionType::gqe, GqeVariant::gqe, 8, 2, 2)};
}

inline std::string describe(const ModelConfig& c) {
  return std::string(enum_name(c.attention.type)) + "/" + enum_name(c.attention.variant) + "/k" +
         std::to_string(c.attention.top_k);
}

// Matrices ~ normal(0, 1/fan_in), vectors (norm weights) ~ normal(1, 0.1).
inline void randomize(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 2) p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
    else p.normal_(1.0, 0.1);
  }
}

// A decoder built and randomized after seeding torch's generator: the same weights for the same seed.
inline Decoder random_decoder(const ModelConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  Decoder model(c);
  randomize(*model);
  return model;
}

}  // namespace gqe::test
