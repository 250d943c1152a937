// The fused kernels' switch: the fallback to ATen when a kernel disagrees on first contact (forced
// here with a check whose "fused" side is wrong: CI has no GPU), train.fused_kernels on/off, and
// the standard checks themselves (on the CPU both sides are ATen and must agree exactly; on a GPU
// every kernel must pass).
#include <gtest/gtest.h>

#include <algorithm>

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

// The standard checks run each kernel in fp32, then in bf16 with a tolerance of its own: a kernel
// that failed once stays off (its later check is not even run), and each check is held to its own
// tolerance.
TEST_F(FusedKernelSwitch, EachCheckHasItsToleranceAndAFailedKernelIsNotCheckedAgain) {
  const at::Tensor x = at::linspace(-1, 1, 100);
  int later_rope_runs = 0;
  std::vector<KernelCheck> checks{
      {FusedKernel::rope, [&] { return std::vector<at::Tensor>{fused_enabled(FusedKernel::rope) ? x + 1e-3 : x}; }, 1e-4},
      {FusedKernel::rope, [&] { ++later_rope_runs; return std::vector<at::Tensor>{x}; }, 1e-2},
      {FusedKernel::swiglu, [&] { return std::vector<at::Tensor>{fused_enabled(FusedKernel::swiglu) ? x + 1e-3 : x}; }, 1e-2},
      {FusedKernel::swiglu, [&] { return std::vector<at::Tensor>{fused_enabled(FusedKernel::swiglu) ? x + 1e-3 : x}; }, 1e-4}};
  std::vector<std::string> warnings;
  // The caller's tolerance (0.5) is no check's: each has its own.
  const auto disabled = check_fused_kernels(checks, 0.5, [&](const std::string& w) { warnings.push_back(w); });
  EXPECT_EQ(disabled, (std::vector<FusedKernel>{FusedKernel::rope, FusedKernel::swiglu}));
  EXPECT_EQ(later_rope_runs, 0);
  EXPECT_FALSE(fused_enabled(FusedKernel::rope));
  EXPECT_FALSE(fused_enabled(FusedKernel::swiglu));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[1].find("largest relative difference 0.001, tolerance 1e-04"), std::string::npos) << warnings[1];
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

// Every kernel's check runs its op forward and backward, in fp32 and then under bf16 autocast; on
// the CPU both sides take the same path.
TEST_F(FusedKernelSwitch, StandardChecksRunEveryOpInBothPrecisionsAndAgreeOnTheCpu) {
  const auto checks = standard_kernel_checks(at::kCPU);
  ASSERT_EQ(checks.size(), 2 * std::size(kFusedKernels));
  std::vector<std::string> warnings;
  EXPECT_TRUE(check_fused_kernels(checks, 0.0, [&](const std::string& w) { warnings.push_back(w); }).empty());
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  for (size_t i = 0; i < checks.size(); ++i) {
    const bool bf16 = i >= std::size(kFusedKernels);
    SCOPED_TRACE(std::string(fused_kernel_name(checks[i].kernel)) + (bf16 ? " bf16" : " fp32"));
    EXPECT_EQ(checks[i].kernel, kFusedKernels[i % std::size(kFusedKernels)]);
    const std::vector<at::Tensor> out = checks[i].run();
    EXPECT_GE(out.size(), 2u);  // outputs and gradients
    const bool any_bf16 = std::any_of(out.begin(), out.end(), [](const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; });
    EXPECT_EQ(any_bf16, bf16) << "the bf16 checks run the kernels on bf16 tensors, the others on fp32 only";
    EXPECT_EQ(checks[i].tolerance > 0, bf16);
  }
}

TEST_F(FusedKernelSwitch, CudaKernelsPassTheirFirstContactCheck) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  std::vector<std::string> warnings;
  check_fused_kernels(standard_kernel_checks(at::Device(at::kCUDA, 0)), 1e-4, [&](const std::string& w) { warnings.push_back(w); });
  for (const std::string& w : warnings) ADD_FAILURE() << w;
}

}  // namespace
}  // namespace gqe
