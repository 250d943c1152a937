// Helpers shared by the test executables: temporary directories with files in them, and running a
// built program to look at its exit status, stdout and stderr. (Reading files: gqe::read_file.)
#pragma once

#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "common/error.h"
#include "common/files.h"

namespace gqe::test {

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gqe-test-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes `text` to `name` inside the directory and returns the file's path.
  std::string write(const std::string& name, const std::string& text) const {
    const auto file = path_ / name;
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file) << text;
    return file.string();
  }

 private:
  std::filesystem::path path_;
};

// Runs `f` and returns the message of the UserError it throws, checking that it is one line;
// fails the test if it throws nothing (or something else).
inline std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "error is not one line: " << message;
    return message;
  }
  ADD_FAILURE() << "expected a UserError";
  return "";
}

struct RunResult {
  int status = -1;
  std::string out, err;
};

// Runs a shell command line, capturing stdout and stderr separately.
inline RunResult run_command(const std::string& command) {
  TempDir dir;
  const std::string out = (dir.path() / "out").string(), err = (dir.path() / "err").string();
  const int raw = std::system((command + " >" + out + " 2>" + err).c_str());
  RunResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

// A command started in the background (through /bin/sh), to signal and wait for.
class Background {
 public:
  explicit Background(const std::string& command) {
    const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
    if (posix_spawn(&pid_, "/bin/sh", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0)
      throw std::runtime_error("cannot start: " + command);
  }
  ~Background() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  // "exec" in the command makes the signal reach the program rather than the shell.
  void signal(int sig) { ::kill(pid_, sig); }
  pid_t pid() const { return pid_; }
  // Exit status, or 128 + signal number when killed.
  int wait() {
    int raw = 0;
    ::waitpid(pid_, &raw, 0);
    pid_ = -1;
    return WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace gqe::test
