// Gradient clipping (docs/training.md): none, a global-norm threshold, or ZClip (Kumar et al.
// 2025): z-score of the gradient norm against EMAs of its mean and variance. The decision is
// made on the norm's device, in fp64 tensors, so that a training step never waits for the
// device to learn it; the state is part of every checkpoint.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>

#include "checkpoint/trainer_state.h"
#include "config/config.h"

namespace gqe {


class GradClipper {
 public:
  GradClipper(const ClipConfig& config, at::Device device);

  // The factor for a step's gradients (0-dim fp64 on the norm's device; 1: untouched) from its
  // global gradient norm, and the threshold clipped to where the factor is < 1. `counts` (0-dim
  // bool): whether the step is taken; a skipped step's norm leaves the state alone.
  struct Decision {
    at::Tensor scale, threshold;
  };
  Decision decide(const at::Tensor& norm, const at::Tensor& counts);

  // Reading the state waits for the device (a checkpoint does).
  ClipState state() const;
  void restore(const ClipState& state);

 private:
  ClipConfig config_;
  // zclip: initialized (0/1), mean, var, warmup norms seen; then the warmup norms themselves.
  at::Tensor flags_, warmup_;
};

}  // namespace gqe
