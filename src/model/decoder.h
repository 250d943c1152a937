// The Llama-style decoder (docs/model.md): token embedding, n_layers pre-norm blocks of attention
// (GQA or GQE) and SwiGLU, final RMSNorm, output projection tied to the embedding by default.
// Parameter names are exactly the Hugging Face Llama names ("model.layers.3.self_attn.q_proj.weight").
#pragma once

#include <functional>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "config/config.h"
#include "model/attention.h"
#include "model/layers.h"

namespace gqe {

struct RouterStats {
  at::Tensor load;     // [G, M] fraction of the micro-batch's tokens that picked each expert
  at::Tensor entropy;  // mean router entropy, nats
};

// Keys and values of the positions decoded so far, for each layer (see LayerKV).
struct KVCache {
  KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, at::TensorOptions options);
  std::vector<LayerKV> layers;
  int64_t length = 0;    // positions held
  int64_t capacity = 0;
};

struct DecoderOutput {
  at::Tensor logits;                 // [B, T, vocab]
  // Training mode only (eval mode skips them): 0 and empty for GQA, and for GQE in eval mode.
  at::Tensor aux_loss;               // sum over GQE layers of the load-balancing loss, unscaled
  std::vector<RouterStats> router;   // one per layer for GQE
};

// The residual stream as h + pending: the last sublayer's output (undefined: none) is added by the
// next RMSNorm, in the same kernel (RMSNorm::add_and_norm).
struct ResidualStream {
  at::Tensor h;        // fp32
  at::Tensor pending;  // in the sublayers' dtype (bf16 under autocast)
};

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& config);
  // Returns the new residual stream, its MLP output pending; fills `attn` with the attention's aux
  // outputs.
  ResidualStream forward(const ResidualStream& in, const RotaryTables& rope, AttentionOutput& attn, LayerKV* cache = nullptr,
                         int64_t start = 0);

  RMSNorm input_layernorm{nullptr};
  Attention self_attn{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
  SwiGLU mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// "model." in the parameter names.
class DecoderBodyImpl : public torch::nn::Module {
 public:
  explicit DecoderBodyImpl(const ModelConfig& config);

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(DecoderBody);

class DecoderImpl : public torch::nn::Module {
 public:
  // Parameters are initialised from torch's global generator (seed it first for reproducibility).
  explicit DecoderImpl(const ModelConfig& config);

  // tokens: [B, T] int64 at positions 0..T-1; with a cache, at positions cache->length.. (the
  // cache then holds them too: prefill with the prompt, then one token at a time).
  DecoderOutput forward(const at::Tensor& tokens, KVCache* cache = nullptr);
  // The same, with logits for the last `last_positions` positions only (a prefill or a decoding
  // step needs just the last): [B, last_positions, vocab].
  DecoderOutput forward_last(const at::Tensor& tokens, int64_t last_positions, KVCache* cache = nullptr);

  // normal(0, init_std) for matrices, init_std / sqrt(2 n_layers) for the two projections that
  // write into the residual stream (o_proj, down_proj), ones for norms, router per config.
  void reset_parameters();

  const ModelConfig& config() const { return config_; }

  // Activation checkpointing: with it, a training forward keeps each layer's input only and the
  // backward pass recomputes the layer (train.activation_checkpointing).
  void set_activation_checkpointing(bool on) { checkpoint_layers_ = on; }

  // Called with each part's parameters (the embedding, each layer, the final norm and output) just
  // before a forward pass reads them: a sharded optimizer's all-gathers finish there, overlapping
  // the forward pass (GradientReducer::wait_for).
  using ParameterWait = std::function<void(const std::vector<at::Tensor>&)>;
  void set_parameter_wait(ParameterWait wait) { parameter_wait_ = std::move(wait); }

  DecoderBody model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // only when embeddings are not tied

 private:
  ModelConfig config_;
  bool checkpoint_layers_ = false;
  ParameterWait parameter_wait_;
};
TORCH_MODULE(Decoder);

}  // namespace gqe
