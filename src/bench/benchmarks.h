// The measurements behind `gqe bench` (docs/performance.md). Timings are medians of repeated runs
// after warm-up; on CUDA the device is synchronised around each one.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "config/config.h"
#include "data/loader.h"

namespace gqe {

class Communicator;

// The config's model as GQA and as GQE (its own GQE settings, or top-1 gqe if it is a GQA config).
ModelConfig as_gqa(ModelConfig config);
ModelConfig as_gqe(ModelConfig config);

// GPU kernels (on the CPU: ATen ops, by self time) by name, most time first.
struct KernelTime {
  std::string name;
  double seconds = 0;  // summed over the profiled runs
  int64_t calls = 0;
};
// What profiled runs spent: the device's kernels (on the CPU: ATen ops by self time) and, on a GPU,
// the host's ATen ops and CUDA runtime calls by self time (a launch-bound run shows there).
struct Profile {
  std::vector<KernelTime> device, host;
};
Profile profile_kernels(at::Device device, const std::function<void()>& run);

// One profiled event: an op on a CPU thread, or a GPU kernel.
struct ProfiledSpan {
  uint64_t start_ns = 0, end_ns = 0, thread = 0;
  std::string name;
};
// Time and calls per name, most time first. `nested` (CPU ops: linear > matmul > mm): a span's time
// is its self time, its duration less that of the spans directly inside it on the same thread.
std::vector<KernelTime> total_by_name(std::vector<ProfiledSpan> spans, bool nested);

struct PrefillTiming {
  int64_t tokens = 0;
  double gqa_seconds = 0, gqe_seconds = 0;
  Profile gqa_profile, gqe_profile;  // one more run of each, when profiled
};

// A forward pass over one sequence of each length without gradients, logits of the last position
// only, for the GQA and GQE versions of `config` (same seed, same tokens).
std::vector<PrefillTiming> bench_prefill(const ModelConfig& config, const std::vector<int64_t>& lengths, int repeats,
                                         at::Device device, bool bf16, bool profile = false);

struct TrainTiming {
  std::string name;
  double step_seconds = 0, tokens_per_second = 0, flops_per_token = 0, peak_memory = 0;
  std::optional<double> mfu;  // only in bf16 on a GPU whose peak is known
  double comm_share = 0;      // of the timed steps' time, spent waiting on gradient and parameter collectives
};

// Steady-state training steps of one micro-batch per rank (train.micro_batch_size x data.seq_len
// random tokens): forward, the loss with the balance term, backward, and gqe train's gradient
// reduction (dist.*) and update (clip_and_step). tokens/s and MFU count the whole group. Peak
// memory counts this rank's tensors: parameters, gradients, optimizer state and activations.
// With `profile`, the profile (profile_kernels) of `profile_steps` more steps goes there.
TrainTiming bench_train_step(const Config& config, Communicator& comm, int steps, int warmup, at::Device device,
                             Profile* profile = nullptr, int profile_steps = 3);

// Micro-batches per second from TrainLoader::next() (prefetch 0: assembled on the calling thread).
// gqe bench comm: each collective on one fp32 tensor of each size (bytes, of the whole tensor as
// nccl-tests counts it), after a warm-up whose result is checked (a wrong sum is an error), timed
// between barriers on rank 0 (median of `repeats`). Bus bandwidth by nccl-tests' convention:
// algbw x 2(W-1)/W for all-reduce, x (W-1)/W for reduce-scatter and all-gather.
struct CommTiming {
  std::string op;
  int64_t bytes = 0;
  double seconds = 0, algbw = 0, busbw = 0;  // bytes/s
};
std::vector<CommTiming> bench_comm(Communicator& comm, at::Device device, const std::vector<int64_t>& sizes, int repeats);

double bench_loader(std::shared_ptr<const TokenStream> stream, const LoaderOptions& options, uint64_t micro_batches);

}  // namespace gqe
