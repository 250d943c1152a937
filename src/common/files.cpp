#include "common/files.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fmt/format.h>

#include "common/error.h"

namespace fs = std::filesystem;

namespace gqe {

IoError::IoError(const fs::path& path, const std::string& action, int err)
    : std::runtime_error(fmt::format("{}: cannot {} ({})", path.string(), action, std::strerror(err))), error(err) {}

namespace {

// write(2) until all is written; a short write with no error set is a full device.
void write_all(int fd, const fs::path& path, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw IoError(path, "write", n < 0 ? errno : ENOSPC);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) throw IoError(to, "rename " + from.string() + " to", errno);
}

fs::path parent_or_dot(const fs::path& path) { return path.parent_path().empty() ? fs::path(".") : path.parent_path(); }

}  // namespace

// --- OutFile -----------------------------------------------------------------------------------

OutFile::OutFile(const fs::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError(path, "create", errno);
}

OutFile::~OutFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutFile::write(std::string_view bytes) { write_all(fd_, path_, bytes); }

void OutFile::write_at(uint64_t offset, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw IoError(path_, "write", n < 0 ? errno : ENOSPC);
    bytes.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
}

void OutFile::close() {
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw IoError(path_, "write", err);
  }
  if (::close(fd) != 0) throw IoError(path_, "write", errno);
}

// --- whole files -------------------------------------------------------------------------------

AtomicFile::AtomicFile(const fs::path& path) : final_(path), file_(path.string() + ".tmp") {}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(file_.path().c_str());
}

void AtomicFile::commit() {
  file_.close();
  rename_or_throw(file_.path(), final_);
  committed_ = true;
  fsync_path(parent_or_dot(final_));
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  AtomicFile file(path);
  file.out().write(content);
  file.commit();
}

// --- directories -------------------------------------------------------------------------------

namespace {
fs::path without_trailing_slash(const fs::path& dir) {
  const fs::path normal = dir.lexically_normal();
  return normal.has_filename() ? normal : normal.parent_path();  // "out/" -> "out"
}
}  // namespace

StagedDir::StagedDir(const fs::path& final_dir, const fs::path& staging)
    : final_(without_trailing_slash(final_dir)),
      staging_(staging.empty() ? fs::path(final_.string() + ".partial") : staging) {
  remove_tree(staging_);  // left by an interrupted run
  make_directories(staging_);
}

StagedDir::~StagedDir() {
  if (committed_) return;
  try {
    remove_tree(staging_);
  } catch (const std::exception&) {  // already failing: the next run clears it
  }
}

void StagedDir::commit() {
  fsync_path(staging_);
  // An existing directory is moved aside, not deleted, until the new one is in place.
  const fs::path old = final_.string() + ".old";
  remove_tree(old);
  const bool replacing = fs::exists(final_);
  if (replacing) rename_or_throw(final_, old);
  try {
    rename_or_throw(staging_, final_);
  } catch (const IoError&) {
    if (replacing) ::rename(old.c_str(), final_.c_str());  // the old one back where it was
    throw;
  }
  committed_ = true;
  remove_tree(old);
  fsync_path(parent_or_dot(final_));
}

// --- logs --------------------------------------------------------------------------------------

AppendFile::AppendFile(const fs::path& path, bool truncate) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
  if (fd_ < 0) throw IoError(path, "open", errno);
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(std::string_view text) {
  struct stat st{};
  if (::fstat(fd_, &st) != 0) throw IoError(path_, "write", errno);
  try {
    write_all(fd_, path_, text);
  } catch (const IoError&) {
    // Cut the piece off again; if even that fails, a reader skips the torn line (MetricsLog does).
    [[maybe_unused]] const int rc = ::ftruncate(fd_, st.st_size);
    throw;
  }
}

void AppendFile::sync() {
  if (::fsync(fd_) != 0) throw IoError(path_, "write", errno);
}

// --- helpers -----------------------------------------------------------------------------------

void remove_tree(const fs::path& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw IoError(path, "remove", errno);
  }
  // Depth first (children before their directory), links themselves rather than their targets.
  const int rc = ::nftw(path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 32,
                        FTW_DEPTH | FTW_PHYS);
  if (rc != 0) throw IoError(path, "remove", errno);
}

void make_directories(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(dir, "create the directory", ec.value());
}

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(path, "open", errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw IoError(path, "write", err);
}

std::string read_file(const fs::path& path) {
  if (fs::is_directory(path)) throw UserError(fmt::format("{}: is a directory, not a file", path.string()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("{}: cannot read ({})", path.string(), std::strerror(errno)));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void check_output_path(const fs::path& path, const std::string& what, bool directory) {
  if (path.empty()) throw UserError(fmt::format("{}: empty path", what));
  const std::string p = path.string();
  if (fs::is_directory(path) && !directory) throw UserError(fmt::format("{} {}: is a directory", what, p));
  if (fs::exists(path) && !fs::is_directory(path) && directory)
    throw UserError(fmt::format("{} {}: exists and is not a directory", what, p));
  // The nearest existing ancestor must be a directory we may write in (a file's parent must exist).
  fs::path up = fs::absolute(path).lexically_normal();
  if (!up.has_filename()) up = up.parent_path();
  up = up.parent_path();
  if (!directory && !fs::is_directory(up))
    throw UserError(fmt::format("{} {}: {} {}", what, p, up.string(), fs::exists(up) ? "is not a directory" : "does not exist"));
  while (!fs::exists(up) && up.has_relative_path()) up = up.parent_path();
  if (!fs::is_directory(up)) throw UserError(fmt::format("{} {}: {} is not a directory", what, p, up.string()));
  if (::access(up.c_str(), W_OK | X_OK) != 0)
    throw UserError(fmt::format("{} {}: cannot write in {} ({})", what, p, up.string(), std::strerror(errno)));
}

}  // namespace gqe
