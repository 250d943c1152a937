// gqe export: a checkpoint as a Hugging Face model directory: model.safetensors (Llama tensor
// names), config.json, and the dataset's tokenizer. For GQA the config is a LlamaForCausalLM
// config, so transformers loads the directory as it is; GQE's config describes the extra router
// and shared head, which transformers has no class for.
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
