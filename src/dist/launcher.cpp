#include "dist/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "common/stop_signals.h"
#include "dist/node_agreement.h"
#include "dist/rendezvous.h"

namespace gqe {

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

// The ranks' end of a pipe from them to their launcher (run_ranks).
constexpr const char* kLauncherFd = "GQE_LAUNCHER_FD";
constexpr char kFinished[] = "finished\n";

void tell_launcher_finished() {
  const char* fd = std::getenv(kLauncherFd);
  if (!fd) return;
  // One write of a few bytes to a pipe is atomic; the launcher reads after every rank has ended.
  [[maybe_unused]] const ssize_t n = ::write(std::atoi(fd), kFinished, sizeof kFinished - 1);
}

namespace {

std::atomic<int> g_forward{0};
extern "C" void on_launcher_signal(int sig) { g_forward = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
}

struct Attempt {
  int status = 0, forwarded = 0;
  bool fault = false;     // the job failed by a fault (Restarts), not by its input or a stop
  bool followed = false;  // stopped for another node's fault (NodeAgreement)
  bool finished = false;  // a rank told tell_launcher_finished()
};

NodeOutcome outcome_of(const Attempt& a) {
  if (a.forwarded) return NodeOutcome::stopped;
  if (a.followed) return NodeOutcome::followed;
  if (a.fault) return NodeOutcome::fault;
  return a.status == 2 ? NodeOutcome::bad_input : NodeOutcome::ok;
}

// What the ranks told through the pipe (all of them have ended: whatever they wrote is there).
bool told_finished(int fd) {
  std::string told;
  char buffer[256];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) told.append(buffer, static_cast<size_t>(n));
  return told.find(kFinished) != std::string::npos;
}

// One start of this node's ranks, until every one has ended. With `agreement` (several nodes that
// may start again), a fault here stops the other nodes' ranks, and one there stops these.
Attempt run_ranks(int nproc, const std::vector<std::string>& args, const NodeLayout& node, int restart, int max_restarts,
                  NodeAgreement* agreement) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const int port = node.master_port > 0 ? node.master_port : free_port();
  const int first = node.node_rank * nproc;
  const pid_t launcher = ::getpid();

