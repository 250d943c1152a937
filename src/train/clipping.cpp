#include "train/clipping.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace gqe {
namespace {

constexpr double kEps = 1e-6;

at::Tensor clip_to(const at::Tensor& norm, const at::Tensor& threshold) {
  return at::where(norm > threshold, threshold / (norm + kEps), at::ones_like(norm));
}

}  // namespace

GradClipper::GradClipper(const ClipConfig& config, at::Device device) : config_(config) {
  const auto fp64 = at::TensorOptions().device(device).dtype(at::kDouble);
  flags_ = at::zeros({4}, fp64);
  warmup_ = at::zeros({std::max<int64_t>(config.warmup_steps, 1)}, fp64);
}

GradClipper::Decision GradClipper::decide(const at::Tensor& norm_in, const at::Tensor& counts) {
  const at::Tensor norm = norm_in.to(at::kDouble);
  const at::Tensor max_norm = at::full_like(norm, config_.max_norm);
  switch (config_.kind) {
    case ClipKind::none:
      return {at::ones_like(norm), norm};
    case ClipKind::norm:
      return {clip_to(norm, max_norm), max_norm};
    case ClipKind::zclip:
      break;
  }
  // Every branch is computed and the right one picked with where(), so nothing here is read back.
  const at::Tensor initialized = flags_[0] > 0.5, mean = flags_[1], var = flags_[2], seen = flags_[3];
  const at::Tensor warm = initialized.logical_not();

  // Warmup: collect norms (clipping at max_norm meanwhile), then start the EMAs from their mean
  // and population variance.
  const at::Tensor collect = warm.logical_and(counts);
  warmup_ = at::where(at::arange(warmup_.size(0), warmup_.options()).eq(seen).logical_and(collect), norm, warmup_);
  const at::Tensor seen_now = seen + collect.to(at::kDouble);
  const at::Tensor warmed_up = warm.logical_and(seen_now >= static_cast<double>(config_.warmup_steps));
  const double n = static_cast<double>(warmup_.size(0));
  const at::Tensor warmup_mean = warmup_.sum() / n;
  const at::Tensor warmup_var = (warmup_ - warmup_mean).square().sum() / n;

  // After warmup: an adaptive threshold, the further out the spike, the harder it is pulled in.
  const double zt = config_.z_threshold, alpha = config_.alpha;
  const at::Tensor std = var.sqrt();
  const at::Tensor z = (norm - mean) / (std + kEps);
  const at::Tensor spike = z > zt;
  const at::Tensor effective = at::where(spike, mean + zt * zt * std / z, norm);
  const at::Tensor threshold = at::where(warm, max_norm, at::minimum(effective, max_norm));
  const at::Tensor observed = at::where(spike, effective, norm);
  const at::Tensor next_mean = alpha * mean + (1 - alpha) * observed;
  const at::Tensor next_var = alpha * var + (1 - alpha) * (observed - next_mean) * (observed - next_mean);

  const at::Tensor update = initialized.logical_and(counts);
  flags_ = at::stack({initialized.logical_or(warmed_up).to(at::kDouble),
                      at::where(warmed_up, warmup_mean, at::where(update, next_mean, mean)),
                      at::where(warmed_up, warmup_var, at::where(update, next_var, var)), seen_now});
  return {clip_to(norm, threshold), threshold};
}

ClipState GradClipper::state() const {
  const at::Tensor flags = flags_.cpu(), warmup = warmup_.cpu();
  ClipState s;
  s.initialized = flags[0].item<double>() > 0.5;
  s.mean = flags[1].item<double>();
  s.var = flags[2].item<double>();
  if (!s.initialized) {
    const auto seen = std::min(static_cast<int64_t>(flags[3].item<double>()), warmup.size(0));
    s.warmup_norms.assign(warmup.data_ptr<double>(), warmup.data_ptr<double>() + seen);
  }
  return s;
}

void GradClipper::restore(const ClipState& s) {
  const auto seen = std::min(static_cast<int64_t>(s.warmup_norms.size()), warmup_.size(0));
  at::Tensor warmup = at::zeros({warmup_.size(0)}, at::kDouble);
  std::copy_n(s.warmup_norms.begin(), seen, warmup.data_ptr<double>());
  warmup_ = warmup.to(warmup_.device());
  flags_ = at::tensor({s.initialized ? 1.0 : 0.0, s.mean, s.var, static_cast<double>(seen)}, at::kDouble).to(flags_.device());
}

}  // namespace gqe
