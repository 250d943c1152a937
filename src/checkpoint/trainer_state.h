// What a checkpoint's state.json holds besides the tensors: where the run stands (steps, tokens,
// the data position, the clipping statistics, the skip counters, the random generators). The
// trainer fills it; checkpoints write and verify it. No torch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"

namespace gqe {

// Gradient clipping's state (train/clipping.h), as a checkpoint stores it.
struct ClipState {
  bool initialized = false;           // zclip: warmup done, EMAs valid
  double mean = 0, var = 0;           // zclip: EMA of the norm and of its squared deviation
  std::vector<double> warmup_norms;   // zclip: norms seen during warmup
};

struct TrainerState {
  int64_t step = 0;                 // optimizer steps done
  int64_t tokens = 0;               // tokens seen
  LoaderPosition loader;            // where the next global batch starts
  uint64_t samples_per_epoch = 0;   // with dataset_id: the data the position refers to
  std::string dataset_id;
  ClipState clip;
  int64_t skipped_steps = 0;        // non-finite steps, in total and in a row
  int64_t skipped_in_a_row = 0;
  double elapsed_s = 0;             // training wall time so far
  std::vector<std::string> cpu_rng, cuda_rng;  // torch generator states (hex), one per rank
};

}  // namespace gqe
