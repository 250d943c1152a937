// Learning-rate schedules, expressed in tokens (docs/training.md). The rate of an optimizer step is
// taken at the token count the step reaches (tokens seen + this step's batch), so the first step
// of a warmup already moves.
#pragma once

#include <cstdint>

#include "config/config.h"

namespace gqe {

// wsd: linear warmup to optimizer.lr over schedule.warmup_tokens, constant, then a decay over
// the last decay_fraction of train.tokens to schedule.min_lr (linear, or 1 - sqrt).
// cosine: linear warmup, then a half cosine from optimizer.lr to min_lr at train.tokens.
double learning_rate(const TrainConfig& train, int64_t tokens_after_step);

}  // namespace gqe
