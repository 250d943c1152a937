// The data-parallel group (docs/distributed.md): a c10d TCPStore at MASTER_ADDR:MASTER_PORT and a
// process group over it, NCCL when training on CUDA, Gloo on the CPU. With one process every
// collective is a no-op, unless dist.backend names a backend: then it is a real group of one.
// Collective failures (a rank that died, or hangs past the timeout) become errors naming this rank
// and the operation.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "config/config.h"
#include "config/config_loader.h"
#include "dist/environment.h"

namespace gqe {

// c10d logs warnings, with stack frames, on the way to errors that gqe reports in one line (a
// store whose host ended, a collective that failed): quiets torch's C++ warnings, unless GQE_DEBUG
// or TORCH_CPP_LOG_LEVEL asks for them. Errors still print.
void quiet_torch_warnings();

// The device of this rank: its GPU (rank_gpu) when running on CUDA (train.device cuda, or auto
// with a GPU present), else the CPU. Throws UserError for cuda without a GPU; `origin` names the file.
at::Device rank_device(DeviceKind kind, const DistEnvironment& env, const std::string& origin);
// The GPU of a rank that sees `visible` GPUs: GPU LOCAL_RANK where each rank sees every GPU of its
// machine (gqe --nproc, torchrun, srun --gpus-per-node); GPU 0 where SLURM gave each task one GPU
// of its own (srun --gpus-per-task=1 sets CUDA_VISIBLE_DEVICES per task: `cuda_visible_devices`
// set, one GPU visible). Nothing where no GPU is left for it.
std::optional<int> rank_gpu(const DistEnvironment& env, size_t visible, bool cuda_visible_devices);
// The device of a rank of a job (rank_device), with dist.backend checked against it (nccl needs
// CUDA); a UserError names the file that set the key.
at::Device job_device(const LoadedConfig& config, const DistEnvironment& env);

// Each distinct line of the ranks' (per_rank[r]: rank r's), once, in the order first given, with
// "rank R: " or "ranks R1, R2, ...: " in front unless every rank gave it.
std::vector<std::string> merge_rank_lines(const std::vector<std::vector<std::string>>& per_rank);

class Communicator {
 public:
  Communicator(const DistEnvironment& env, DistBackend backend, at::Device device, std::chrono::seconds timeout,
               int64_t bucket_bytes = 25 << 20);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  bool main() const { return env_.rank == 0; }
  const DistEnvironment& environment() const { return env_; }
  std::string backend_name() const;

  // Each tensor summed over all ranks, in place; tensors are packed into buckets of about
  // bucket_bytes, one collective per bucket.
  void all_reduce_sum(const std::vector<at::Tensor>& tensors);
  // Rank 0's values, in place on every rank.
  void broadcast(const std::vector<at::Tensor>& tensors);
  // One collective each on contiguous tensors, unbucketed (gqe bench comm measures them as
  // training would issue them). reduce_scatter_sum: rank r's `out` (n elements) is the sum over
  // ranks of in[r*n, (r+1)*n). all_gather_flat: `out` (W*n) is every rank's `in` (n), in rank order.
  void all_reduce_flat(at::Tensor& t);
  void reduce_scatter_sum(at::Tensor& out, at::Tensor& in);
  void all_gather_flat(at::Tensor& out, at::Tensor& in);

  // The same collectives started without waiting (the gradient reducer overlaps them with the
  // backward pass); wait() ends one, with the errors of the blocking forms. Every rank must start
  // them in the same order. The tensors must live until wait() returns.
  class Pending {
   public:
    Pending() = default;
    void wait();

   private:
    friend class Communicator;
    std::function<void()> wait_;
  };
  Pending start_all_reduce(at::Tensor& t);
  Pending start_reduce_scatter(at::Tensor& out, at::Tensor& in);
  // `in` may be this rank's part of `out` (out.narrow(0, rank * n, n)): gathered in place.
  Pending start_all_gather(at::Tensor& out, at::Tensor& in);
  // Every rank's string, in rank order (through the store: for small control data; read after a
  // barrier, so a rank that died fails the others at once).
  std::vector<std::string> all_gather(const std::string& value);
  // Rank 0 tells the others something (through the store); receive() waits for it.
  void publish(const std::string& key, const std::string& value);
  std::string receive(const std::string& key);
  void barrier();
  // Every rank runs `check`: all of a check of the input, or its share of it. Bad input (a
  // UserError) found by any rank stops every rank, after all have checked: rank 0 prints the
  // error of the lowest rank that found one ("rank R: " in front when it is not its own), and
  // only then does any rank throw, AlreadyReported (exit status 2, nothing more printed): a
  // launcher stops the rest of a job at its first exit, which must not be before the line is
  // out. So a job says what is wrong once, where its console is, and no rank is left waiting at a
  // collective for one that stopped.
  void check_input(const std::function<void()>& check);
  // Every rank's warnings (one line each), for rank 0 to print: merge_rank_lines of them on rank 0,
  // nothing on the others. Eight GPUs that all warn say so once.
  std::vector<std::string> gather_warnings(const std::vector<std::string>& mine);
  // The job's last collective: stops the watchdog (dist/watchdog.h), then waits for every rank.
  // Call it when the work is done; a rank that ends without it looks failed to the others.
  void finish();

 private:
  template <class F> void guarded(const char* what, F&& f);
  bool grouped() const;  // a process group exists (several ranks, or a backend named for one)

  struct Impl;
  DistEnvironment env_;
  std::unique_ptr<Impl> impl_;
  int64_t bucket_bytes_;
  int64_t sequence_ = 0;  // makes store keys of successive all_gathers distinct
};

}  // namespace gqe
