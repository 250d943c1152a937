// AdamW over ATen's fused kernel (CPU and CUDA), with the decoupled weight decay applied to
// matrices only (docs/training.md). We own the moment tensors, so a checkpoint stores them by
// parameter name and a resume rebuilds the optimizer from the config: learning rate, betas and
// decay always come from the config, never from a stale saved copy.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "config/config.h"

namespace gqe {

class AdamW {
 public:
  // named: the model's parameters. Decay goes to tensors of 2 or more dimensions (the embedding
  // only when decay_embeddings); norms and other vectors never decay.
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named, const OptimizerConfig& config);

  void zero_grad();
  // One update with learning rate `lr`. Optional 0-dim tensors on the parameters' device, so that
  // the host need not read them: `grad_factor` multiplies every gradient first (clipping, fused
  // into the update), and a nonzero `skip` makes the step leave everything as it was.
  void step(double lr, const at::Tensor& grad_factor = {}, const at::Tensor& skip = {});

  // "<param>.exp_avg" / "<param>.exp_avg_sq" -> tensor, for checkpoints.
  std::map<std::string, at::Tensor> state() const;
  // The count of updates made (steps not skipped), for moments that arrived by other means (a
  // broadcast from rank 0).
  void set_steps(int64_t steps);
  // Restores moments and the update count (a parameter's own count may lag when it had no
  // gradient for some steps; restored as the global count). Throws UserError naming a bad entry.
  void load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps, const std::string& where);

  // Parameter names in each group, for the log.
  const std::vector<std::string>& decayed() const { return groups_[0].names; }
  const std::vector<std::string>& not_decayed() const { return groups_[1].names; }

 private:
  struct Group {
    double weight_decay = 0;
    std::vector<std::string> names;
    std::vector<at::Tensor> params, exp_avg, exp_avg_sq, step;
  };
  Group groups_[2];  // decayed, not decayed
  OptimizerConfig config_;
};

}  // namespace gqe
