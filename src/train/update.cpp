#include "train/update.h"

#include <ATen/ATen.h>

namespace gqe {

at::Tensor gradient_norm(const std::vector<at::Tensor>& grads) {
  if (grads.empty()) return at::zeros({}, at::kDouble);
  return at::stack(at::_foreach_norm(grads, 2, at::kFloat)).norm().to(at::kDouble);
}

Update clip_and_step(AdamW& optimizer, GradClipper& clipper, const std::vector<at::Tensor>& grads,
                     const at::Tensor& norm, const at::Tensor& loss, double lr) {
  Update u;
  u.norm = norm;
  u.skip = loss.isfinite().logical_and(u.norm.isfinite()).logical_not();
  u.scale = clipper.decide(u.norm, u.skip.logical_not()).scale;
  optimizer.step(grads, lr, u.scale, u.skip);
  return u;
}

}  // namespace gqe
