// The run configuration: one typed struct per YAML section. Each struct lists its keys once, in
// `fields`, and that list drives reading, writing, unknown-key detection and the reference in
// docs/config.md. Defaults are the paper's GQA 250M setting (docs/model.md).
// Loading (inherit, --set overrides, validation) is in config_loader.h. No torch here.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace gqe {

enum class AttentionType { gqa, gqe };
enum class GqeVariant { gqe, hard_concat, weighted_concat };
enum class RouterInit { zeros, normal };
enum class DeviceKind { auto_, cpu, cuda };
enum class Precision { fp32, bf16 };
enum class ScheduleKind { wsd, cosine };
enum class DecayShape { linear, one_minus_sqrt };
enum class ClipKind { none, norm, zclip };
enum class DistBackend { auto_, nccl, gloo };
enum class LogLevel { debug, info, warn, error };
enum class FusedKernels { auto_, on, off };

// The YAML spelling of each enum value, in declaration order.
template <class E> struct EnumNames;
#define GQE_ENUM_NAMES(E, ...)                                               \
  template <> struct EnumNames<E> {                                          \
    static constexpr std::pair<E, const char*> values[] = {__VA_ARGS__};     \
  };
GQE_ENUM_NAMES(AttentionType, {AttentionType::gqa, "gqa"}, {AttentionType::gqe, "gqe"})
GQE_ENUM_NAMES(GqeVariant, {GqeVariant::gqe, "gqe"}, {GqeVariant::hard_concat, "hard_concat"},
               {GqeVariant::weighted_concat, "weighted_concat"})
GQE_ENUM_NAMES(RouterInit, {RouterInit::zeros, "zeros"}, {RouterInit::normal, "normal"})
GQE_ENUM_NAMES(DeviceKind, {DeviceKind::auto_, "auto"}, {DeviceKind::cpu, "cpu"},
               {DeviceKind::cuda, "cuda"})
GQE_ENUM_NAMES(Precision, {Precision::fp32, "fp32"}, {Precision::bf16, "bf16"})
GQE_ENUM_NAMES(ScheduleKind, {ScheduleKind::wsd, "wsd"}, {ScheduleKind::cosine, "cosine"})
GQE_ENUM_NAMES(DecayShape, {DecayShape::linear, "linear"}, {DecayShape::one_minus_sqrt, "1-sqrt"})
GQE_ENUM_NAMES(ClipKind, {ClipKind::none, "none"}, {ClipKind::norm, "norm"}, {ClipKind::zclip, "zclip"})
GQE_ENUM_NAMES(DistBackend, {DistBackend::auto_, "auto"}, {DistBackend::nccl, "nccl"},
               {DistBackend::gloo, "gloo"})
GQE_ENUM_NAMES(LogLevel, {LogLevel::debug, "debug"}, {LogLevel::info, "info"},
               {LogLevel::warn, "warn"}, {LogLevel::error, "error"})
GQE_ENUM_NAMES(FusedKernels, {FusedKernels::auto_, "auto"}, {FusedKernels::on, "on"}, {FusedKernels::off, "off"})
#undef GQE_ENUM_NAMES

template <class E> const char* enum_name(E value) {
  for (const auto& [v, name] : EnumNames<E>::values)
    if (v == value) return name;
  return "?";
}

struct AttentionConfig {
  AttentionType type = AttentionType::gqa;
  int64_t top_k = 1;                      // GQE: experts selected per group (1 <= k <= M)
  GqeVariant variant = GqeVariant::gqe;   // GQE: how the selected heads reach o_proj
  double aux_coef = 0.01;                 // GQE: weight of the load-balancing loss
  RouterInit router_init = RouterInit::zeros;

  template <class F> void fields(F& f) {
    f("type", type);
    f("top_k", top_k);
    f("variant", variant);
    f("aux_coef", aux_coef);
    f("router_init", router_init);
  }
};

struct ModelConfig {
  int64_t vocab_size = 50304;
  int64_t d_model = 1024;
  int64_t n_layers = 16;
  int64_t n_heads = 16;     // query heads N (the routed experts for GQE)
  int64_t n_kv_heads = 8;   // key/value heads G = GQA groups
  int64_t head_dim = 64;
  int64_t ffn_hidden = 3072;
  double norm_eps = 1e-5;
  double rope_theta = 10000;
  bool tie_embeddings = true;
  double init_std = 0.02;
  AttentionConfig attention;

  int64_t experts_per_group() const { return n_heads / n_kv_heads; }  // M

  template <class F> void fields(F& f) {
    f("vocab_size", vocab_size);
    f("d_model", d_model);
    f("n_layers", n_layers);
    f("n_heads", n_heads);
    f("n_kv_heads", n_kv_heads);
    f("head_dim", head_dim);
    f("ffn_hidden", ffn_hidden);
    f("norm_eps", norm_eps);
    f("rope_theta", rope_theta);
    f("tie_embeddings", tie_embeddings);
    f("init_std", init_std);
    f("attention", attention);
  }
};

struct DataConfig {
  std::string dataset;      // directory with the shards and their manifest
  int64_t seq_len = 2048;
  int64_t seed = 1234;      // data order only, so arms with other init seeds see the same data

  template <class F> void fields(F& f) {
    f("dataset", dataset);
    f("seq_len", seq_len);
    f("seed", seed);
  }
};

struct OptimizerConfig {
  double lr = 5e-4;         // peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-7;
  double weight_decay = 0.1;  // on matrices only; norms never decay
  bool decay_embeddings = true;

