// An exclusive lock on a run directory (RUN_DIR/train.lock, flock): one trainer per run, and a way
// for others (gqe experiment status) to tell that a run is being trained. The kernel releases it
// when the holder exits, however it exits.
#pragma once

#include <filesystem>

namespace gqe {

class RunLock {
 public:
  // Takes the lock; throws UserError naming the run (and the holder's pid) if another process has it.
  explicit RunLock(const std::filesystem::path& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // Whether some process holds the lock of this run now.
  static bool held(const std::filesystem::path& run_dir);

 private:
  int fd_ = -1;
};

}  // namespace gqe
