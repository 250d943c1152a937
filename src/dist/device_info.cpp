#include "dist/device_info.h"

#include <atomic>
#include <utility>
#include <vector>

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#ifdef USE_C10D_NCCL  // defined whenever the torch in use was built with CUDA (and NCCL)
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <fmt/format.h>

#include "common/error.h"
#include "common/host_memory.h"

namespace gqe {

std::string device_name(at::Device device) {
#ifdef USE_C10D_NCCL
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index())->name;
#endif
  return device.str();
}

std::optional<double> available_memory(at::Device device) {
#ifdef USE_C10D_NCCL
  if (device.is_cuda()) {
    at::globalContext().lazyInitDevice(at::kCUDA);
    const c10::cuda::CUDAGuard guard(device.index() < 0 ? 0 : device.index());
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) return std::nullopt;
    return static_cast<double>(free);
  }
#endif
  if (device.is_cpu()) return host_memory_available();
  return std::nullopt;
}

void require_memory(at::Device device, double min_bytes, const std::string& what) {
  const std::optional<double> available = available_memory(device);
  if (!available || min_bytes <= *available) return;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  throw UserError(fmt::format("{} would take at least {:.2f} GiB of memory, but {} has {:.2f} GiB available", what, min_bytes / kGiB,
                              device_name(device), *available / kGiB));
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

// The CPU allocator reports each allocation and free to the PROFILER_STATE debug info of the
// thread that makes it (and ThreadLocalState carries that info to autograd and intra-op threads).
struct PeakMemory::CpuCounter : c10::MemoryReportingInfoBase {
  bool memoryProfilingEnabled() const override { return true; }
  void reportMemoryUsage(void*, int64_t bytes, size_t, size_t, c10::Device device) override {
    if (!device.is_cpu()) return;
    const int64_t now = current.fetch_add(bytes) + bytes;
    for (int64_t seen = peak.load(); now > seen && !peak.compare_exchange_weak(seen, now);) {
    }
  }
  std::atomic<int64_t> current{0}, peak{0};
  std::optional<c10::DebugInfoGuard> guard;
};

PeakMemory::PeakMemory(at::Device device) : device_(device) {
#ifdef USE_C10D_NCCL
  if (device.is_cuda()) {
    at::globalContext().lazyInitDevice(at::kCUDA);  // the allocator knows no device before CUDA starts
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
    return;
  }
#endif
  cpu_ = std::make_shared<CpuCounter>();
  cpu_->guard.emplace(c10::DebugInfoKind::PROFILER_STATE, cpu_);
}

PeakMemory::~PeakMemory() {
  if (cpu_) cpu_->guard.reset();
}

double PeakMemory::bytes() const {
#ifdef USE_C10D_NCCL
  if (device_.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index() < 0 ? 0 : device_.index());
    return static_cast<double>(stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
  }
#endif
  return static_cast<double>(cpu_->peak.load());
}

}  // namespace gqe
