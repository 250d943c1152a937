// The update that ends a training step, decided on the device so that the host never waits for
// it (docs/training.md): the global gradient norm, the skip of a non-finite step, the clipping
// factor, and AdamW with both. `gqe train` and `gqe bench train` take the same update.
#pragma once

#include <vector>

#include <ATen/Tensor.h>

#include "train/adamw.h"
#include "train/clipping.h"

namespace gqe {

struct Update {
  at::Tensor norm;   // 0-dim fp64: the global L2 norm of the gradients, before clipping
  at::Tensor skip;   // 0-dim bool: the loss or the norm was not finite; nothing was updated
  at::Tensor scale;  // 0-dim fp64: the factor the gradients were multiplied by
};

// grads: every gradient of the step (all-reduced); loss: the step's loss (0-dim, any float type).
Update clip_and_step(AdamW& optimizer, GradClipper& clipper, const std::vector<at::Tensor>& grads,
                     const at::Tensor& loss, double lr);

}  // namespace gqe
