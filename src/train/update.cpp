#include "train/update.h"

#include <ATen/ATen.h>

namespace gqe {

Update clip_and_step(AdamW& optimizer, GradClipper& clipper, const std::vector<at::Tensor>& grads,
                     const at::Tensor& loss, double lr) {
  Update u;
  u.norm = at::stack(at::_foreach_norm(grads, 2, at::kFloat)).norm().to(at::kDouble);
  u.skip = loss.isfinite().logical_and(u.norm.isfinite()).logical_not();
  u.scale = clipper.decide(u.norm, u.skip.logical_not()).scale;
  optimizer.step(lr, u.scale, u.skip);
  return u;
}

}  // namespace gqe
