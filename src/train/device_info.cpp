#include "train/device_info.h"

#include <sys/resource.h>

#include <utility>
#include <vector>

#ifdef USE_C10D_NCCL  // defined whenever the torch in use was built with CUDA (and NCCL)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace gqe {

std::string device_name(at::Device device) {
#ifdef USE_C10D_NCCL
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index())->name;
#endif
  return device.str();
}

std::optional<double> peak_bf16_flops(const std::string& name) {
  // Most specific first: "H100 PCIe" before "H100".
  static const std::vector<std::pair<const char*, double>> kPeaks = {
      {"H100 PCIe", 756e12}, {"H100 NVL", 835e12}, {"H200 NVL", 835e12}, {"H100", 989.4e12}, {"H200", 989.4e12},
      {"GH200", 989.4e12},   {"B200", 2250e12},    {"A100", 312e12},     {"L40S", 362e12},  {"A10G", 70e12}};
  for (const auto& [key, flops] : kPeaks)
    if (name.find(key) != std::string::npos) return flops;
  return std::nullopt;
}

double peak_memory_bytes(at::Device device) {
#ifdef USE_C10D_NCCL
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
  }
#endif
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

void reset_peak_memory(at::Device device) {
#ifdef USE_C10D_NCCL
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
}

}  // namespace gqe
