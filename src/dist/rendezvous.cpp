#include "dist/rendezvous.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/stop_signals.h"
#include "dist/node_agreement.h"

namespace gqe {
namespace {

// The meeting's keys. The verdict is set once (compareSet): "go" by rank 0 when all ranks came,
// "late <how many came>" by rank 0 when they did not in time, or "stop <status> <line>" by the first
// process that stopped before it joined.
constexpr const char* kWorld = "gqe/join/world";      // the job's size, as rank 0 sees it
constexpr const char* kJoined = "gqe/join/joined";    // ranks that came
constexpr const char* kVerdict = "gqe/join/verdict";
constexpr const char* kPrinted = "gqe/join/printed";  // the stop's line is out on rank 0's console
constexpr const char* kKnown = "gqe/join/known";      // ranks that read a verdict other than go (a teller counts its own)

std::string rank_key(int rank) { return fmt::format("gqe/join/rank/{}", rank); }  // claimed by the rank that came

// This process has begun to join, or started ranks that join (a launcher): it no longer tells.
std::atomic<bool> g_joining{false};

using Clock = std::chrono::steady_clock;

// The store is served by a launcher (torchrun's agent; node 0's gqe launcher over several nodes
// with --max-restarts), not by rank 0, and outlives each attempt of the job.
bool agent_store() {
  const char* torchrun = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const char* gqe = std::getenv("GQE_AGENT_STORE");
  return (torchrun && std::string(torchrun) == "True") || (gqe && std::string(gqe) == "1");
}

// The process that serves the store stays until `ranks` ranks have read the verdict there.
void serve_until_known(c10d::Store& store, int64_t ranks) {
  const auto until = Clock::now() + kTellFor;
  while (store.add(kKnown, 0) < ranks && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// Whether this process is the first of a machine other than rank 0's to show a line that rank 0
// shows too (machines by their first rank: rank - local_rank).
bool first_to_show(c10d::Store& store, const DistEnvironment& env) {
  const int machine = env.rank - env.local_rank;
  return store.add(fmt::format("gqe/join/shown/{}", machine), 1) == 1 && machine != 0;
}

// Whether something accepts a TCP connection at addr:port within `wait`.
bool accepts(const std::string& addr, int port, std::chrono::milliseconds wait) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool ok = false;
  for (addrinfo* a = found; a && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t size = sizeof(error);
      ok = ::poll(&p, 1, static_cast<int>(wait.count())) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 &&
           error == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

// How long a wait has lasted, and its limit, as the notices of a slow gathering say it.
std::string waited_so_far(Clock::duration waited, Clock::duration limit) {
  return fmt::format("{} s so far, giving up at {} s", std::chrono::round<std::chrono::seconds>(waited).count(),
                     std::chrono::round<std::chrono::seconds>(limit).count());
}

// A stop signal before the job formed: nothing was written, and the same command starts it.
std::string stopped_line(const DistEnvironment& env, int sig, const std::string& while_what) {
  return fmt::format("rank {}: stopped by {} {}: nothing was written; the same command starts the job", env.rank,
                     stop_signal_name(sig), while_what);
}

// Before a client connects: whether the store's server answers by `deadline` (c10d's own connect
// would retry in silence, deaf to a stop signal, then fail with a stack trace). A stop signal
// meanwhile throws AlreadyReported (status 0), said on this machine's console once. A long wait
// (a node started well before node 0, or left waiting for a job node 0 will not start) says so on
// the machine's console, as rank 0 says whom it waits for.
bool await_server(const DistEnvironment& env, Clock::time_point deadline) {
  const auto start = Clock::now();
  auto notice_at = start + std::chrono::seconds(10);
  while (!accepts(env.master_addr, env.master_port, std::chrono::milliseconds(200))) {
    if (const int sig = stop_signal()) {
      const std::string line = stopped_line(env, sig, fmt::format("while waiting for the job's store at {}:{}", env.master_addr, env.master_port));
      if (env.local_rank == 0) print_now(line);
      throw AlreadyReported(line, 0);
    }
    if (Clock::now() > deadline) return false;
    if (Clock::now() > notice_at) {
      if (env.local_rank == 0)
        print_now(fmt::format("rank {}: waiting for the job's store at {}:{} (rank 0 serves it): {}", env.rank, env.master_addr,
                              env.master_port, waited_so_far(Clock::now() - start, deadline - start)));
      notice_at += std::chrono::seconds(60);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

// The verdict of a stop signal here, unless the job has one already.
void tell_stopped_by_signal(c10d::Store& store, const DistEnvironment& env, int sig) {
  const std::string line = stopped_line(env, sig, fmt::format("while the job gathered ({} of {} ranks had come)", store.add(kJoined, 0), env.world));
  store.compareSet(kVerdict, "", "stop 0 " + line);
}

// Waits for `key` until `deadline`, then throws what why() says; a stop signal meanwhile becomes
// the job's verdict. (Under torchrun the agent serves the store, so a rank may wait there for
// ranks that never come, rank 0 included.)
void wait_until(c10d::Store& store, const DistEnvironment& env, const char* key, Clock::time_point deadline,
                const std::function<std::string()>& why) {
  while (true) {
    if (const int sig = stop_signal()) tell_stopped_by_signal(store, env, sig);
    if (std::string(key) != kVerdict && store.check({kVerdict})) return;  // the job stops: no point waiting for more
    // Slices of at most half a second, to hear a signal; at least 1 ms: c10d reads a zero timeout as none.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    try {
      store.wait({key}, std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(500)));
      return;
    } catch (const c10::DistStoreError&) {
      if (left <= std::chrono::milliseconds(500)) throw std::runtime_error(why());
    }
  }
}

// What makes the job of the wrong shape for this rank (empty if nothing): nodes that start
// different numbers of ranks, two nodes with the same NODE_RANK. Said here, where it can still be
// said: the collectives would hang on it, or mix ranks up.
std::string wrong_shape(c10d::Store& store, const DistEnvironment& env, Clock::time_point deadline) {
  if (env.rank == 0) store.compareSet(kWorld, "", std::to_string(env.world));
  wait_until(store, env, kWorld, deadline, [] { return std::string("rank 0 did not come"); });
  if (!store.check({kWorld})) return "";  // the job stopped before rank 0 came
  const std::string world0 = store.get_to_str(kWorld);
  if (world0 != std::to_string(env.world))
    return fmt::format("rank {}: a job of {} ranks here, of {} on rank 0: every node must start as many ranks (--nproc, NNODES)",
                       env.rank, env.world, world0);
  if (store.add(rank_key(env.rank), 1) > 1)
    return fmt::format("rank {} came twice: two nodes with the same NODE_RANK?", env.rank);
  // Nodes that gqe launched with restarts (node 0's launcher serves the store) and without.
  if (env.nproc > 0 && env.restart == 0 && !env.one_machine()) {
    const bool here = agent_store(), there = store.check({kLauncherRestartsKey});  // gqe launched it: not torchrun's agent
    const std::string node0 = there ? store.get_to_str(kLauncherRestartsKey) : "0";
    if (here != there || (here && node0 != std::to_string(env.max_restarts)))
      return fmt::format("rank {}: --max-restarts {} on this node, {} on node 0: give every node the same", env.rank,
                         here ? env.max_restarts : 0, node0);
  }
  return "";
}

// A job that is slow to gather says on rank 0's console whom it waits for: a node not started, or
// one that cannot reach the store, is otherwise a silent wait of dist.timeout_s.
void say_who_is_missing(c10d::Store& store, const DistEnvironment& env, Clock::duration waited, std::chrono::milliseconds timeout) {
  std::vector<int> missing;
  for (int r = 0; r < env.world; ++r)
    if (!store.check({rank_key(r)})) missing.push_back(r);
  if (missing.empty()) return;  // all came; some of a wrong shape
  const size_t listed = std::min<size_t>(missing.size(), 8);
  std::string ranks = fmt::format("{}", fmt::join(missing.begin(), missing.begin() + static_cast<std::ptrdiff_t>(listed), ", "));
  if (missing.size() > listed) ranks += fmt::format(" and {} more", missing.size() - listed);
  print_now(fmt::format("waiting at {}:{} for {} of {} ranks ({}): {}", env.master_addr, env.master_port, missing.size(), env.world,
                        ranks, waited_so_far(waited, timeout)));
}

// The end of a join whose verdict is not go. Rank 0's line is out before any rank's exit can make
// a launcher stop rank 0. A process that stopped is named by rank 0 alone; a job not whole in
// time, by rank 0 and once on every other machine that came.
[[noreturn]] void stop(c10d::Store& store, const DistEnvironment& env, const std::string& verdict, std::chrono::milliseconds timeout) {
  const bool late = verdict.rfind("late ", 0) == 0;  // "late <came>", else "stop <status digit> <line>"
  const int64_t came = late ? std::stoll(verdict.substr(5)) : 0;
  const int status = late ? 1 : verdict[5] - '0';
  const std::string line = late ? cannot_join(env, timeout, fmt::format("{} of {} ranks came", came, env.world)) : verdict.substr(7);
  if (env.rank != 0) {
    try {
      store.wait({kPrinted}, std::chrono::seconds(5));
    } catch (const std::exception&) {
    }
  }
  if (env.rank == 0 || (late && first_to_show(store, env))) print_now((status == 1 ? "error: " : "") + line);
  if (env.rank == 0) store.set(kPrinted, "1");
  store.add(kKnown, 1);
  // The store's server stays until the others have read the verdict (a teller counted its own
  // ranks); after a stop signal, those that came (the others may never come).
  if (env.rank == 0 && !agent_store()) serve_until_known(store, late ? came : status == 0 ? store.add(kJoined, 0) : env.world);
  throw AlreadyReported(line, status);
}

// The store as its server or a client, once a client knows the server answers (await_server).
c10::intrusive_ptr<c10d::Store> open_store(const DistEnvironment& env, std::chrono::milliseconds timeout, bool serve) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = serve && !agent_store();
  so.waitWorkers = false;  // join_job counts the ranks in, and hears of a process that stopped meanwhile
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const c10::DistNetworkError& e) {
    // Two jobs given the same MASTER_PORT on one machine: the user's to change, and c10d says so
    // only deep in its message.
    if (so.isServer && std::string(e.what()).find("EADDRINUSE") != std::string::npos)
      throw UserError(fmt::format("environment: MASTER_PORT={} is in use on this machine (by another job?): choose another "
                                  "port, the same on every node", env.master_port));
    throw;
  }
  // A new attempt's keys in a store that outlives attempts; the first attempt's are the plain ones,
  // which a process that stops before its launcher starts ranks tells (tell_job_stopped).
  if (!agent_store() || env.restart == 0) return store;
  return c10::make_intrusive<c10d::PrefixStore>(fmt::format("gqe/attempt_{}", env.restart), store);
}

}  // namespace

c10::intrusive_ptr<c10d::Store> connect_store(const DistEnvironment& env, std::chrono::milliseconds timeout, bool serve) {
  if ((!serve || agent_store()) && !await_server(env, Clock::now() + timeout)) throw std::runtime_error("nothing answers there");
  return open_store(env, timeout, serve);
}

c10::intrusive_ptr<c10d::Store> join_job(const DistEnvironment& env, std::chrono::milliseconds timeout) {
  g_joining = true;
  const auto deadline = Clock::now() + timeout;
  // Said once per machine, by its first rank: the others give up a little later, so that a
  // launcher, which stops a node's ranks at the first that fails, does not stop that one first.
  const auto server_by = env.local_rank == 0 ? deadline : deadline + std::chrono::seconds(2);
  if ((env.rank != 0 || agent_store()) && !await_server(env, server_by)) {
    const std::string line = cannot_join(env, timeout, "nothing answers there");
    if (env.local_rank == 0) print_now("error: " + line);
    throw AlreadyReported(line, 1);
  }
  c10::intrusive_ptr<c10d::Store> store = open_store(env, timeout, env.rank == 0);
  const std::string wrong = wrong_shape(*store, env, deadline);
  if (!wrong.empty()) {
    store->compareSet(kVerdict, "", "stop 2 " + wrong);
  } else {
    store->add(kJoined, 1);
  }
  if (env.rank == 0 && wrong.empty()) {  // counts the others in, and says whom it waits for
    const auto start = Clock::now();
    auto notice_at = start + std::chrono::seconds(10);
    while (!store->check({kVerdict})) {
      if (const int sig = stop_signal()) {
        tell_stopped_by_signal(*store, env, sig);
        continue;
      }
      const int64_t joined = store->add(kJoined, 0);
      if (joined >= env.world) {
        store->compareSet(kVerdict, "", "go");
      } else if (Clock::now() > deadline) {
        store->compareSet(kVerdict, "", fmt::format("late {}", joined));  // the ranks that came fail with rank 0
      } else if (Clock::now() > notice_at) {
        say_who_is_missing(*store, env, Clock::now() - start, timeout);
        notice_at += std::chrono::seconds(60);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  } else {
    // Rank 0 gives the verdict at the deadline: a moment more for it to arrive. (Under torchrun,
    // rank 0 may never come: each rank decides at the deadline.)
    const auto verdict_by = agent_store() ? deadline : deadline + std::chrono::seconds(2);
    wait_until(*store, env, kVerdict, verdict_by, [&] { return fmt::format("{} of {} ranks came", store->add(kJoined, 0), env.world); });
  }
  const std::string verdict = store->get_to_str(kVerdict);
  if (verdict == "go" && wrong.empty()) return store;
  if (verdict == "go") throw UserError(wrong);  // the job formed without this rank
  // This machine's console shows it too: a wrong shape found here, a stop signal received here.
  if (!wrong.empty() && first_to_show(*store, env)) print_now(wrong);
  if (wrong.empty() && stop_signal() && verdict.rfind("stop 0 ", 0) == 0 && first_to_show(*store, env)) print_now(verdict.substr(7));
  stop(*store, env, verdict, timeout);
}

void print_now(const std::string& line) {
  fmt::print(stderr, "gqe: {}\n", line);
  std::fflush(stderr);
}

std::string cannot_join(const DistEnvironment& env, std::chrono::milliseconds timeout, const std::string& why) {
  return fmt::format("rank {}: cannot join the job at {}:{} within {}s: {} (is a node not running, or unable to reach this "
                     "address? a launcher that stopped says why on its console)",
                     env.rank, env.master_addr, env.master_port, std::chrono::duration_cast<std::chrono::seconds>(timeout).count(), why);
}

void ranks_started() { g_joining = true; }

bool tell_job_stopped(const DistEnvironment& first, int ranks, const std::string& who, int status, const std::string& line,
                      bool next_job) {
  if ((g_joining && !next_job) || first.world <= ranks) return true;
  try {
    const bool serving = first.rank == 0 && !agent_store();  // rank 0 would have served the store
    c10::intrusive_ptr<c10d::Store> store = connect_store(first, kTellFor, serving);
    const bool show_here = first_to_show(*store, first);
    if (first.rank == 0) store->compareSet(kWorld, "", std::to_string(first.world));  // in rank 0's place
    store->compareSet(kVerdict, "", fmt::format("stop {} {}: {}", status == 2 ? 2 : 1, who, line));  // the first to stop is named
    if (serving) store->set(kPrinted, "1");  // this process printed it, on rank 0's console
    store->add(kKnown, ranks);
    if (serving) serve_until_known(*store, first.world);
    return show_here;  // rank 0 shows the line where its console is
  } catch (const std::exception&) {
    return true;  // no job to tell: rank 0's machine stopped too, or never started
  }
}

}  // namespace gqe
