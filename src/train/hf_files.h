// Files a Hugging Face export carries besides the weights, compiled in from hf/.
#pragma once

namespace gqe {

// hf/modeling_gqe.py: GqeConfig and GqeForCausalLM for transformers (trust_remote_code).
extern const char* const kModelingGqePy;

}  // namespace gqe
