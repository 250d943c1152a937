// MFU is only as right as the peak it divides by: the table must pick the right variant of a GPU
// and refuse to guess for anything it does not know.
#include <gtest/gtest.h>

#include "bench/benchmarks.h"
#include "config/config_loader.h"
#include "dist/communicator.h"
#include "dist/device_info.h"
#include "model/model_info.h"

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

// gqe train refuses a model before allocating it when its certain need is more than the device
// has: that need must never be more than a real training step holds, or runs that fit would be
// refused. Measured on the CPU for both attentions, fp32 and bf16, with and without checkpointing.
TEST(DeviceInfo, TheCertainNeedIsNoMoreThanATrainingStepHolds) {
  for (const std::string arm : {"gqa", "gqe"})
    for (const std::string extra : {"", "train.precision=bf16", "train.activation_checkpointing=true"}) {
      SCOPED_TRACE(arm + " " + extra);
      std::vector<std::string> overrides = {"data.seq_len=64", "train.global_batch_tokens=256", "train.micro_batch_size=4",
                                            "train.threads=1"};
      if (!extra.empty()) overrides.push_back(extra);
      const Config c = load_config(std::string(GQE_SOURCE_DIR) + "/configs/tiny/" + arm + ".yaml", overrides).config;
      const ModelInfo info = describe_model(c);
      Communicator solo(DistEnvironment{}, DistBackend::auto_, at::kCPU, std::chrono::seconds(60));
      const double held = bench_train_step(c, solo, 1, 0, at::Device("cpu"), nullptr, 0).peak_memory;
      EXPECT_LE(info.min_training_bytes(), held);
      EXPECT_GT(info.min_training_bytes(), 0.5 * held);  // and not a vacuous bound
    }
}

TEST(DeviceInfo, MemoryVerdicts) {
  ModelInfo info;
  info.weights_bytes = info.grads_bytes = 1ll << 30;
  info.optimizer_bytes = 2ll << 30;
  info.min_activation_bytes = 1ll << 30;
  info.activation_bytes = 4ll << 30;  // certain need 5 GiB, estimate 8 GiB
  EXPECT_EQ(memory_verdict(info, "cpu", 9.0 * (1 << 30)).text, "memory on cpu: 9.00 GiB available: fits (estimate 8.00 GiB)");
  const MemoryVerdict tight = memory_verdict(info, "cpu", 6.0 * (1 << 30));
  EXPECT_TRUE(tight.fits);
  EXPECT_FALSE(tight.estimate_fits);
  EXPECT_EQ(tight.text, "memory on cpu: 6.00 GiB available: may not fit: the estimate is 8.00 GiB (at least 5.00 GiB); "
                        "train.activation_checkpointing or a lower train.micro_batch_size need less");
  const MemoryVerdict two = memory_verdict(info, "cpu", 9.0 * (1 << 30), 2);  // two ranks share the host
  EXPECT_FALSE(two.fits);
  EXPECT_EQ(two.text, "memory on cpu: 9.00 GiB available: does not fit: the weights, gradients, AdamW moments, logits and "
                      "layer inputs alone need 10.00 GiB for 2 ranks (estimate in all 16.00 GiB)");
  EXPECT_TRUE(memory_verdict(info, "cpu", std::nullopt).fits);  // unknown: not checked
  const auto host = available_memory(at::Device("cpu"));
  ASSERT_TRUE(host.has_value());
  EXPECT_GT(*host, 0);
}

}  // namespace
}  // namespace gqe
