#include "model/model_info.h"

#include <fmt/format.h>

#include <string>

namespace gqe {
namespace {

// 1234567 -> "1,234,567"
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

}  // namespace

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / (1024.0 * 1024.0 * 1024.0)); }

SizeOverflow::SizeOverflow(std::string k, int64_t value)
    : std::runtime_error(fmt::format("{} is too large: the model's counts overflow 64 bits", value)), key(std::move(k)) {}

namespace {

// The size to blame for an overflow: the one furthest above what it usually is.
SizeOverflow overflow(const Config& c) {
  const std::pair<const char*, std::pair<int64_t, double>> sizes[] = {
      {"model.vocab_size", {c.model.vocab_size, 65536.0}}, {"model.d_model", {c.model.d_model, 8192.0}},
      {"model.n_layers", {c.model.n_layers, 128.0}},        {"model.n_heads", {c.model.n_heads, 128.0}},
      {"model.n_kv_heads", {c.model.n_kv_heads, 128.0}},    {"model.head_dim", {c.model.head_dim, 256.0}},
      {"model.ffn_hidden", {c.model.ffn_hidden, 32768.0}},  {"data.seq_len", {c.data.seq_len, 8192.0}},
      {"train.micro_batch_size", {c.train.micro_batch_size, 64.0}}, {"eval.batch_size", {c.eval.batch_size, 64.0}}};
  const auto* worst = &sizes[0];
  for (const auto& s : sizes)
    if (static_cast<double>(s.second.first) / s.second.second > static_cast<double>(worst->second.first) / worst->second.second)
      worst = &s;
  return SizeOverflow(worst->first, worst->second.first);
}

}  // namespace

ModelInfo describe_model(const Config& config, int world) {
  const ModelConfig& m = config.model;
  const AttentionConfig& a = m.attention;
  const bool gqe = a.type == AttentionType::gqe;
  // Every count in 64 bits, checked: absurd sizes are a config error, not undefined behaviour.
  auto mul = [&config](int64_t x, int64_t y) {
    int64_t r = 0;
    if (__builtin_mul_overflow(x, y, &r)) throw overflow(config);
    return r;
  };
  auto add = [&config](int64_t x, int64_t y) {
    int64_t r = 0;
    if (__builtin_add_overflow(x, y, &r)) throw overflow(config);
    return r;
  };
  const int64_t d = m.d_model, dh = m.head_dim, N = m.n_heads, G = m.n_kv_heads, M = m.experts_per_group();
  ModelInfo info;
  info.query_heads = N;
  info.kv_heads = G;
  info.experts_per_group = M;
  info.output_slots = !gqe ? N : add(mul(a.top_k, G), a.variant == GqeVariant::gqe ? 2 : 0);
  info.active_query_heads = !gqe ? N : add(mul(a.top_k, G), a.variant == GqeVariant::gqe ? 1 : 0);

  LayerParams& l = info.layer;
  const int64_t head_params = mul(dh, d);
  l.q_proj = mul(N, head_params);
  l.k_proj = l.v_proj = mul(G, head_params);
  l.o_proj = mul(info.output_slots, head_params);
  l.router = gqe ? mul(N, d) : 0;  // (G * M) x d
  l.q_shared = gqe && a.variant == GqeVariant::gqe ? head_params : 0;
  l.mlp = mul(3, mul(d, m.ffn_hidden));
  l.norms = mul(2, d);
  int64_t layer_total = 0;
  for (int64_t part : {l.q_proj, l.k_proj, l.v_proj, l.o_proj, l.router, l.q_shared, l.mlp, l.norms})
    layer_total = add(layer_total, part);

  info.embedding = mul(m.vocab_size, d);
  info.lm_head = m.tie_embeddings ? 0 : info.embedding;
  info.final_norm = d;
  info.total = add(add(mul(m.n_layers, layer_total), info.embedding), add(info.lm_head, info.final_norm));
  info.non_embedding = info.total - info.embedding - info.lm_head;
  const int64_t unselected_q = gqe ? (N - a.top_k * G) * dh * d : 0;  // at most q_proj
  info.active_per_token = info.total - m.n_layers * unselected_q;
  info.kv_cache_values_per_token = mul(mul(2, m.n_layers), mul(G, dh));
  // The logits of a micro-batch and of an evaluation batch are single tensors: their element
  // counts must fit too.
  mul(mul(config.train.micro_batch_size, config.data.seq_len), m.vocab_size);
  mul(mul(config.eval.batch_size, config.data.seq_len), m.vocab_size);

  info.matmul_params = add(mul(m.n_layers, layer_total - l.norms), info.embedding);
  info.seq_len = config.data.seq_len;
  info.train_flops_matmul = 6.0 * static_cast<double>(info.matmul_params);
  info.train_flops_attention = 6.0 * static_cast<double>(m.n_layers) * static_cast<double>(info.active_query_heads) *
                               static_cast<double>(dh) * static_cast<double>(info.seq_len);

  // Memory: weights and grads fp32, AdamW keeps two fp32 moments.
  const double P = static_cast<double>(info.total);
  info.weights_bytes = 4 * P;
  const double shards = config.dist.shard_optimizer ? static_cast<double>(world) : 1.0;
  info.grads_bytes = 4 * P + (config.dist.shard_optimizer ? 4 * P / shards : 0.0);
  info.optimizer_bytes = 8 * P / shards;
  // Activations kept for backward, per token and layer (elements): the two norms' inputs and fp32
  // intermediates (~6d), q/k/v before and after RoPE, attention output and o_proj input, and four
  // ffn_hidden-sized SwiGLU tensors; plus fp32 logits and their gradient per token.
  const double D = static_cast<double>(d), Dh = static_cast<double>(dh), L = static_cast<double>(m.n_layers);
  const double per_token_layer = 6 * D + 2 * static_cast<double>(info.active_query_heads + 2 * G) * Dh +
                                 2 * static_cast<double>(info.output_slots) * Dh + 4 * static_cast<double>(m.ffn_hidden);
  const double act_bytes = config.train.precision == Precision::bf16 ? 2.0 : 4.0;
  const double tokens = static_cast<double>(config.train.micro_batch_size) * static_cast<double>(config.data.seq_len);
  const double V = static_cast<double>(m.vocab_size);
  // With activation checkpointing a layer keeps only its fp32 input, and one layer at a time holds
  // the rest while it is recomputed.
  const double kept_layers = config.train.activation_checkpointing ? 1.0 : L;
  const double checkpoints = config.train.activation_checkpointing ? L * D * 4.0 : 0.0;
  info.activation_bytes = tokens * (kept_layers * per_token_layer * act_bytes + checkpoints + 8.0 * V);
  info.min_activation_bytes = tokens * (V + L * D) * act_bytes;
  return info;
}

