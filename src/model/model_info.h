// Accounting of a model config without building it: parameter counts per part, attention heads,
// FLOPs per token (with the convention spelled out), and a training memory estimate. `gqe info`
// prints it; tests check the counts against the real module; config validation runs it to refuse
// sizes whose counts overflow. No torch here (it is part of the config library).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "config/config.h"

namespace gqe {

// A count of the config's model (parameters, the logits of a batch) that overflows 64 bits.
// `key` names the size most out of proportion, the one to blame.
struct SizeOverflow : std::runtime_error {
  SizeOverflow(std::string key, int64_t value);
  std::string key;
};

struct LayerParams {
  int64_t q_proj = 0, k_proj = 0, v_proj = 0, o_proj = 0, router = 0, q_shared = 0;
  int64_t mlp = 0, norms = 0;
  int64_t attention() const { return q_proj + k_proj + v_proj + o_proj + router + q_shared; }
  int64_t total() const { return attention() + mlp + norms; }
};

struct ModelInfo {
  LayerParams layer;        // one decoder layer (all layers are alike)
  int64_t embedding = 0;    // embed_tokens
  int64_t lm_head = 0;      // 0 when tied to the embedding
  int64_t final_norm = 0;
  int64_t total = 0;
  int64_t non_embedding = 0;       // total - embedding - lm_head
  int64_t active_per_token = 0;    // total minus the q_proj rows of experts a token does not select

  int64_t query_heads = 0;         // N
  int64_t kv_heads = 0;            // G
  int64_t experts_per_group = 0;   // M
  int64_t active_query_heads = 0;  // query-attention computations per token: N, or k*G (+1 shared)
  int64_t output_slots = 0;        // head-sized inputs of o_proj
  int64_t kv_cache_values_per_token = 0;

  // Training FLOPs per token at seq_len T (forward + backward = 3 x forward):
  //   6 * matmul_params + 6 * n_layers * active_query_heads * head_dim * T
  // matmul_params counts every weight used in a matrix product, the output projection included
  // even when tied (q_proj densely: training computes all of it, then gathers). The attention
  // term counts the causal half of the T x T scores (as llm.c; nanoGPT/PaLM count the full matrix,
  // 12 * ... instead of 6 * ...).
  int64_t matmul_params = 0;
  int64_t seq_len = 0;
  double train_flops_matmul = 0, train_flops_attention = 0;
  double train_flops_per_token() const { return train_flops_matmul + train_flops_attention; }
  double forward_flops_per_token() const { return train_flops_per_token() / 3.0; }

  // Training memory per rank, bytes (estimate): fp32 weights + fp32 grads + AdamW's two moments
  // (1/W of them with dist.shard_optimizer, and the reduced 1/W of the gradient), plus
  // activations of one micro-batch.
  double weights_bytes = 0, grads_bytes = 0, optimizer_bytes = 0, activation_bytes = 0;
  // What training certainly holds: the weights, gradients and moments, and of one micro-batch's
  // activations at least the logits and one input per layer. More than the device's memory: the
  // run cannot fit. (The estimate above counts everything and is an estimate.)
  double min_activation_bytes = 0;
  double state_bytes() const { return weights_bytes + grads_bytes + optimizer_bytes; }
  double min_training_bytes() const { return state_bytes() + min_activation_bytes; }
  double training_bytes() const { return state_bytes() + activation_bytes; }
};

// Throws SizeOverflow when a count does not fit 64 bits. `world`: the data-parallel ranks, which
// share the AdamW moments with dist.shard_optimizer.
ModelInfo describe_model(const Config& config, int world = 1);

// What a forward pass over one sequence of `tokens` certainly holds: the fp32 weights, and the
// residual stream, the normed input, q, k and v of a layer for every token (fp32).
double min_prefill_bytes(const Config& config, int64_t tokens);

// Whether a need of memory fits what a device has, as `gqe info` and `gqe train` report it.
struct MemoryVerdict {
  bool fits = true;      // the certain need fits
  bool estimate_fits = true;
  std::string text;      // one line: the device, what is available, the verdict
};
// `available`: bytes the device has free (nothing: unknown), shared by `ranks` processes.
MemoryVerdict memory_verdict(const ModelInfo& info, const std::string& device, std::optional<double> available, int ranks = 1);

// "1.50 GiB"
std::string gib(double bytes);

// The text `gqe info` prints.
std::string format_model_info(const Config& config, const ModelInfo& info);

}  // namespace gqe
