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

// The L2 norm of all the gradients together (0-dim fp64); 0 for none.
at::Tensor gradient_norm(const std::vector<at::Tensor>& grads);

// grads: the optimizer's gradients (reduced over the ranks); norm: of the whole model's gradient
// (gradient_norm of them all; sharded, combined over the ranks); loss: the step's (0-dim).
Update clip_and_step(AdamW& optimizer, GradClipper& clipper, const std::vector<at::Tensor>& grads,
                     const at::Tensor& norm, const at::Tensor& loss, double lr);

}  // namespace gqe
