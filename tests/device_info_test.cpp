// MFU is only as right as the peak it divides by: the table must pick the right variant of a GPU
// and refuse to guess for anything it does not know.
#include <gtest/gtest.h>

#include "dist/device_info.h"

namespace gqe {
namespace {

TEST(DeviceInfo, PeakBf16FlopsPicksTheVariantAndKnowsNothingElse) {
  EXPECT_DOUBLE_EQ(*peak_bf16_flops("NVIDIA H100 80GB HBM3"), 989.4e12);
  EXPECT_DOUBLE_EQ(*peak_bf16_flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_DOUBLE_EQ(*peak_bf16_flops("NVIDIA H100 NVL"), 835e12);
  EXPECT_DOUBLE_EQ(*peak_bf16_flops("NVIDIA H200"), 989.4e12);
  EXPECT_DOUBLE_EQ(*peak_bf16_flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_FALSE(peak_bf16_flops("cpu").has_value());
  EXPECT_FALSE(peak_bf16_flops("NVIDIA GeForce RTX 4090").has_value());
}

TEST(DeviceInfo, CpuName) { EXPECT_EQ(device_name(at::Device("cpu")), "cpu"); }

// The CPU peak counts tensor bytes from the start, frees subtracted, whichever thread allocates.
TEST(DeviceInfo, CpuPeakMemoryCountsTensorsHeldAtTheSameTime) {
  const at::Tensor before = at::empty({1 << 20}, at::kByte);  // held before: not counted
  const PeakMemory peak(at::Device("cpu"));
  {
    const at::Tensor a = at::empty({1 << 20}, at::kByte), b = at::empty({2 << 20}, at::kByte);
  }
  const at::Tensor c = at::empty({1 << 20}, at::kByte);
  EXPECT_EQ(peak.bytes(), 3 << 20);
  // The backward pass's allocations count too: c, x, y and x's gradient, 1 + 3 x 4 MiB.
  const at::Tensor x = at::zeros({1 << 20}, at::kFloat).requires_grad_(true);
  const at::Tensor y = x * 2;
  y.sum().backward();
  EXPECT_NEAR(peak.bytes(), 13 << 20, 1024);
}
}  // namespace
}  // namespace gqe
