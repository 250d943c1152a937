// The fused kernels' switch: the fallback to ATen when a kernel disagrees on first contact (forced
// here with a check whose "fused" side is wrong: CI has no GPU), train.fused_kernels on/off, and
// the standard checks themselves (on the CPU both sides are ATen and must agree exactly; on a GPU
// every kernel must pass).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "model/fused_kernels.h"

namespace gqe {
namespace {

// Leaves every kernel enabled, as a process starts.
class FusedKernelSwitch : public testing::Test {
 protected:
  void TearDown() override {
    for (FusedKernel k : kFusedKernels) set_fused_enabled(k, true);
  }
};

TEST_F(FusedKernelSwitch, AKernelThatDisagreesFallsBackAloneWithOneWarning) {
  const at::Tensor x = at::linspace(-1, 1, 100);
  // RoPE's "kernel" is off by 1e-3 of the largest value; SwiGLU's by 1e-6 (fp32 rounding).
  std::vector<KernelCheck> checks{
      {FusedKernel::rope, [&] { return std::vector<at::Tensor>{fused_enabled(FusedKernel::rope) ? x + 1e-3 : x}; }},
      {FusedKernel::swiglu, [&] { return std::vector<at::Tensor>{fused_enabled(FusedKernel::swiglu) ? x * (1 + 1e-6) : x}; }}};
  std::vector<std::string> warnings;
  const auto disabled = check_fused_kernels(checks, 1e-4, [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_EQ(disabled.size(), 1u);
  EXPECT_EQ(disabled[0], FusedKernel::rope);
  EXPECT_FALSE(fused_enabled(FusedKernel::rope));
  EXPECT_TRUE(fused_enabled(FusedKernel::swiglu));
  EXPECT_TRUE(fused_enabled(FusedKernel::cross_entropy));  // not checked: untouched
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "the fused RoPE kernel disagrees with ATen on this GPU (largest relative difference 0.001, tolerance 1e-04); "
                         "ATen serves it for this run (train.fused_kernels: off turns all of them off)");
}

TEST_F(FusedKernelSwitch, NonFiniteOrMissingOutputsAreDisagreements) {
  const at::Tensor x = at::ones({4});
  std::vector<KernelCheck> checks{
      {FusedKernel::gqe_slots, [&] { return std::vector<at::Tensor>{fused_enabled(FusedKernel::gqe_slots) ? x * NAN : x}; }},
      {FusedKernel::add_rmsnorm,
       [&] { return fused_enabled(FusedKernel::add_rmsnorm) ? std::vector<at::Tensor>{x} : std::vector<at::Tensor>{x, x}; }}};
  int warned = 0;
  const auto disabled = check_fused_kernels(checks, 1e-4, [&](const std::string&) { ++warned; });
  EXPECT_EQ(disabled.size(), 2u);
  EXPECT_EQ(warned, 2);
  EXPECT_FALSE(fused_enabled(FusedKernel::gqe_slots));
  EXPECT_FALSE(fused_enabled(FusedKernel::add_rmsnorm));
}

// A kernel that cannot run at all (built for another GPU: "no kernel image is available", or a
// launch that asks for too much) is a disagreement too, with the error's first line; the run goes on.
TEST_F(FusedKernelSwitch, AKernelThatFailsToRunFallsBackWithItsError) {
  const at::Tensor x = at::ones({4});
  std::vector<KernelCheck> checks{
      {FusedKernel::swiglu,
       [&] {
         TORCH_CHECK(!fused_enabled(FusedKernel::swiglu), "CUDA error: no kernel image is available for execution on the device\n"
                                                          "CUDA kernel errors might be asynchronously reported");
         return std::vector<at::Tensor>{x};
       }},
      {FusedKernel::cross_entropy, [&] {
         if (fused_enabled(FusedKernel::cross_entropy)) throw std::runtime_error("too many resources requested for launch");
         return std::vector<at::Tensor>{x};
       }},
      {FusedKernel::rope, [&] { return std::vector<at::Tensor>{x}; }}};
  std::vector<std::string> warnings;
  const auto disabled = check_fused_kernels(checks, 1e-4, [&](const std::string& w) { warnings.push_back(w); });
  EXPECT_EQ(disabled, (std::vector<FusedKernel>{FusedKernel::swiglu, FusedKernel::cross_entropy}));
  EXPECT_FALSE(fused_enabled(FusedKernel::swiglu));
  EXPECT_FALSE(fused_enabled(FusedKernel::cross_entropy));
  EXPECT_TRUE(fused_enabled(FusedKernel::rope));
  EXPECT_EQ(warnings, (std::vector<std::string>{
                          "the fused SwiGLU kernel fails on this GPU (CUDA error: no kernel image is available for execution on the "
                          "device); ATen serves it for this run (train.fused_kernels: off turns all of them off)",
                          "the fused cross-entropy kernel fails on this GPU (too many resources requested for launch); ATen serves it "
                          "for this run (train.fused_kernels: off turns all of them off)"}));

  // ATen's path failing after it (a kernel error that left the GPU unusable): the run cannot go on.
  std::vector<KernelCheck> poisoned{{FusedKernel::add_rmsnorm, [&]() -> std::vector<at::Tensor> {
                                       TORCH_CHECK(false, "CUDA error: an illegal memory access was encountered\nmore");
                                     }}};
  try {
    check_fused_kernels(poisoned, 1e-4, [&](const std::string& w) { warnings.push_back(w); });
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "the first-contact check of the fused residual-add + RMSNorm kernel failed on this GPU: CUDA error: an illegal "
                           "memory access was encountered (train.fused_kernels: off runs without our kernels)");
  }
  EXPECT_EQ(warnings.size(), 2u);
}

TEST_F(FusedKernelSwitch, OnAndOffSetEveryKernelWithoutChecking) {
  prepare_fused_kernels(FusedKernels::off, at::kCPU);
  for (FusedKernel k : kFusedKernels) EXPECT_FALSE(fused_enabled(k)) << fused_kernel_name(k);
  prepare_fused_kernels(FusedKernels::on, at::kCPU);
  for (FusedKernel k : kFusedKernels) EXPECT_TRUE(fused_enabled(k)) << fused_kernel_name(k);
}

// Every kernel's check runs its op forward and backward; on the CPU both sides take the same path.
TEST_F(FusedKernelSwitch, StandardChecksRunEveryOpAndAgreeOnTheCpu) {
  const auto checks = standard_kernel_checks(at::kCPU);
  ASSERT_EQ(checks.size(), std::size(kFusedKernels));
  std::vector<std::string> warnings;
  EXPECT_TRUE(check_fused_kernels(checks, 0.0, [&](const std::string& w) { warnings.push_back(w); }).empty());
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  for (const KernelCheck& c : checks) EXPECT_GE(c.run().size(), 2u) << fused_kernel_name(c.kernel);  // outputs and gradients
}

TEST_F(FusedKernelSwitch, CudaKernelsPassTheirFirstContactCheck) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  std::vector<std::string> warnings;
  check_fused_kernels(standard_kernel_checks(at::Device(at::kCUDA, 0)), 1e-4, [&](const std::string& w) { warnings.push_back(w); });
  for (const std::string& w : warnings) ADD_FAILURE() << w;
}

}  // namespace
}  // namespace gqe
