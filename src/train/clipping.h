// Gradient clipping decisions (docs/training.md): none, a global-norm threshold, or ZClip
// (Kumar et al. 2025): z-score of the gradient norm against EMAs of its mean and variance.
// Decides the scale to apply to the gradients; the state is part of every checkpoint. No torch.
#pragma once

#include <cstdint>
#include <vector>

#include "config/config.h"

namespace gqe {

struct ClipState {
  bool initialized = false;           // zclip: warmup done, EMAs valid
  double mean = 0, var = 0;           // zclip: EMA of the norm and of its squared deviation
  std::vector<double> warmup_norms;   // zclip: norms seen during warmup
};

struct ClipDecision {
  double scale = 1.0;      // multiply every gradient by this (1: untouched)
  double threshold = 0.0;  // the norm clipped to, when scale < 1
};

class GradClipper {
 public:
  explicit GradClipper(const ClipConfig& config) : config_(config) {}

  // The decision for a step whose (finite) global gradient norm is `norm`; updates the state.
  ClipDecision decide(double norm);

  const ClipState& state() const { return state_; }
  void restore(const ClipState& state) { state_ = state; }

 private:
  ClipConfig config_;
  ClipState state_;
};

}  // namespace gqe
