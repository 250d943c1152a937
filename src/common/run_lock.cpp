#include "common/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include <fmt/format.h>

#include "common/error.h"

namespace gqe {

RunLock::RunLock(const std::filesystem::path& run_dir) {
  const std::string file = (run_dir / "train.lock").string();
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "cannot open " + file);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    throw UserError(fmt::format("{}: is being trained by another process (pid {})", run_dir.string(),
                                n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string("unknown")));
  }
  const std::string me = std::to_string(::getpid());
  // Who holds the lock, for the message above; a failed write only makes that message vaguer.
  [[maybe_unused]] const bool noted =
      ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) == static_cast<ssize_t>(me.size());
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

bool RunLock::held(const std::filesystem::path& run_dir) {
  const int fd = ::open((run_dir / "train.lock").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool locked = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return locked;
}

}  // namespace gqe
