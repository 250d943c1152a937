// gqe export: a checkpoint as a Hugging Face model directory: model.safetensors (Llama tensor
// names), config.json, generation_config.json, the dataset's tokenizer and a model card
// (README.md). GQA's config is a LlamaForCausalLM config, so transformers loads the directory as
// it is; a GQE export also carries modeling_gqe.py (hf/), named by config.json's auto_map, for
// AutoModelForCausalLM with trust_remote_code=True.
#pragma once

#include <filesystem>

namespace gqe {

struct ExportOptions {
  std::filesystem::path checkpoint;  // a checkpoint directory (run_dir/checkpoints/step_...)
  std::filesystem::path out;
  bool bf16 = false;                 // weights in bf16 instead of the fp32 master copy
};

void export_checkpoint(const ExportOptions& options);

}  // namespace gqe
