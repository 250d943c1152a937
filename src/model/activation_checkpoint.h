// Activation checkpointing (recomputation): a block runs without autograd in the forward pass, so
// none of its intermediate activations are kept; the backward pass runs it again from its saved
// input, with autograd, and differentiates that. A block then holds only its input between the
// passes, at the price of one more forward of it.
#pragma once

#include <functional>
#include <vector>

#include <ATen/ATen.h>

namespace gqe {

// block(x) -> its outputs. It must compute the same thing when run again (no randomness), and
// read no tensor requiring gradients other than x and `params`.
using Block = std::function<std::vector<at::Tensor>(const at::Tensor& x)>;

// block(x), with its first `differentiable` outputs carrying gradients to x and `params` (the
// block's parameters); the outputs after those (statistics) carry none. Autocast as it is at this
// call is in force again for the recomputation. Without grad mode, or with nothing requiring
// gradients, it is block(x) itself.
std::vector<at::Tensor> checkpointed(const Block& block, const at::Tensor& x, const std::vector<at::Tensor>& params,
                                     size_t differentiable);

}  // namespace gqe
