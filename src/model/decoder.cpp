#include "model/decoder.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include "model/activation_checkpoint.h"

namespace gqe {

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.d_model, c.norm_eps));
  self_attn = register_module("self_attn", Attention(c));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.d_model, c.norm_eps));
  mlp = register_module("mlp", SwiGLU(c.d_model, c.ffn_hidden));
}

ResidualStream DecoderLayerImpl::forward(const ResidualStream& in, const RotaryTables& rope, AttentionOutput& attn,
                                         LayerKV* cache, int64_t start) {
  // GQE's router reads the normed input in fp32; the projections read it in autocast's dtype.
  const NormedSum x = input_layernorm->add_and_norm(in.h, in.pending, /*fp32_copy=*/static_cast<bool>(self_attn->router));
  attn = self_attn->forward(x.normed, rope, cache, start, x.normed_fp32);
  const NormedSum mid = post_attention_layernorm->add_and_norm(x.sum, attn.y);
  return {mid.sum, mlp(mid.normed)};
}

DecoderBodyImpl::DecoderBodyImpl(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.d_model));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.d_model, c.norm_eps));
}

DecoderImpl::DecoderImpl(const ModelConfig& c) : config_(c) {
  model = register_module("model", DecoderBody(c));
  if (!c.tie_embeddings) lm_head = register_module("lm_head", make_linear(c.d_model, c.vocab_size));
  reset_parameters();
}

void DecoderImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double std = config_.init_std;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layers));
  torch::nn::init::normal_(model->embed_tokens->weight, 0.0, std);
  if (lm_head) torch::nn::init::normal_(lm_head->weight, 0.0, std);
  for (const auto& module : *model->layers) {
    auto& layer = *module->as<DecoderLayer>();
    auto& attn = *layer.self_attn;
    for (auto* linear : {&attn.q_proj, &attn.k_proj, &attn.v_proj}) torch::nn::init::normal_((*linear)->weight, 0.0, std);
    torch::nn::init::normal_(attn.o_proj->weight, 0.0, residual_std);
    if (attn.router) {
      if (config_.attention.router_init == RouterInit::zeros) attn.router->weight.zero_();  // as the reference layer
      else torch::nn::init::normal_(attn.router->weight, 0.0, std);
    }
    if (attn.q_shared) torch::nn::init::normal_(attn.q_shared->weight, 0.0, std);
    torch::nn::init::normal_(layer.mlp->gate_proj->weight, 0.0, std);
    torch::nn::init::normal_(layer.mlp->up_proj->weight, 0.0, std);
    torch::nn::init::normal_(layer.mlp->down_proj->weight, 0.0, residual_std);
    layer.input_layernorm->weight.fill_(1.0);
    layer.post_attention_layernorm->weight.fill_(1.0);
  }
  model->norm->weight.fill_(1.0);
}

KVCache::KVCache(const ModelConfig& c, int64_t batch, int64_t size, at::TensorOptions options) : capacity(size) {
  for (int64_t l = 0; l < c.n_layers; ++l)
    layers.push_back({at::zeros({batch, c.n_kv_heads, size, c.head_dim}, options),
                      at::zeros({batch, c.n_kv_heads, size, c.head_dim}, options)});
}

namespace {

// A layer under activation checkpointing: outputs the new residual stream and, for GQE, the aux loss
// (both differentiable), then the router statistics. The stream goes in and out with nothing
// pending (the MLP output added by the layer, as two tensors would be saved for each layer
// otherwise); the sum is bitwise the one the next norm's fused add would make.
at::Tensor checkpointed_layer(const std::shared_ptr<DecoderLayerImpl>& layer, const at::Tensor& h, const RotaryTables& rope,
                              AttentionOutput& attn) {
  const std::vector<at::Tensor> out = checkpointed(
      [layer, rope](const at::Tensor& x) {
        AttentionOutput a;
        const ResidualStream s = layer->forward({x, {}}, rope, a);
        std::vector<at::Tensor> y{s.h + s.pending};
        if (a.aux.defined()) y.insert(y.end(), {a.aux, a.load, a.entropy});
        return y;
      },
      h, layer->parameters(), /*differentiable=*/2);
  if (out.size() > 1) attn.aux = out[1], attn.load = out[2], attn.entropy = out[3];
  return out[0];
}

}  // namespace

DecoderOutput DecoderImpl::forward(const at::Tensor& tokens, KVCache* cache) { return forward_last(tokens, tokens.size(1), cache); }

DecoderOutput DecoderImpl::forward_last(const at::Tensor& tokens, int64_t last_positions, KVCache* cache) {
  const int64_t T = tokens.size(1), start = cache ? cache->length : 0;
  if (cache && start + T > cache->capacity)
    throw std::invalid_argument("KV cache full: " + std::to_string(start + T) + " positions, room for " +
                                std::to_string(cache->capacity));
  const RotaryTables rope = rotary_tables(start, T, config_.head_dim, config_.rope_theta, tokens.device());
  auto ready = [&](const torch::nn::Module& part) {
    if (parameter_wait_) parameter_wait_(part.parameters());
  };
  DecoderOutput out;
  ready(*model->embed_tokens);
  ResidualStream s{model->embed_tokens(tokens), {}};
  std::vector<at::Tensor> aux;
  for (size_t i = 0; i < model->layers->size(); ++i) {
    const auto layer = model->layers->ptr<DecoderLayerImpl>(i);
    ready(*layer);
    AttentionOutput attn;
    if (checkpoint_layers_ && !cache && at::GradMode::is_enabled()) s = {checkpointed_layer(layer, s.h, rope, attn), {}};
    else s = layer->forward(s, rope, attn, cache ? &cache->layers[i] : nullptr, start);
    if (attn.aux.defined()) {
      aux.push_back(attn.aux);
      out.router.push_back({attn.load, attn.entropy});
    }
  }
  if (cache) cache->length += T;
  if (last_positions < T)
    for (at::Tensor* t : {&s.h, &s.pending})
      if (t->defined()) *t = t->narrow(1, T - last_positions, last_positions);
  ready(*model->norm);
  if (lm_head) ready(*lm_head);
  const at::Tensor h = model->norm->add_and_norm(s.h, s.pending).normed;
  out.logits = lm_head ? lm_head(h) : at::linear(h, model->embed_tokens->weight);
  out.aux_loss = aux.empty() ? at::zeros({}, h.options().dtype(at::kFloat)) : at::stack(aux).sum();
  return out;
}

}  // namespace gqe