  // The ranks' reports (tell_launcher_finished); non-blocking, as a rank's own child may hold the
  // write end after the rank ended.
  int report[2];
  if (::pipe2(report, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error(std::string("launcher: pipe failed: ") + std::strerror(errno));
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
      ::setenv("GQE_RESTART_COUNT", std::to_string(restart).c_str(), 1);
      ::setenv("GQE_MAX_RESTARTS", std::to_string(max_restarts).c_str(), 1);
      if (agreement) ::setenv("GQE_AGENT_STORE", "1", 1);  // node 0's launcher serves the store
      const int told = ::dup(report[1]);  // without O_CLOEXEC: it survives the exec
      ::setenv(kLauncherFd, std::to_string(told).c_str(), 1);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(self.c_str(), argv.data());
      ::_exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  ::close(report[1]);
  ranks_started();

  Attempt attempt;
  int failed_rank = -1, running = nproc;
  bool ended_well = false;  // a rank ended with status 0 before any failed
  std::chrono::steady_clock::time_point kill_at{}, beat_at{};
  auto stop_ranks = [&] {
    for (pid_t pid : pids)
      if (pid > 0) ::kill(pid, SIGTERM), ::kill(pid, SIGCONT);  // a stopped rank takes SIGTERM once it runs
    kill_at = std::chrono::steady_clock::now() + kStopGrace;
  };
  auto follow = [&](const std::string& line) {  // another node's fault, named on this node's console too
    fmt::print(stderr, "gqe: {}{}\n", line, running > 0 ? fmt::format("; stopping this node's {} rank(s)", running) : "");
    std::fflush(stderr);
    attempt.followed = true;
  };
  while (running > 0) {
    if (const int sig = g_forward.exchange(0)) {
      attempt.forwarded = sig;
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
        if (ok && failed_rank < 0) ended_well = true;
        if (!ok && failed_rank < 0 && !attempt.followed) {
          failed_rank = r;
          // Ended by the signal the user sent (a command that does not catch it: gqe eval, bench):
          // the shell's status for it, and nothing to announce.
          const bool stopped = attempt.forwarded != 0 && WIFSIGNALED(status) && WTERMSIG(status) == attempt.forwarded;
          const bool bad_input = WIFEXITED(status) && WEXITSTATUS(status) == 2;  // said in one line already
          attempt.status = WIFEXITED(status) ? WEXITSTATUS(status) : stopped ? 128 + attempt.forwarded : 1;
          attempt.fault = !bad_input && attempt.forwarded == 0 && !ended_well;
          // A rank that had its say (an error line) ends the others; one killed by a signal could not.
          if (!stopped && !bad_input && (running > 0 || WIFSIGNALED(status)))
            fmt::print(stderr, "gqe: rank {} (pid {}) {}{}\n", first + r, done, describe(status),
                       running == 0 ? ""
                                    : fmt::format("; stopping the other {} rank(s){}", running, node.nnodes > 1 ? " of this node" : ""));
          if (agreement && attempt.fault) {
            // A rank that ended with an error may have lost a peer on another node, whose launcher
            // is about to name the cause: then every node's console names the same rank.
            const std::optional<std::string> there =
                WIFEXITED(status) ? agreement->await_failure_elsewhere(restart, std::chrono::seconds(1)) : std::nullopt;
            if (there) follow(*there);
            else agreement->tell_failure(restart, fmt::format("node {}: rank {} (pid {}) {}", node.node_rank, first + r, done, describe(status)));
          }
          stop_ranks();
        }
      }
      continue;
    }
    if (agreement && std::chrono::steady_clock::now() > beat_at) {
      beat_at = std::chrono::steady_clock::now() + NodeAgreement::kBeatEvery;
      const std::optional<std::string> line = agreement->beat(restart);
      if (line && failed_rank < 0 && !attempt.followed) {
        follow(*line);
        stop_ranks();
      }
    }
    if ((failed_rank >= 0 || attempt.followed) && std::chrono::steady_clock::now() > kill_at)
      for (pid_t pid : pids)
        if (pid > 0) ::kill(pid, SIGKILL);  // a rank stuck in a collective (or stopped)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if ((failed_rank >= 0 || attempt.followed) && attempt.status == 0) attempt.status = 1;
  if (attempt.forwarded != 0) attempt.fault = false;  // the user stopped it meanwhile
  attempt.finished = told_finished(report[0]);
  ::close(report[0]);
  return attempt;
}

}  // namespace

std::string giving_up(int restarts, int max_restarts) {
  return fmt::format("the job failed again after {} restart(s) (--max-restarts {}): giving up", restarts, max_restarts);
}

LaunchedJob launch_local_ranks(int nproc, const std::vector<std::string>& args, const NodeLayout& node, const Restarts& restarts) {
  std::optional<NodeAgreement> agreement;
  if (node.nnodes > 1 && restarts.max > 0) agreement.emplace(node, restarts.max);
  g_forward = 0;
  auto previous_int = std::signal(SIGINT, on_launcher_signal), previous_term = std::signal(SIGTERM, on_launcher_signal);
  unblock_stop_signals();  // and the ranks inherit an unblocked mask
  LaunchedJob job;
  for (;;) {
    const Attempt attempt = run_ranks(nproc, job.restarts == 0 || restarts.args.empty() ? args : restarts.args, node, job.restarts,
                                      restarts.max, agreement ? &*agreement : nullptr);
    job.status = attempt.status;
    job.finished = attempt.finished;
    if (attempt.forwarded) job.stop_signal = attempt.forwarded;
    if (restarts.max == 0) break;
    const int sig = g_forward.load();  // the user stops it between two starts
    if (sig) job.stop_signal = sig;
    bool again = false;
    if (agreement) {
      again = agreement->start_again(job.restarts, sig ? NodeOutcome::stopped : outcome_of(attempt), restarts.max);
    } else if (attempt.fault && !sig) {
      again = job.restarts < restarts.max;
      if (!again)
        fmt::print(stderr, "gqe: {}\n", giving_up(job.restarts, restarts.max));
    }
    if (!again) break;
    ++job.restarts;
    fmt::print(stderr, "gqe: the job failed (exit status {}); starting it again{}: restart {} of at most {} (--max-restarts)\n",
               attempt.status, agreement ? " on every node" : "", job.restarts, restarts.max);
    std::fflush(stderr);
  }
  agreement.reset();  // node 0: once the others have read the last decision
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  return job;
}

}  // namespace gqe
