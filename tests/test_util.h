// Helpers shared by the test executables: temporary directories with files in them, and running a
// built program to look at its exit status, stdout and stderr. (Reading files: gqe::read_file.)
#pragma once

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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
  ~TempDir() { remove_tree(path_); }
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

// Inverts one byte of a file: damage that is never a no-op, whatever the file held there.
inline void flip_byte(const std::filesystem::path& file, std::streamoff offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  const char byte = static_cast<char>(f.get());
  f.seekp(offset);
  f.put(static_cast<char>(~byte));
  if (!f) throw std::runtime_error("cannot flip byte " + std::to_string(offset) + " of " + file.string());
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

// Every line of a run's metrics.jsonl.
inline std::vector<nlohmann::json> metrics_of(const std::filesystem::path& run) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_file(run / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

#ifdef GQE_BINARY
// Command lines for the built tools.
// MASTER_PORT for an experiment or a ladder over several nodes, whose runs' jobs take it and the
// port above it in turn: two free ports below the kernel's range for outgoing connections, so that
// none takes the second meanwhile (as 29500 and 29501 on a cluster). A port from free_port() is in
// that range, and its neighbour went to a connection of a concurrent test once.
inline int free_port_pair() {
  int low = 32768, high = 0;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
  auto bindable = [](int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (fd >= 0) ::close(fd);
    return ok;
  };
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(std::max(1024, low / 2), std::max(1025, low - 2));
  for (int i = 0; i < 1000; ++i)
    if (const int port = pick(rng); bindable(port) && bindable(port + 1)) return port;
  throw std::runtime_error("no two free ports below the ephemeral range");
}

inline std::string gqe(const std::string& args) { return std::string(GQE_BINARY) + " " + args; }
inline std::string data_tool(const std::string& args) { return std::string(GQE_DATA_BINARY) + " " + args; }
#endif

#ifdef GQE_DATA_BINARY
// The hand-written prose fixture as a dataset in dir/ds (val 25% of its paragraphs), with a
// 400-piece tokenizer dir/tok.model, made by the real gqe-data.
inline void make_fixture_dataset(const std::filesystem::path& dir) {
  const std::string tool = GQE_DATA_BINARY, prose = std::string(GQE_SOURCE_DIR) + "/tests/data/prose.txt";
  const auto tok = run_command(tool + " train-tokenizer " + prose + " --doc-boundary blank-line --vocab-size 400 --out " +
                               (dir / "tok").string());
  ASSERT_EQ(tok.status, 0) << tok.err;
  const auto enc = run_command(tool + " encode " + prose + " --doc-boundary blank-line --val-fraction 0.25 --quiet --tokenizer " +
                               (dir / "tok.model").string() + " --out " + (dir / "ds").string());
  ASSERT_EQ(enc.status, 0) << enc.err;
}

// A 32-wide, 2-layer GQE on the fixture dataset dir/ds (make_fixture_dataset): 20 steps of 8
// sequences of 32, a checkpoint and an evaluation every 5 steps. `extra` adds sections (YAML lines).
inline std::string write_small_config(const TempDir& dir, const std::string& extra = "") {
  return dir.write("small.yaml", "inherit: " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqe.yaml\n" + R"(
model: {vocab_size: 400, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8, ffn_hidden: 64}
data: {dataset: )" + (dir.path() / "ds").string() + R"(, seq_len: 32}
train: {tokens: 5120, global_batch_tokens: 256, micro_batch_size: 4, threads: 1,
        schedule: {warmup_tokens: 1024}, clip: {warmup_steps: 5}, checkpoint: {every_tokens: 1280}}
eval: {every_tokens: 1280, val_tokens: 256, batch_size: 4}
)" + extra);
}
#endif

// A run's metrics.jsonl without its wall-clock fields: what an exact resume reproduces bit for bit.
inline std::vector<std::string> deterministic_metrics(const std::filesystem::path& run) {
  std::vector<std::string> out;
  for (auto j : metrics_of(run)) {
    j.erase("tokens_per_s");
    j.erase("elapsed_s");
    out.push_back(j.dump());
  }
  return out;
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

// `command` run as two SLURM tasks of one node meeting at `port` (task 1 in the background, its
// output in `task1_output`; `task1_command` instead where given): task 0's result, and task 1's
// exit status.
struct TwoTasks {
  RunResult task0;
  int task1_status = -1;
};
inline TwoTasks run_as_two_slurm_tasks(const std::string& command, int port, const std::string& task1_output,
                                       const std::string& task1_command = "") {
  auto slurm = [&](int task) {
    return "SLURM_PROCID=" + std::to_string(task) + " SLURM_NTASKS=2 SLURM_LOCALID=" + std::to_string(task) +
           " SLURM_NTASKS_PER_NODE=2 SLURM_JOB_NODELIST=localhost MASTER_PORT=" + std::to_string(port) + " ";
  };
  Background task1("exec env " + slurm(1) + (task1_command.empty() ? command : task1_command) + " >" + task1_output + " 2>&1");
  TwoTasks r;
  r.task0 = run_command(slurm(0) + command);
  r.task1_status = task1.wait();
  return r;
}

}  // namespace gqe::test
