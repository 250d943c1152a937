// Text generation with a KV cache (docs/evaluation.md): the prompt is run once, then one token at a
// time; GQE routes every new token as in training, keys and values cached as for GQA.
#pragma once

#include <cstdint>
#include <vector>

#include "model/decoder.h"

namespace gqe {

struct SampleOptions {
  int64_t max_tokens = 200;
  double temperature = 0.8;  // 0: greedy (argmax), deterministic
  int64_t top_k = 0;         // keep the k most likely tokens (0: all)
  double top_p = 1.0;        // keep the smallest set of tokens whose probability reaches p
  uint64_t seed = 0;
  int32_t stop_token = -1;   // stop after generating this id (EOS), if >= 0
};

// The generated ids (without the prompt). prompt must not be empty.
std::vector<int32_t> generate(DecoderImpl& model, const std::vector<int32_t>& prompt, const SampleOptions& options);

}  // namespace gqe
