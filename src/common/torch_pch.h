// Precompiled header for every target that uses torch (see CMakeLists.txt): parsing these once
// instead of in every translation unit is most of the build time on a small machine.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn.h>
#include <torch/types.h>
