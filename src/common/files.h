// File-system helpers for outputs that must never be seen half-written: write to a temporary
// name, fsync, rename over the final name, fsync the directory.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace gqe {

// Writes `content` to `path` atomically (readers see the old file or the whole new one).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// fsync a file or directory by path (directories: makes renames inside it durable).
void fsync_path(const std::filesystem::path& path);

// Removes `path` and everything under it (nothing if it does not exist), without following links.
// Not std::filesystem::remove_all: libtorch exports an older build of it that crashes on a
// non-empty directory wherever the link order lets its copy win (docs/design notes, CUDA builds).
void remove_tree(const std::filesystem::path& path);

// Reads a whole file; throws UserError naming the file if it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace gqe