double min_prefill_bytes(const Config& config, int64_t tokens) {
  const ModelConfig& m = config.model;
  const double per_token = static_cast<double>(2 * m.d_model + (m.n_heads + 2 * m.n_kv_heads) * m.head_dim);
  return describe_model(config).weights_bytes + static_cast<double>(tokens) * per_token * 4.0;
}

MemoryVerdict memory_verdict(const ModelInfo& info, const std::string& device, std::optional<double> available, int ranks) {
  MemoryVerdict v;
  const double need = info.min_training_bytes() * ranks, estimate = info.training_bytes() * ranks;
  const std::string per = ranks > 1 ? fmt::format(" for {} ranks", ranks) : "";
  if (!available) {
    v.text = fmt::format("memory on {}: not known here, not checked (estimate {}{})", device, gib(estimate), per);
    return v;
  }
  v.fits = need <= *available;
  v.estimate_fits = estimate <= *available;
  const std::string head = fmt::format("memory on {}: {} available", device, gib(*available));
  if (!v.fits)
    v.text = fmt::format("{}: does not fit: the weights, gradients, AdamW moments, logits and layer inputs alone need "
                         "{}{} (estimate in all {})", head, gib(need), per, gib(estimate));
  else if (!v.estimate_fits)
    v.text = fmt::format("{}: may not fit: the estimate is {}{} (at least {}); train.activation_checkpointing or a "
                         "lower train.micro_batch_size need less", head, gib(estimate), per, gib(need));
  else
    v.text = fmt::format("{}: fits (estimate {}{})", head, gib(estimate), per);
  return v;
}

