#include "train/export.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"
#include "model/model_info.h"
#include "train/hf_files.h"

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
      {"rope_theta", m.rope_theta},  // transformers 4; 5 reads rope_parameters
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", m.rope_theta}}},
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
    // Every document gqe trains on follows an EOS, and gqe scores and samples after one: that is
    // the sequence-start token (transformers' bos) of these models.
    j["bos_token_id"] = manifest->tokenizer.eos_id;
    j["eos_token_id"] = manifest->tokenizer.eos_id;
    j["pad_token_id"] = manifest->tokenizer.pad_id;
  }
  if (gqe) {
    j["auto_map"] = {{"AutoConfig", "modeling_gqe.GqeConfig"}, {"AutoModelForCausalLM", "modeling_gqe.GqeForCausalLM"}};
    j["gqe"] = {{"experts_per_group", m.experts_per_group()},
                {"top_k", m.attention.top_k},
                {"variant", enum_name(m.attention.variant)},
                {"aux_coef", m.attention.aux_coef},
                {"output_slots", m.attention.top_k * m.n_kv_heads + (m.attention.variant == GqeVariant::gqe ? 2 : 0)},
                {"description", "Grouped Query Experts (arXiv 2606.20945): per token and KV group a router picks top_k "
                                "of the group's query heads; see the gqe project's docs/model.md"}};
  }
  return j;
}

// The model card: what the directory holds, where it came from, how to load it.
std::string model_card(const Config& c, const ExportOptions& o, const TrainerState& state, const Manifest* manifest) {
  const ModelConfig& m = c.model;
  const bool gqe = m.attention.type == AttentionType::gqe;
  const ModelInfo info = describe_model(c);
  std::string s = fmt::format("# {} ({} attention)\n\n", c.log.name.empty() ? o.out.filename().string() : c.log.name,
                              gqe ? "GQE" : "GQA");
  s += fmt::format(
      "A {:.1f}M-parameter Llama-style decoder trained with gqe (a C++/LibTorch framework for GQA and GQE), exported "
      "from step {} ({} tokens) by\n\n    gqe export {} --out {}{}\n\n",
      static_cast<double>(info.total) / 1e6, state.step, state.tokens, o.checkpoint.string(), o.out.string(),
      o.bf16 ? " --dtype bf16" : "");
  s += fmt::format("- {} layers, d_model {}, {} query heads, {} KV heads, head_dim {}, SwiGLU {}, vocabulary {}, {} embeddings\n",
                   m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.head_dim, m.ffn_hidden, m.vocab_size,
                   m.tie_embeddings ? "tied" : "untied");
  if (gqe)
    s += fmt::format("- attention: Grouped Query Experts, variant {}, top_k {} of {} experts per KV group ({} of {} query "
                     "heads active per token)\n",
                     enum_name(m.attention.variant), m.attention.top_k, m.experts_per_group(), info.active_query_heads, m.n_heads);
  s += fmt::format("- trained on {} tokens of {} at sequence length {}; RoPE (theta {}) has no hard limit: "
                   "max_position_embeddings is the trained length, and beyond it the model extrapolates\n",
                   state.tokens, c.data.dataset, c.data.seq_len, m.rope_theta);
  s += "- gqe_config.yaml: the run's whole config\n\n## Loading\n\n```python\n"
       "from transformers import AutoModelForCausalLM, AutoTokenizer\n";
  s += fmt::format("model = AutoModelForCausalLM.from_pretrained(\"{}\"{})\n", o.out.string(), gqe ? ", trust_remote_code=True" : "");
  s += fmt::format("tokenizer = AutoTokenizer.from_pretrained(\"{}\"{})  # tokenizer.json: no sentencepiece needed\n```\n\n",
                   o.out.string(), gqe ? ", trust_remote_code=True" : "");
  if (gqe)
    s += "GQE's attention is not Llama's: `modeling_gqe.py` (in this directory, named by `auto_map` in config.json) "
         "defines it, hence `trust_remote_code=True`. Do not load this directory with `LlamaForCausalLM`: it would drop "
         "the router and the shared head (and, where o_proj's shape happens to fit, load without an error) and compute "
         "something else.\n\n";
  if (manifest)
    s += fmt::format("The sequence-start token is the EOS (`</s>`, id {}): every training document follows one, and "
                     "gqe scores and samples after one. The tokenizer puts it in front of every text (`add_bos_token`, "
                     "as `bos_token`), and `generation_config.json` stops at it.\n",
                     manifest->tokenizer.eos_id);
  return s;
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
    const fs::path model = verified_tokenizer(config.data.dataset, *manifest);
    write_file_atomic(tmp / "tokenizer.model", read_file(model));
    // The EOS is the sequence-start token (see hf_config): the tokenizer puts it in front. A fast
    // tokenizer of its own (tokenizer.json), so that no sentencepiece or protobuf is needed.
    write_file_atomic(tmp / "tokenizer.json", Tokenizer(model.string()).hf_tokenizer_json(manifest->tokenizer.eos_id));
    const ordered_json tok = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"add_bos_token", true}, {"add_eos_token", false},
                              {"bos_token", "</s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"},
                              {"clean_up_tokenization_spaces", false}, {"model_max_length", config.data.seq_len}};
    write_file_atomic(tmp / "tokenizer_config.json", tok.dump(2) + "\n");
    const TokenizerEntry& t = manifest->tokenizer;
    write_file_atomic(tmp / "generation_config.json",
                      ordered_json{{"bos_token_id", t.eos_id}, {"eos_token_id", t.eos_id}, {"pad_token_id", t.pad_id}}.dump(2) + "\n");
  }
  if (config.model.attention.type == AttentionType::gqe) write_file_atomic(tmp / "modeling_gqe.py", kModelingGqePy);
  write_file_atomic(tmp / "README.md", model_card(config, o, checkpoint.state, manifest ? &*manifest : nullptr));
  write_file_atomic(tmp / "gqe_config.yaml", to_yaml(config));
  staged.commit();
}

}  // namespace gqe
