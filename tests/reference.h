// A straightforward reference of the decoder and of GQA / GQE attention, written from
// gqe-method.md with plain tensor ops and explicit loops over tokens, groups and selected experts,
// sharing nothing with src/model but the parameters it reads. Slow; for small shapes only.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "config/config.h"
#include "model/decoder.h"

namespace gqe::test {

// Rotate-half RoPE of one head vector (size dh) at position `pos`, from the formula.
inline at::Tensor ref_rope(const at::Tensor& x, int64_t pos, double theta) {
  const int64_t dh = x.size(-1), half = dh / 2;
  std::vector<float> cos(dh), sin(dh);
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / dh);
    cos[i] = cos[i + half] = static_cast<float>(std::cos(angle));
    sin[i] = sin[i + half] = static_cast<float>(std::sin(angle));
  }
  const at::Tensor c = at::tensor(cos), s = at::tensor(sin);
  const at::Tensor rotated = at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

// Softmax attention of query q (dh) over keys[0..t] / values[0..t] ([t+1, dh]).
inline at::Tensor ref_attend(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const at::Tensor scores = keys.matmul(q) * scale;
  return scores.softmax(0).matmul(values);
}

// y [B, T, d] of one attention layer on x [B, T, d] (the normed residual).
inline at::Tensor ref_attention(AttentionImpl& attn, const ModelConfig& c, const at::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), N = c.n_heads, G = c.n_kv_heads, dh = c.head_dim;
  const int64_t M = N / G, K = c.attention.top_k;
  const bool gqe = c.attention.type == AttentionType::gqe;
  const GqeVariant variant = c.attention.variant;
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    // Projections and RoPE per position.
    std::vector<at::Tensor> q(T), k(T), v(T), qs(T);
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor xt = x[b][t];
      q[t] = ref_rope(attn.q_proj->weight.matmul(xt).view({N, dh}), t, c.rope_theta);
      k[t] = ref_rope(attn.k_proj->weight.matmul(xt).view({G, dh}), t, c.rope_theta);
      v[t] = attn.v_proj->weight.matmul(xt).view({G, dh});
      if (gqe && variant == GqeVariant::gqe) qs[t] = ref_rope(attn.q_shared->weight.matmul(xt), t, c.rope_theta);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<at::Tensor> ks, vs;
      for (int64_t s = 0; s <= t; ++s) ks.push_back(k[s]), vs.push_back(v[s]);
      const at::Tensor K_all = at::stack(ks), V_all = at::stack(vs);  // [t+1, G, dh]
      std::vector<at::Tensor> slots;
      if (!gqe) {
        for (int64_t h = 0; h < N; ++h)
          slots.push_back(ref_attend(q[t][h], K_all.select(1, h / M), V_all.select(1, h / M)));
      } else {
        const at::Tensor probs = attn.router->weight.matmul(x[b][t]).view({G, M}).softmax(-1);
        std::vector<at::Tensor> outs, weights;
        for (int64_t g = 0; g < G; ++g) {
          std::vector<int64_t> order(M);
          std::iota(order.begin(), order.end(), 0);
          const at::Tensor p = probs[g].detach();
          std::stable_sort(order.begin(), order.end(),
                           [&](int64_t i, int64_t j) { return p[i].item<float>() > p[j].item<float>(); });
          for (int64_t r = 0; r < K; ++r) {
            const int64_t e = order[r];
            const at::Tensor o = ref_attend(q[t][g * M + e], K_all.select(1, g), V_all.select(1, g));
            outs.push_back(o);
            weights.push_back(probs[g][e]);
            slots.push_back(variant == GqeVariant::weighted_concat ? o * probs[g][e] : o);
          }
        }
        if (variant == GqeVariant::gqe) {
          at::Tensor total = at::zeros({}), mixed = at::zeros({dh});
          for (const auto& w : weights) total = total + w;
          for (size_t i = 0; i < outs.size(); ++i) mixed = mixed + weights[i] / total * outs[i];
          slots.push_back(mixed);
          slots.push_back(ref_attend(qs[t], K_all.mean(1), V_all.mean(1)));
        }
      }
      rows.push_back(attn.o_proj->weight.matmul(at::cat(slots)));
    }
  }
  return at::stack(rows).view({B, T, -1});
}

inline at::Tensor ref_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x / (x.pow(2).mean(-1, true) + eps).sqrt() * weight;
}

// Logits of the whole decoder, from its parameters.
inline at::Tensor ref_decoder(DecoderImpl& model, const at::Tensor& tokens) {
  const ModelConfig& c = model.config();
  at::Tensor h = model.model->embed_tokens->weight.index_select(0, tokens.flatten()).view(
      {tokens.size(0), tokens.size(1), c.d_model});
  for (const auto& module : *model.model->layers) {
    auto& layer = *module->as<DecoderLayer>();
    h = h + ref_attention(*layer.self_attn, c, ref_rms_norm(h, layer.input_layernorm->weight, c.norm_eps));
    const at::Tensor n = ref_rms_norm(h, layer.post_attention_layernorm->weight, c.norm_eps);
    const auto& mlp = *layer.mlp;
    h = h + at::matmul(at::silu(at::matmul(n, mlp.gate_proj->weight.t())) * at::matmul(n, mlp.up_proj->weight.t()),
                       mlp.down_proj->weight.t());
  }
  h = ref_rms_norm(h, model.model->norm->weight, c.norm_eps);
  const at::Tensor out = model.lm_head ? model.lm_head->weight : model.model->embed_tokens->weight;
  return at::matmul(h, out.t());
}

}  // namespace gqe::test
