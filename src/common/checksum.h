// XXH3-64 checksums of memory and files (shards, checkpoints), and their 16-hex-digit spelling.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace gqe {

uint64_t checksum64(const void* data, size_t size);
// Streams the file; throws UserError naming it if it cannot be read.
uint64_t file_checksum(const std::filesystem::path& path);
std::string hex64(uint64_t value);                         // 16 lowercase hex digits
std::optional<uint64_t> parse_hex64(const std::string& text);  // nothing unless exactly 16 hex digits

}  // namespace gqe
