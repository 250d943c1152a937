#include "checkpoint/safetensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>

#include "common/error.h"
#include "common/files.h"

namespace gqe {
namespace {

constexpr std::pair<at::ScalarType, const char*> kDtypes[] = {
    {at::kFloat, "F32"}, {at::kBFloat16, "BF16"}, {at::kHalf, "F16"}, {at::kDouble, "F64"},
    {at::kLong, "I64"},  {at::kInt, "I32"},       {at::kByte, "U8"},  {at::kBool, "BOOL"}};

const char* dtype_name(at::ScalarType t) {
  for (const auto& [type, name] : kDtypes)
    if (type == t) return name;
  throw std::runtime_error(fmt::format("safetensors: unsupported dtype {}", c10::toString(t)));
}

}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  OutFile out(path);
  const uint64_t length = text.size();
  out.write(&length, 8);
  out.write(text);
  for (const at::Tensor& t : data) out.write(t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
  out.close();
}

std::map<std::string, at::Tensor> read_safetensors(const std::filesystem::path& path) {
  const std::string file = path.string();
  const std::string bytes = read_file(path);
  auto bad = [&](const std::string& why) { return UserError(fmt::format("{}: not a valid safetensors file ({})", file, why)); };
  if (bytes.size() < 8) throw bad("shorter than its header length");
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  if (length > bytes.size() - 8) throw bad("header length past the end of the file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, length));
  } catch (const nlohmann::json::exception&) {
    throw bad("header is not JSON");
  }
  if (!header.is_object()) throw bad("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - length;
  const char* data = bytes.data() + 8 + length;
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      const std::string dtype = entry.at("dtype").get<std::string>();
      const auto shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto range = entry.at("data_offsets").get<std::vector<uint64_t>>();
      at::ScalarType type = at::kFloat;
      bool known = false;
      for (const auto& [t, n] : kDtypes)
        if (dtype == n) type = t, known = true;
      if (!known) throw bad(fmt::format("{}: unsupported dtype {}", name, dtype));
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
      const uint64_t size = static_cast<uint64_t>(t.numel()) * t.element_size();
      if (range.size() != 2 || range[1] < range[0] || range[1] > data_size || range[1] - range[0] != size)
        throw bad(fmt::format("{}: byte range does not fit its shape or the file", name));
      std::memcpy(t.data_ptr(), data + range[0], size);
      out.emplace(name, std::move(t));
    } catch (const nlohmann::json::exception&) {
      throw bad(fmt::format("{}: malformed entry", name));
    }
  }
  return out;
}

}  // namespace gqe
