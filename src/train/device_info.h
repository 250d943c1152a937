// What a benchmark or the trainer reports about its device: the name, the peak dense bf16
// throughput of known GPUs (for MFU; unknown devices get none rather than a wrong one), and the
// peak memory used.
#pragma once

#include <optional>
#include <string>

#include <c10/core/Device.h>

namespace gqe {

std::string device_name(at::Device device);  // "cpu", or the name CUDA reports ("NVIDIA H100 80GB HBM3")

// Datasheet dense bf16 FLOP/s of the GPU with this name (not the 2:4-sparse figure); nothing for
// anything not in the table, the CPU included.
std::optional<double> peak_bf16_flops(const std::string& device_name);

// Peak memory of this process on the device since start (CUDA: the caching allocator's peak; CPU:
// the maximum resident set), in bytes.
double peak_memory_bytes(at::Device device);
void reset_peak_memory(at::Device device);  // CUDA only

}  // namespace gqe
