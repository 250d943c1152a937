// The safetensors format (an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian data), for model weights in
// checkpoints and exports, so that Hugging Face tools read them as they are.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>

namespace gqe {

// Writes the tensors (copied to CPU, contiguous) in the given order; metadata goes to "__metadata__".
// The file is written in place and fsynced: callers build it inside a StagedDir (common/files.h).
void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads every tensor onto the CPU. Throws UserError naming the file for anything malformed.
std::map<std::string, at::Tensor> read_safetensors(const std::filesystem::path& path);

}  // namespace gqe
