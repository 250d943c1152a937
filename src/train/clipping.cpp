#include "train/clipping.h"

#include <algorithm>
#include <cmath>

namespace gqe {
namespace {

constexpr double kEps = 1e-6;

ClipDecision clip_to(double norm, double threshold) {
  if (norm <= threshold) return {};
  return {threshold / (norm + kEps), threshold};
}

}  // namespace

ClipDecision GradClipper::decide(double norm) {
  switch (config_.kind) {
    case ClipKind::none:
      return {};
    case ClipKind::norm:
      return clip_to(norm, config_.max_norm);
    case ClipKind::zclip:
      break;
  }
  if (!state_.initialized) {
    // Warmup: collect norms (clipping at max_norm meanwhile), then start the EMAs from their
    // mean and population variance.
    state_.warmup_norms.push_back(norm);
    if (static_cast<int64_t>(state_.warmup_norms.size()) >= config_.warmup_steps) {
      const auto& w = state_.warmup_norms;
      double mean = 0, var = 0;
      for (double x : w) mean += x;
      mean /= static_cast<double>(w.size());
      for (double x : w) var += (x - mean) * (x - mean);
      state_ = {true, mean, var / static_cast<double>(w.size()), {}};
    }
    return clip_to(norm, config_.max_norm);
  }
  const double std = std::sqrt(state_.var);
  const double z = (norm - state_.mean) / (std + kEps);
  double effective = norm;
  bool spike = false;
  if (z > config_.z_threshold) {
    // Adaptive threshold: the further out the spike, the harder it is pulled in.
    effective = state_.mean + config_.z_threshold * config_.z_threshold * std / z;
    spike = true;
  }
  const ClipDecision decision = clip_to(norm, std::min(effective, config_.max_norm));
  const double observed = spike ? effective : norm;
  state_.mean = config_.alpha * state_.mean + (1 - config_.alpha) * observed;
  state_.var = config_.alpha * state_.var + (1 - config_.alpha) * (observed - state_.mean) * (observed - state_.mean);
  return decision;
}

}  // namespace gqe
