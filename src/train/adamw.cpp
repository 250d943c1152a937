#include "train/adamw.h"

#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "common/error.h"

namespace gqe {

AdamW::AdamW(const std::vector<OptimizedTensor>& tensors, const OptimizerConfig& config) : config_(config) {
  groups_[0].weight_decay = config.weight_decay;
  groups_[1].weight_decay = 0.0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, p, dims] = tensors[i];
    const bool embedding = name.find("embed_tokens") != std::string::npos || name == "lm_head.weight";
    Group& g = groups_[dims >= 2 && (config.decay_embeddings || !embedding) ? 0 : 1];
    g.names.push_back(name);
    g.index.push_back(i);
    g.params.push_back(p);
    g.exp_avg.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    g.exp_avg_sq.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    g.step.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

void AdamW::step(const std::vector<at::Tensor>& all_grads, double lr, const at::Tensor& grad_factor, const at::Tensor& skip) {
  // ATen's kernel divides the gradients by grad_scale and returns at once where found_inf is 1.
  std::optional<at::Tensor> divisor, found_inf;
  at::Tensor counted;  // 1, or 0 for a skipped step
  if (grad_factor.defined()) divisor = grad_factor.reciprocal().to(at::kFloat);
  if (skip.defined()) {
    found_inf = skip.ne(0).to(at::kFloat);
    counted = 1.0 - *found_inf;
  }
  for (Group& g : groups_) {
    // Parameters without a gradient are left alone, decay included (as in PyTorch).
    std::vector<at::Tensor> params, grads, exp_avg, exp_avg_sq, step;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const at::Tensor& grad = all_grads.at(g.index[i]);
      if (!grad.defined()) continue;
      params.push_back(g.params[i]);
      grads.push_back(grad);
      exp_avg.push_back(g.exp_avg[i]);
      exp_avg_sq.push_back(g.exp_avg_sq[i]);
      step.push_back(g.step[i]);
    }
    if (params.empty()) continue;
    // The kernel reads the incremented count for bias correction; a skipped step does not count.
    if (counted.defined()) at::_foreach_add_(step, counted);
    else at::_foreach_add_(step, 1.0);
    at::_fused_adamw_(params, grads, exp_avg, exp_avg_sq, /*max_exp_avg_sqs=*/{}, step, lr, config_.beta1,
                      config_.beta2, g.weight_decay, config_.eps, /*amsgrad=*/false, /*maximize=*/false, divisor,
                      found_inf);
  }
}

std::map<std::string, at::Tensor> AdamW::state() const {
  std::map<std::string, at::Tensor> out;
  for (const Group& g : groups_)
    for (size_t i = 0; i < g.names.size(); ++i) {
      out[g.names[i] + ".exp_avg"] = g.exp_avg[i];
      out[g.names[i] + ".exp_avg_sq"] = g.exp_avg_sq[i];
    }
  return out;
}

void AdamW::set_steps(int64_t steps) {
  at::NoGradGuard no_grad;
  for (Group& g : groups_)
    for (at::Tensor& step : g.step) step.fill_(static_cast<double>(steps));
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps) {
  at::NoGradGuard no_grad;
  for (Group& g : groups_)
    for (size_t i = 0; i < g.names.size(); ++i) {
      g.exp_avg[i].copy_(tensors.at(g.names[i] + ".exp_avg"));
      g.exp_avg_sq[i].copy_(tensors.at(g.names[i] + ".exp_avg_sq"));
    }
  set_steps(steps);
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const Group& g : groups_)
    for (size_t i = 0; i < g.names.size(); ++i) bytes += static_cast<int64_t>(g.exp_avg[i].nbytes() + g.exp_avg_sq[i].nbytes());
  return bytes;
}

void check_moments(const std::map<std::string, at::Tensor>& tensors,
                   const std::vector<std::pair<std::string, at::Tensor>>& params, const std::string& where) {
  for (const auto& [name, p] : params)
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const auto it = tensors.find(name + suffix);
      if (it == tensors.end()) throw UserError(fmt::format("{}: no optimizer state for {}", where, name + suffix));
      if (it->second.sizes() != p.sizes())
        throw UserError(fmt::format("{}: optimizer state {} has shape {}, the parameter {}", where, it->first,
                                    fmt::join(it->second.sizes(), "x"), fmt::join(p.sizes(), "x")));
    }
}

}  // namespace gqe
