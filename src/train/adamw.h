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

// What AdamW updates: a parameter, or this rank's slice of one (dist.shard_optimizer).
struct OptimizedTensor {
  std::string name;  // the parameter's
  at::Tensor value;  // updated in place (a detached view of the parameter)
  int64_t dims = 0;  // of the whole parameter
};

class AdamW {
 public:
  // Decay goes to parameters of 2 or more dimensions (the embedding only when decay_embeddings);
  // norms and other vectors never decay.
  AdamW(const std::vector<OptimizedTensor>& tensors, const OptimizerConfig& config);

  // One update with learning rate `lr`; grads[i] is tensors[i]'s gradient. Optional 0-dim tensors
  // on the parameters' device, so that the host need not read them: `grad_factor` multiplies
  // every gradient first (clipping, fused into the update), and a nonzero `skip` makes the step
  // leave everything as it was.
  void step(const std::vector<at::Tensor>& grads, double lr, const at::Tensor& grad_factor = {}, const at::Tensor& skip = {});

  // "<param>.exp_avg" / "<param>.exp_avg_sq" -> tensor, for checkpoints.
  std::map<std::string, at::Tensor> state() const;
  // The count of updates made (steps not skipped), for moments that arrived by other means (a
  // broadcast from rank 0).
  void set_steps(int64_t steps);
  // Restores whole moments (checked by check_moments) and the update count.
  void load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps);
  // The bytes of the moments this optimizer holds.
  int64_t state_bytes() const;

  // Parameter names in each group, for the log.
  const std::vector<std::string>& decayed() const { return groups_[0].names; }
  const std::vector<std::string>& not_decayed() const { return groups_[1].names; }

 private:
  struct Group {
    double weight_decay = 0;
    std::vector<std::string> names;
    std::vector<size_t> index;  // into the constructor's tensors (and step's grads)
    std::vector<at::Tensor> params, exp_avg, exp_avg_sq, step;
  };
  Group groups_[2];  // decayed, not decayed
  OptimizerConfig config_;
};

// Throws UserError (`where`: the checkpoint) unless `tensors` holds both moments of every
// parameter, each of its parameter's shape.
void check_moments(const std::map<std::string, at::Tensor>& tensors,
                   const std::vector<std::pair<std::string, at::Tensor>>& params, const std::string& where);

}  // namespace gqe
