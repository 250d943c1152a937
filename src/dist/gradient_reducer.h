// Data-parallel gradient reduction (docs/distributed.md). Every gradient lives in a flat bucket of
// about dist.bucket_mb (each parameter's .grad is a view into its bucket, as DDP's
// gradient_as_bucket_view: no copy in or out). Buckets are filled from the last parameter to the
// first, the order in which the backward pass completes them. On a step's last micro-batch each
// bucket's collective starts as soon as its last gradient has been accumulated (a post-accumulate
// hook), in bucket order on every rank, and reduce() waits for them before the update; earlier
// micro-batches only accumulate. Plain data parallel all-reduces the buckets. With
// dist.shard_optimizer (ZeRO-1) rank r owns the r-th 1/W of every bucket: the buckets are
// reduce-scattered, the optimizer updates the rank's slices only, and gather_parameters() brings
// every rank's updated slices to all. The parameters then live in flat buckets too, laid out as
// the gradients', so that each bucket is all-gathered in place; with dist.overlap_param_gather the
// next forward pass waits for each bucket only when it reaches its parameters (wait_for).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "dist/communicator.h"

namespace gqe {

struct ReducerOptions {
  int64_t bucket_bytes = 25 << 20;
  bool shard = false;    // ZeRO-1: reduce-scatter, and this rank updates its slices only
  bool overlap = true;   // start each bucket during the backward pass
  bool overlap_gather = true;  // sharded: the next forward pass waits for each bucket's parameters
  at::ScalarType reduce_dtype = at::kFloat;  // bf16: the collective's type; the result lands in fp32
};

// dist.bucket_mb, dist.shard_optimizer, dist.overlap_grad_reduce, dist.overlap_param_gather and
// dist.reduce_dtype.
ReducerOptions reducer_options(const DistConfig& config);

// Where the parameters sit in the buckets: pure arithmetic, shared by the reducer, its tests and
// the memory estimate.
struct BucketLayout {
  struct Bucket {
    std::vector<size_t> params;    // parameter indices, in model order
    std::vector<int64_t> offsets;  // each one's first element in the bucket
    int64_t numel = 0;             // of the parameters
    int64_t padded = 0;            // numel rounded up to a multiple of the world size
  };
  std::vector<Bucket> buckets;  // buckets[0] holds the last parameters
  std::vector<size_t> bucket_of;  // per parameter

  // numels: per parameter, in model order; element_bytes: of the gradients.
  BucketLayout(const std::vector<int64_t>& numels, int64_t element_bytes, int64_t bucket_bytes, int world);
  // The elements of the whole model that rank `rank` owns when sharded.
  int64_t shard_numel() const;
  // Each rank's part of bucket b when sharded: rank r owns [r * part, (r + 1) * part).
  int64_t part(size_t b) const { return buckets[b].padded / world; }
  int world = 1;
};

class GradientReducer {
 public:
  GradientReducer(Communicator& comm, const std::vector<std::pair<std::string, at::Tensor>>& named,
                  const ReducerOptions& options);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // What this rank's optimizer updates: every parameter whole, or (sharded) its slice of each
  // parameter it owns part of. value: a detached view of the parameter's elements; grad: where the
  // reduced gradient of those elements is after reduce().
  struct Slice {
    std::string name;        // the parameter's
    at::Tensor value, grad;
    int64_t dims = 0;        // of the whole parameter (weight decay goes by it)
    size_t param = 0, bucket = 0;
    int64_t offset = 0;      // first element, in the parameter
    int64_t shard_offset = 0;  // first element, in this rank's part of the bucket
  };
  const std::vector<Slice>& slices() const { return slices_; }
  bool sharded() const { return options_.shard; }
  const BucketLayout& layout() const { return layout_; }

  void zero_grad();
  // The next backward is the step's last: buckets start as they fill (with overlap).
  void arm();
  // Every bucket reduced (started here if it was not yet). Returns the seconds this call waited.
  double reduce();
  // Sharded: every rank's updated slices into every rank's parameters, one all-gather per bucket,
  // started in the order the forward pass reads them (the last bucket first). Without
  // overlap_gather they finish here. Returns the seconds this call took.
  double gather_parameters();
  // These parameters are about to be read: their buckets' gathers, and those started before them,
  // are finished. Returns the seconds it waited.
  double wait_for(const std::vector<at::Tensor>& params);
  // Every gather finished: the parameters are whole (before anything but a forward pass reads
  // them: a checkpoint, a hash). Returns the seconds it waited.
  double finish_gather();

  // Sharded checkpoints hold whole tensors. gather: rank 0 gets "<parameter><suffix>" whole, on
  // the CPU, from every rank's slices in `parts` (keyed the same; other ranks get nothing).
  // scatter: the reverse, from rank 0's whole tensors into every rank's `parts`, in place.
  std::map<std::string, at::Tensor> gather(const std::map<std::string, at::Tensor>& parts,
                                           const std::vector<std::string>& suffixes);
  void scatter(const std::map<std::string, at::Tensor>& whole, const std::map<std::string, at::Tensor>& parts,
               const std::vector<std::string>& suffixes);

 private:
  struct Flight;
  void ready(size_t param);  // from the post-accumulate hook
  void reset(bool armed);    // with mutex_ held
  // Bucket b in full on every rank, from each rank's `part` of its slices (the padding zero).
  at::Tensor gather_bucket(size_t b, const std::function<at::Tensor(const Slice&)>& part);
  void launch(size_t bucket);

  Communicator& comm_;
  ReducerOptions options_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  BucketLayout layout_;
  std::vector<at::Tensor> flats_;   // per bucket: the gradients (padded)
  std::vector<at::Tensor> shards_;  // sharded, per bucket: this rank's reduced part
  std::vector<at::Tensor> weights_;  // sharded, per bucket: the parameters (padded), which view it
  std::vector<Communicator::Pending> gathers_;  // sharded, per bucket
  size_t ungathered_ = 0;  // buckets [0, ungathered_) may still be in flight; they finish downward
  std::map<const void*, size_t> param_of_;  // sharded: parameter index by TensorImpl
  std::vector<Slice> slices_;
  std::unique_ptr<Flight> flight_;
  std::mutex mutex_;
};

}  // namespace gqe
