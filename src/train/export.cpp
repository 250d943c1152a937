#include "train/export.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "data/dataset.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace gqe {
namespace {

ordered_json hf_config(const Config& c, const TrainerState& state, const Manifest* manifest, bool bf16) {
  const ModelConfig& m = c.model;
  const bool gqe = m.attention.type == AttentionType::gqe;
  ordered_json j = {
      {"architectures", {gqe ? "GqeForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", gqe ? "gqe" : "llama"},
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.d_model},
      {"intermediate_size", m.ffn_hidden},
      {"num_hidden_layers", m.n_layers},
      {"num_attention_heads", m.n_heads},
      {"num_key_value_heads", m.n_kv_heads},
      {"head_dim", m.head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", c.data.seq_len},
      {"rms_norm_eps", m.norm_eps},
      {"rope_theta", m.rope_theta},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", m.tie_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"initializer_range", m.init_std},
      {"use_cache", true},
      {"torch_dtype", bf16 ? "bfloat16" : "float32"},
      {"gqe_checkpoint", {{"step", state.step}, {"tokens", state.tokens}}},
  };
  if (manifest) {
    j["bos_token_id"] = manifest->tokenizer.bos_id;
    j["eos_token_id"] = manifest->tokenizer.eos_id;
    j["pad_token_id"] = manifest->tokenizer.pad_id;
  }
  if (gqe)
    j["gqe"] = {{"experts_per_group", m.experts_per_group()},
                {"top_k", m.attention.top_k},
                {"variant", enum_name(m.attention.variant)},
                {"aux_coef", m.attention.aux_coef},
                {"output_slots", m.attention.top_k * m.n_kv_heads + (m.attention.variant == GqeVariant::gqe ? 2 : 0)},
                {"description", "Grouped Query Experts (arXiv 2606.20945): per token and KV group a router picks top_k "
                                "of the group's query heads; see the gqe project's docs/model.md"}};
  return j;
}

}  // namespace

void export_checkpoint(const ExportOptions& o) {
  const Checkpoint checkpoint = load_checkpoint(o.checkpoint);
  const fs::path run_dir = fs::absolute(o.checkpoint).lexically_normal().parent_path().parent_path();
  const fs::path config_file = run_dir / "config.yaml";
  if (!fs::exists(config_file))
    throw UserError(fmt::format("{}: no config.yaml two levels up ({}); is this a checkpoint of a gqe run?",
                                o.checkpoint.string(), config_file.string()));
  const Config config = load_config(config_file.string()).config;
  if (fs::exists(o.out) && !fs::is_empty(o.out))
    throw UserError(fmt::format("{}: already exists and is not empty", o.out.string()));

  std::optional<Manifest> manifest;
  if (!config.data.dataset.empty() && fs::exists(fs::path(config.data.dataset) / "manifest.json"))
    manifest = read_manifest(config.data.dataset);

  StagedDir staged(o.out);  // o.out.partial until everything is written
  const fs::path& tmp = staged.path();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : checkpoint.model) tensors.emplace_back(name, o.bf16 ? t.to(at::kBFloat16) : t);
  write_safetensors(tmp / "model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(tmp / "config.json", hf_config(config, checkpoint.state, manifest ? &*manifest : nullptr, o.bf16).dump(2) + "\n");
  if (manifest) {
    write_file_atomic(tmp / "tokenizer.model", read_file(tokenizer_path(config.data.dataset, *manifest)));
    const ordered_json tok = {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", false}, {"add_eos_token", false},
                              {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"},
                              {"legacy", true}, {"add_prefix_space", false}, {"model_max_length", config.data.seq_len}};
    write_file_atomic(tmp / "tokenizer_config.json", tok.dump(2) + "\n");
  }
  write_file_atomic(tmp / "gqe_config.yaml", to_yaml(config));
  staged.commit();
}

}  // namespace gqe
