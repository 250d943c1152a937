#include "dist/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace gqe {
namespace {

std::atomic<int> g_forward{0};
extern "C" void on_launcher_signal(int sig) { g_forward = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
}

}  // namespace

int free_port() {  // the kernel picks one: bind port 0 on 127.0.0.1
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error(std::string("launcher: no free port on 127.0.0.1: ") + std::strerror(errno));
  ::close(fd);
  return ntohs(addr.sin_port);
}

LaunchedJob launch_local_ranks(int nproc, const std::vector<std::string>& args, const NodeLayout& node) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const int port = node.master_port > 0 ? node.master_port : free_port();
  const int first = node.node_rank * nproc;
  const pid_t launcher = ::getpid();
  g_forward = 0;
  auto previous_int = std::signal(SIGINT, on_launcher_signal), previous_term = std::signal(SIGTERM, on_launcher_signal);

  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("launcher: fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      // A process group of its own: a terminal's Ctrl-C reaches the launcher, which forwards it
      // once (a second signal would make the rank stop without saving).
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(1);
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(first + r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(node.nnodes * nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", node.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("GQE_NPROC", std::to_string(nproc).c_str(), 1);  // who started it: its resume hint says --nproc
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(self.c_str(), argv.data());
      ::_exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }

  int failed_rank = -1, job_status = 0, running = nproc, forwarded = 0;
  std::chrono::steady_clock::time_point kill_at{};
  while (running > 0) {
    if (const int sig = g_forward.exchange(0)) {
      forwarded = sig;
      for (pid_t pid : pids)
        if (pid > 0) ::kill(pid, sig);
    }
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      for (int r = 0; r < nproc; ++r) {
        if (pids[static_cast<size_t>(r)] != done) continue;
        pids[static_cast<size_t>(r)] = -1;
        --running;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && failed_rank < 0) {
          failed_rank = r;
          // Ended by the signal the user sent (a command that does not catch it: gqe eval, bench):
          // the shell's status for it, and nothing to announce.
          const bool stopped = forwarded != 0 && WIFSIGNALED(status) && WTERMSIG(status) == forwarded;
          job_status = WIFEXITED(status) ? WEXITSTATUS(status) : stopped ? 128 + forwarded : 1;
          // Status 2 is bad input, which the job has said in one line already.
          if (running > 0 && !stopped && !(WIFEXITED(status) && WEXITSTATUS(status) == 2))
            fmt::print(stderr, "gqe: rank {} (pid {}) {}; stopping the other {} rank(s){}\n", first + r, done, describe(status), running,
                       node.nnodes > 1 ? " of this node" : "");
          for (pid_t pid : pids)
            if (pid > 0) ::kill(pid, SIGTERM), ::kill(pid, SIGCONT);  // a stopped rank takes SIGTERM once it runs
          kill_at = std::chrono::steady_clock::now() + kStopGrace;
        }
      }
      continue;
    }
    if (failed_rank >= 0 && std::chrono::steady_clock::now() > kill_at)
      for (pid_t pid : pids)
        if (pid > 0) ::kill(pid, SIGKILL);  // a rank stuck in a collective (or stopped)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  if (failed_rank >= 0 && job_status == 0) job_status = 1;
  return {job_status, forwarded};
}

}  // namespace gqe
