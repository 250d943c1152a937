// MFU is only as right as the peak it divides by: the table must pick the right variant of a GPU
// and refuse to guess for anything it does not know.
#include <gtest/gtest.h>

#include "train/device_info.h"

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

TEST(DeviceInfo, CpuNameAndPeakMemory) {
  EXPECT_EQ(device_name(at::Device("cpu")), "cpu");
  EXPECT_GT(peak_memory_bytes(at::Device("cpu")), 1e6);  // this test binary alone is megabytes
}

}  // namespace
}  // namespace gqe
