// Every file gqe writes goes through this file, so that each one is either complete or the command
// stops with an IoError naming it (docs/design notes, "Faults"):
//   - write_file_atomic: a whole small file (a temporary name, fsync, rename over the final name).
//   - OutFile: a file written in pieces, inside a StagedDir or behind AtomicFile.
//   - AtomicFile: a large file streamed to a temporary name; commit() renames it into place.
//   - StagedDir: a directory built under a temporary name; commit() renames it into place.
//   - AppendFile: a log that grows a line at a time; a failed append is undone, never left torn.
// Whatever is not committed (an error, an exception on the way) is removed by the destructors.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace gqe {

// A write the machine refused (full disk, I/O error, read-only file system): a fault, not bad
// input, so the entry points exit with status 1, printing the one-line message.
struct IoError : std::runtime_error {
  IoError(const std::filesystem::path& path, const std::string& action, int error);  // "PATH: cannot ACTION (why)"
  IoError(const std::string& message, int err) : std::runtime_error(message), error(err) {}
  int error;  // errno
};

// A file opened for writing (created or truncated). Every call either does all it says or throws
// IoError; close() makes the contents durable (fsync) and is where late errors (EIO) show up.
class OutFile {
 public:
  explicit OutFile(const std::filesystem::path& path);
  ~OutFile();  // an unclosed file is closed unchecked: its owner is abandoning it
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(std::string_view bytes);
  void write(const void* data, size_t size) { write(std::string_view(static_cast<const char*>(data), size)); }
  void write_at(uint64_t offset, std::string_view bytes);
  void close();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Writes `content` to `path` atomically (readers see the old file or the whole new one).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// A file streamed to PATH.tmp and renamed to PATH by commit(); without commit() it is removed.
class AtomicFile {
 public:
  explicit AtomicFile(const std::filesystem::path& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  OutFile& out() { return file_; }
  void commit();

 private:
  std::filesystem::path final_;
  OutFile file_;
  bool committed_ = false;
};

// A directory built at `staging` (default FINAL.partial, emptied first) and renamed to `final` by
// commit(), which replaces an existing `final` only then. Without commit() the staging is removed.
class StagedDir {
 public:
  explicit StagedDir(const std::filesystem::path& final_dir, const std::filesystem::path& staging = {});
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;
  const std::filesystem::path& path() const { return staging_; }  // write here
  void commit();

 private:
  std::filesystem::path final_, staging_;
  bool committed_ = false;
};

// A log file (metrics.jsonl, train.log) appended to a piece at a time. An append that fails is cut
// off again before IoError is thrown, so the file only ever holds whole pieces. sync() makes what
// was appended durable (the trainer calls it with each checkpoint).
class AppendFile {
 public:
  // truncate: start the file empty; otherwise keep what it holds and append.
  AppendFile(const std::filesystem::path& path, bool truncate);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void append(std::string_view text);
  void sync();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// mkdir -p; throws IoError naming the directory.
void make_directories(const std::filesystem::path& dir);

// fsync a file or directory by path (directories: makes renames inside it durable).
void fsync_path(const std::filesystem::path& path);

// Removes `path` and everything under it (nothing if it does not exist), without following links.
// Not std::filesystem::remove_all: libtorch exports an older build of it that crashes on a
// non-empty directory wherever the link order lets its copy win (docs/design notes, CUDA builds).
void remove_tree(const std::filesystem::path& path);

// Reads a whole file; throws UserError naming the file if it cannot be read.
std::string read_file(const std::filesystem::path& path);

// Checks, before any work, that an output can be created at `path` (an option's value: `what`, e.g.
// "--out"): not empty, not an existing directory (unless `directory`), its parent a directory that
// exists or can be made. Throws UserError naming the option.
void check_output_path(const std::filesystem::path& path, const std::string& what, bool directory);

}  // namespace gqe
