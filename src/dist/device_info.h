// What a benchmark or the trainer reports about its device: the name, the peak dense bf16
// throughput of known GPUs (for MFU; unknown devices get none rather than a wrong one), and the
// peak memory used.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <c10/core/Device.h>

namespace gqe {

std::string device_name(at::Device device);  // "cpu", or the name CUDA reports ("NVIDIA H100 80GB HBM3")

// Datasheet dense bf16 FLOP/s of the GPU with this name (not the 2:4-sparse figure); nothing for
// anything not in the table, the CPU included.
std::optional<double> peak_bf16_flops(const std::string& device_name);

// Bytes a new allocation on the device can still get: on the CPU the host's (host_memory_available),
// on a GPU what the driver reports free. Nothing if it cannot be told.
std::optional<double> available_memory(at::Device device);

// Refuses what certainly cannot fit before anything is allocated: throws UserError "{what} would
// take at least X GiB of memory, but DEVICE has Y GiB available" when min_bytes is more than the
// device has. `what` names the option or key that asks for it ("--max-tokens N: the KV cache").
void require_memory(at::Device device, double min_bytes, const std::string& what);
// How many ranks draw on the memory of this rank's device: on the CPU the machine's `local_world`
// ranks, a GPU is one rank's.
inline int ranks_sharing_memory(at::Device device, int local_world) { return device.is_cpu() ? local_world : 1; }

// The peak of the memory held by tensors on a device while this object lives, in bytes. CUDA: the
// caching allocator's peak (reset at the start). CPU: the peak of the bytes allocated by tensors
// from the start (freed ones subtracted; what torch.profiler's profile_memory counts), counted on
// this thread and the threads it hands work to (autograd, intra-op); memory held before the start
// is not included. One at a time per thread.
class PeakMemory {
 public:
  explicit PeakMemory(at::Device device);
  ~PeakMemory();
  PeakMemory(const PeakMemory&) = delete;
  PeakMemory& operator=(const PeakMemory&) = delete;
  double bytes() const;

 private:
  struct CpuCounter;
  at::Device device_;
  std::shared_ptr<CpuCounter> cpu_;
};

}  // namespace gqe
