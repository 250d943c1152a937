#include "model/activation_checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <ATen/autocast_mode.h>

#include "model/autocast.h"

namespace gqe {
namespace {

// The backward of one checkpointed block: its inputs are x and the parameters, in that order.
// A Node of our own rather than an autograd::Function, because it keeps a C++ callable.
class RecomputeBackward : public torch::autograd::Node {
 public:
  RecomputeBackward(Block block, at::Tensor x, std::vector<at::Tensor> params, bool autocast)
      : block_(std::move(block)), x_(std::move(x)), params_(std::move(params)), autocast_(autocast) {}

  std::vector<size_t> outputs_with_grad;  // grads[j] is the gradient of output outputs_with_grad[j]

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    TORCH_CHECK(block_, "a checkpointed block was differentiated twice (its saved input is freed after the first)");
    const at::Tensor x = x_.detach().requires_grad_(true);
    std::vector<at::Tensor> outputs;
    {
      at::AutoGradMode grad_mode(true);
      AutocastScope autocast(x.device().type(), autocast_);
      outputs = block_(x);
    }
    std::vector<at::Tensor> ys, dys;
    for (size_t j = 0; j < grads.size(); ++j)
      if (const at::Tensor& y = outputs.at(outputs_with_grad[j]); grads[j].defined() && y.requires_grad())
        ys.push_back(y), dys.push_back(grads[j]);
    std::vector<at::Tensor> wrt{x};
    for (const at::Tensor& p : params_)
      if (p.requires_grad()) wrt.push_back(p);
    std::vector<at::Tensor> dwrt = ys.empty() ? std::vector<at::Tensor>(wrt.size())
                                              : torch::autograd::grad(ys, wrt, dys, /*retain_graph=*/false,
                                                                      /*create_graph=*/false, /*allow_unused=*/true);
    // Back in the order of the inputs, nothing for parameters that need no gradient.
    torch::autograd::variable_list out{dwrt[0]};
    size_t next = 1;
    for (const at::Tensor& p : params_) out.push_back(p.requires_grad() ? dwrt[next++] : at::Tensor());
    return out;
  }

  std::string name() const override { return "gqe::RecomputeBackward"; }
  void release_variables() override {
    block_ = nullptr;
    x_.reset();
    params_.clear();
  }

 private:
  Block block_;
  at::Tensor x_;  // detached: the node keeps the value, not the graph behind it
  std::vector<at::Tensor> params_;
  bool autocast_;
};

}  // namespace

std::vector<at::Tensor> checkpointed(const Block& block, const at::Tensor& x, const std::vector<at::Tensor>& params,
                                     size_t differentiable) {
  bool needs_grad = x.requires_grad();
  for (const at::Tensor& p : params) needs_grad = needs_grad || p.requires_grad();
  if (!at::GradMode::is_enabled() || !needs_grad) return block(x);

  std::vector<at::Tensor> outputs;
  {
    at::NoGradGuard no_grad;  // the point: no activations saved
    outputs = block(x);
  }
  auto node = std::shared_ptr<RecomputeBackward>(
      new RecomputeBackward(block, x.detach(), params, at::autocast::is_autocast_enabled(x.device().type())),
      torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(x, params));
  for (size_t i = 0; i < outputs.size() && i < differentiable; ++i)
    if (outputs[i].is_floating_point()) {
      torch::autograd::create_gradient_edge(outputs[i], node);
      node->outputs_with_grad.push_back(i);
    }
  return outputs;
}

}  // namespace gqe
