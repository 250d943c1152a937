// bf16 autocast around forward passes (CPU and CUDA), as torch.autocast does it: enabled for the
// scope's lifetime, its cast cache cleared when the outermost scope ends.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace gqe {

class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, bool enabled);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool enabled_, previous_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::BFloat16;
};

// x in the autocast dtype when autocast is on for x's device and x is fp32; else x itself. For an
// activation that several linear layers read: autocast would cast it once per layer, and in the
// backward pass cast each layer's gradient back and add them in fp32. (In the decoder the norms
// already write it in bf16, RMSNorm::add_and_norm; this serves layers given an fp32 input.)
at::Tensor autocast_input(const at::Tensor& x);

}  // namespace gqe