std::string format_model_info(const Config& config, const ModelInfo& info) {
  const ModelConfig& m = config.model;
  const AttentionConfig& a = m.attention;
  const bool gqe = a.type == AttentionType::gqe;
  const LayerParams& l = info.layer;
  const int64_t d = m.d_model, dh = m.head_dim;
  std::string s;
  auto line = [&s](const std::string& label, int64_t n, const std::string& note = "") {
    s += fmt::format("  {:<34}{:>15}{}\n", label, grouped(n), note.empty() ? "" : "   " + note);
  };

  if (gqe)
    s += fmt::format("attention: gqe (variant {}, top_k {} of {} experts per group)\n\n", enum_name(a.variant),
                     a.top_k, info.experts_per_group);
  else
    s += "attention: gqa\n\n";

  s += "parameters\n";
  line("total", info.total);
  line(m.tie_embeddings ? "embedding (tied with output)" : "embedding", info.embedding);
  if (info.lm_head) line("lm_head", info.lm_head);
  line("non-embedding", info.non_embedding);
  if (gqe) line("active per token", info.active_per_token, "(q_proj rows of unselected experts excluded)");

  s += fmt::format("\nper layer (x{})\n", m.n_layers);
  line("attention", l.attention());
  line(fmt::format("  q_proj    {} -> {}x{}", d, info.query_heads, dh), l.q_proj);
  line(fmt::format("  k_proj    {} -> {}x{}", d, info.kv_heads, dh), l.k_proj);
  line(fmt::format("  v_proj    {} -> {}x{}", d, info.kv_heads, dh), l.v_proj);
  line(fmt::format("  o_proj    {}x{} -> {}", info.output_slots, dh, d), l.o_proj);
  if (l.router) line(fmt::format("  router    {} -> {}x{}", d, info.kv_heads, info.experts_per_group), l.router);
  if (l.q_shared) line(fmt::format("  q_shared  {} -> {}", d, dh), l.q_shared);
  line(fmt::format("mlp (SwiGLU {} -> {})", d, m.ffn_hidden), l.mlp);
  line("norms", l.norms);
  line("layer total", l.total());
  s += "\n";
  line("final norm", info.final_norm);

  s += "\nattention heads\n";
  s += fmt::format("  query heads N = {}, KV heads (groups) G = {}, experts per group M = {}\n", info.query_heads,
                   info.kv_heads, info.experts_per_group);
  if (gqe) {
    const bool shared = a.variant == GqeVariant::gqe;
    s += fmt::format("  active query heads per token: {} / {}  (k*G = {} routed{})\n", info.active_query_heads,
                     info.query_heads, a.top_k * info.kv_heads, shared ? " + 1 shared" : "");
    s += fmt::format("  o_proj input slots: {}  ({} hard{})\n", info.output_slots, a.top_k * info.kv_heads,
                     shared ? " + 1 weighted sum + 1 shared" : "");
  } else {
    s += fmt::format("  active query heads per token: {} / {}\n", info.active_query_heads, info.query_heads);
  }
  s += fmt::format("  KV cache per token: {} values (2 x {} layers x {} KV heads x {})\n",
                   grouped(info.kv_cache_values_per_token), m.n_layers, info.kv_heads, dh);

  s += fmt::format("\ntraining FLOPs per token at seq_len {}: {:.4g} GFLOP\n", info.seq_len,
                   info.train_flops_per_token() / 1e9);
  s += fmt::format("  = 6 x {} matmul params                          {:.4g} GFLOP\n", grouped(info.matmul_params),
                   info.train_flops_matmul / 1e9);
  s += fmt::format("  + 6 x n_layers {} x active heads {} x head_dim {} x T {}   {:.4g} GFLOP\n", m.n_layers,
                   info.active_query_heads, dh, info.seq_len, info.train_flops_attention / 1e9);
  s += "  convention: forward + backward = 3 x forward; matmul params include the output projection\n"
       "  (tied or not) and q_proj in full; attention counts the causal half of the T x T scores (llm.c);\n"
       "  nanoGPT/PaLM count the full matrix (12 x instead of 6 x in the second term).\n";
  s += fmt::format("forward (prefill) FLOPs per token: {:.4g} GFLOP\n", info.forward_flops_per_token() / 1e9);

  s += fmt::format("\ntraining memory per rank (estimate; micro-batch {} x {}, {} activations)\n",
                   config.train.micro_batch_size, config.data.seq_len, enum_name(config.train.precision));
  s += fmt::format("  weights fp32 {}, grads fp32 {}, AdamW moments {}\n", gib(info.weights_bytes),
                   gib(info.grads_bytes), gib(info.optimizer_bytes));
  s += fmt::format("  activations ~{}  ({})\n", gib(info.activation_bytes),
                   config.train.activation_checkpointing
                       ? "train.activation_checkpointing: layer inputs, and one layer recomputed at a time"
                       : "if this does not fit: train.activation_checkpointing, or a lower train.micro_batch_size");
  s += fmt::format("  total ~{}\n",
                   gib(info.weights_bytes + info.grads_bytes + info.optimizer_bytes + info.activation_bytes));
  return s;
}

}  // namespace gqe