  template <class F> void fields(F& f) {
    f("lr", lr);
    f("beta1", beta1);
    f("beta2", beta2);
    f("eps", eps);
    f("weight_decay", weight_decay);
    f("decay_embeddings", decay_embeddings);
  }
};

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::wsd;
  int64_t warmup_tokens = 3'000'000'000;
  double decay_fraction = 0.2;  // wsd: the last fraction of the budget decays
  DecayShape decay_shape = DecayShape::linear;
  double min_lr = 1e-5;

  template <class F> void fields(F& f) {
    f("kind", kind);
    f("warmup_tokens", warmup_tokens);
    f("decay_fraction", decay_fraction);
    f("decay_shape", decay_shape);
    f("min_lr", min_lr);
  }
};

struct ClipConfig {
  ClipKind kind = ClipKind::zclip;
  double max_norm = 1.0;    // norm: the clip threshold; zclip: the ceiling
  double alpha = 0.97;      // zclip: EMA factor of the gradient-norm mean and variance
  double z_threshold = 2.5; // zclip: clip when the z-score of the norm exceeds this
  int64_t warmup_steps = 25;  // zclip: steps that only collect statistics

  template <class F> void fields(F& f) {
    f("kind", kind);
    f("max_norm", max_norm);
    f("alpha", alpha);
    f("z_threshold", z_threshold);
    f("warmup_steps", warmup_steps);
  }
};

struct CheckpointConfig {
  int64_t every_tokens = 1'000'000'000;
  int64_t keep = 3;         // newest complete checkpoints kept

  template <class F> void fields(F& f) {
    f("every_tokens", every_tokens);
    f("keep", keep);
  }
};

struct TrainConfig {
  int64_t tokens = 30'000'000'000;          // the budget
  int64_t global_batch_tokens = 1'048'576;  // tokens per optimizer step, all ranks together
  int64_t micro_batch_size = 16;            // sequences per rank per forward/backward
  int64_t seed = 0;                         // parameter init and any training-time randomness
  DeviceKind device = DeviceKind::auto_;
  Precision precision = Precision::bf16;
  int64_t threads = 0;                      // CPU intra-op threads; 0 = cores / ranks on this machine
  int64_t max_skipped_steps = 10;           // non-finite steps in a row before giving up
  bool activation_checkpointing = false;    // keep each layer's input only; recompute the layer in backward
  FusedKernels fused_kernels = FusedKernels::auto_;  // our CUDA kernels: auto = checked on first use
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  ClipConfig clip;
  CheckpointConfig checkpoint;

  template <class F> void fields(F& f) {
    f("tokens", tokens);
    f("global_batch_tokens", global_batch_tokens);
    f("micro_batch_size", micro_batch_size);
    f("seed", seed);
    f("device", device);
    f("precision", precision);
    f("threads", threads);
    f("max_skipped_steps", max_skipped_steps);
    f("activation_checkpointing", activation_checkpointing);
    f("fused_kernels", fused_kernels);
    f("optimizer", optimizer);
    f("schedule", schedule);
    f("clip", clip);
    f("checkpoint", checkpoint);
  }
};

struct EvalConfig {
  int64_t every_tokens = 500'000'000;  // validation loss interval; 0 = only at the end
  int64_t val_tokens = 10'485'760;     // validation tokens per evaluation
  int64_t batch_size = 16;             // sequences per forward pass
  std::map<std::string, std::string> tasks;  // zero-shot task name -> eval set (gqe-data encode-eval)

  template <class F> void fields(F& f) {
    f("every_tokens", every_tokens);
    f("val_tokens", val_tokens);
    f("batch_size", batch_size);
    f("tasks", tasks);
  }
};

constexpr int64_t kMaxTimeoutSeconds = 86400;

struct DistConfig {
  DistBackend backend = DistBackend::auto_;  // auto: NCCL on CUDA, Gloo on CPU
  int64_t timeout_s = 600;                   // how long a rank waits for the others (docs/distributed.md)
  int64_t bucket_mb = 25;                    // gradient reduction bucket size
  bool shard_optimizer = false;              // ZeRO-1: each rank keeps and updates 1/W of the AdamW state
  bool overlap_grad_reduce = true;           // reduce buckets during the backward pass
  bool overlap_param_gather = true;          // sharded: gather parameters during the next forward pass
  Precision reduce_dtype = Precision::fp32;  // the gradient collectives' type (bf16 halves the traffic)
  int64_t check_replicas_every_steps = 0;    // compare parameter hashes across ranks (0: never)

  template <class F> void fields(F& f) {
    f("backend", backend);
    f("timeout_s", timeout_s);
    f("bucket_mb", bucket_mb);
    f("shard_optimizer", shard_optimizer);
    f("overlap_grad_reduce", overlap_grad_reduce);
    f("overlap_param_gather", overlap_param_gather);
    f("reduce_dtype", reduce_dtype);
    f("check_replicas_every_steps", check_replicas_every_steps);
  }
};

struct LogConfig {
  std::string name;          // run name; empty = the config file's stem
  std::string dir = "runs";  // run directory is dir/name unless --run-dir is given
  int64_t every_steps = 10;
  LogLevel level = LogLevel::info;
  bool tensorboard = true;   // event files beside metrics.jsonl

  template <class F> void fields(F& f) {
    f("name", name);
    f("dir", dir);
    f("every_steps", every_steps);
    f("level", level);
    f("tensorboard", tensorboard);
  }
};

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  EvalConfig eval;
  DistConfig dist;
  LogConfig log;

  template <class F> void fields(F& f) {
    f("model", model);
    f("data", data);
    f("train", train);
    f("eval", eval);
    f("dist", dist);
    f("log", log);
  }
};

}  // namespace gqe
