#include "common/checksum.h"

#include <charconv>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <xxhash.h>

#include "common/error.h"

namespace gqe {

uint64_t checksum64(const void* data, size_t size) { return XXH3_64bits(data, size); }

uint64_t file_checksum(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("{}: cannot read ({})", path.string(), std::strerror(errno)));
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(), &XXH3_freeState);
  XXH3_64bits_reset(state.get());
  std::vector<char> buffer(1 << 22);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    XXH3_64bits_update(state.get(), buffer.data(), static_cast<size_t>(in.gcount()));
  }
  return XXH3_64bits_digest(state.get());
}

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

std::optional<uint64_t> parse_hex64(const std::string& s) {
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, 16);
  if (ec != std::errc() || end != s.data() + s.size() || s.size() != 16) return std::nullopt;
  return value;
}

}  // namespace gqe
