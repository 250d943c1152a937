#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace gqe {

double learning_rate(const TrainConfig& t, int64_t tokens_after_step) {
  const ScheduleConfig& s = t.schedule;
  const double peak = t.optimizer.lr, floor = s.min_lr;
  const auto tokens = static_cast<double>(tokens_after_step);
  if (tokens < static_cast<double>(s.warmup_tokens)) return peak * tokens / static_cast<double>(s.warmup_tokens);
  const double budget = static_cast<double>(t.tokens);
  if (s.kind == ScheduleKind::cosine) {
    const double span = budget - static_cast<double>(s.warmup_tokens);
    const double progress = span > 0 ? std::clamp((tokens - static_cast<double>(s.warmup_tokens)) / span, 0.0, 1.0) : 1.0;
    return floor + 0.5 * (peak - floor) * (1.0 + std::cos(std::numbers::pi * progress));
  }
  const double decay_tokens = s.decay_fraction * budget;
  const double decay_start = budget - decay_tokens;
  if (decay_tokens <= 0 || tokens <= decay_start) return peak;
  const double progress = std::min(1.0, (tokens - decay_start) / decay_tokens);
  if (s.decay_shape == DecayShape::one_minus_sqrt) return floor + (peak - floor) * (1.0 - std::sqrt(progress));
  return peak + (floor - peak) * progress;
}

}  // namespace gqe
