#include "dist/watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace gqe {

using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kVerdictKey = "gqe/watchdog/verdict";
std::string beat_key(int rank) { return fmt::format("gqe/watchdog/beat/{}", rank); }

int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }
double seconds_since(int64_t ns) { return static_cast<double>(now_ns() - ns) / 1e9; }

}  // namespace

struct Watchdog::State {
  c10::intrusive_ptr<c10d::Store> store;
  int rank = 0, world = 1;
  std::chrono::milliseconds timeout{0}, interval{0};
  std::string where;

  std::atomic<bool> stopped{false};
  std::mutex mutex;  // for the sleeps that stop() cuts short
  std::condition_variable wake;
  std::atomic<int> running{0};  // threads not yet returned

  std::atomic<int64_t> last_round{0};     // when the beat thread last completed a round with the store
  std::atomic<int64_t> waiting_since{0};  // when the main thread began its current wait (0: not waiting)
  std::atomic<const char*> waiting_for{nullptr};
  std::atomic<bool> failing{false};

  // Sleeps one interval, or `d` (or until stop()); false once stopped.
  bool pause() { return pause(interval); }
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mutex);
    wake.wait_for(lock, d, [this] { return stopped.load(); });
    return !stopped;
  }

  // Whether this process itself was frozen (SIGSTOP, a suspended VM) since `last`, the previous
  // tick of the calling thread: then the silence it sees is its own, not the others'.
  bool was_frozen(int64_t& last) const {
    const int64_t now = now_ns(), gap = now - last;
    last = now;
    return gap > 3 * std::chrono::duration_cast<std::chrono::nanoseconds>(interval).count() + 1'000'000'000;
  }

  // The job cannot go on: one line, the verdict for the other ranks (when this one can still
  // reach the store), exit status 1. Does nothing once the job is ending normally.
  void fail(const std::string& why, bool publish) {
    if (stopped || failing.exchange(true)) return;
    const std::string line = fmt::format("gqe: error: rank {}: {}\n", rank, why);
    [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
    if (publish) {
      try {
        store->set(kVerdictKey, std::vector<uint8_t>(why.begin(), why.end()));
      } catch (const std::exception&) {  // the others find out on their own
      }
    }
    ::_exit(1);
  }
};

namespace {

// Beats, and watches the beats of the ranks this one watches (rank 0: all; the others: rank 0).
void beat(std::shared_ptr<Watchdog::State> s) {
  const double timeout = static_cast<double>(s->timeout.count()) / 1e3;
  std::vector<int> watched;
  for (int r = 0; r < s->world; ++r)
    if (r != s->rank && (s->rank == 0 || r == 0)) watched.push_back(r);
  std::vector<int64_t> seen(watched.size(), -1), changed(watched.size(), now_ns());
  int64_t tick = now_ns();
  do {
    if (s->was_frozen(tick)) {  // the silence was this process's own: start counting again
      std::fill(changed.begin(), changed.end(), tick);
      s->last_round = tick;
    }
    try {
      s->store->add(beat_key(s->rank), 1);
      for (size_t i = 0; i < watched.size(); ++i) {
        const int64_t beats = s->store->add(beat_key(watched[i]), 0);
        if (beats != seen[i]) seen[i] = beats, changed[i] = now_ns();
      }
      if (s->rank != 0 && s->store->check({kVerdictKey})) {
        const auto why = s->store->get(kVerdictKey);
        s->fail(fmt::format("stopping: rank 0 stopped the job ({})", std::string(why.begin(), why.end())), false);
      }
      s->last_round = now_ns();
    } catch (const std::exception& e) {
      // The store is gone: its host ended or the network failed. The main thread usually fails on
      // its own at once (and says why better); if it does not, this does.
      if (!s->pause(std::min<std::chrono::milliseconds>(s->timeout, std::chrono::seconds(2)))) break;
      s->fail(fmt::format("lost the job's store at {} (rank 0 ended, or the network failed): {}", s->where,
                          std::string(e.what()).substr(0, std::string(e.what()).find('\n'))),
              false);
      break;
    }
    for (size_t i = 0; i < watched.size(); ++i)
      if (seconds_since(changed[i]) > timeout)
        s->fail(fmt::format("rank {} has not been heard from for {:.0f} s: it is stopped, stuck or cut off from the "
                            "network (dist.timeout_s = {:.0f}); stopping the job",
                            watched[i], seconds_since(changed[i]), timeout),
                s->rank == 0);
  } while (s->pause());
  s->running -= 1;
}

// Watches that beating goes on (the store answers) and that no declared wait outlasts the timeout.
void watch(std::shared_ptr<Watchdog::State> s) {
  const double timeout = static_cast<double>(s->timeout.count()) / 1e3;
  const double slack = static_cast<double>(Watchdog::kSlack.count());
  int64_t tick = now_ns();
  while (s->pause()) {
    if (s->was_frozen(tick)) {  // likewise
      s->last_round = tick;
      if (int64_t since = s->waiting_since; since != 0) s->waiting_since.compare_exchange_strong(since, tick);
      continue;
    }
    if (seconds_since(s->last_round) > timeout)
      s->fail(fmt::format("the job's store at {} has not answered for {:.0f} s: its host (rank 0, or the launcher that serves it) "
                          "is stopped or cut off from the network (dist.timeout_s = {:.0f}); stopping",
                          s->where, seconds_since(s->last_round), timeout),
              false);
    const int64_t since = s->waiting_since;
    if (since != 0 && seconds_since(since) > timeout + slack)
      s->fail(fmt::format("waited {:.0f} s in {} for the other ranks, and the collective did not time out "
                          "(dist.timeout_s = {:.0f}); stopping the job",
                          seconds_since(since), s->waiting_for.load(), timeout),
              s->rank == 0);
  }
  s->running -= 1;
}

}  // namespace

Watchdog::Watchdog(c10::intrusive_ptr<c10d::Store> store, int rank, int world, std::chrono::milliseconds timeout,
                   std::string where)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.store = std::move(store);
  s.rank = rank;
  s.world = world;
  s.timeout = timeout;
  s.interval = std::clamp<std::chrono::milliseconds>(timeout / 10, std::chrono::milliseconds(100), std::chrono::seconds(1));
  s.where = std::move(where);
  s.last_round = now_ns();
  // Detached: a thread blocked on a stopped store must not hold up the process's exit.
  s.running = 2;
  std::thread(beat, state_).detach();
  std::thread(watch, state_).detach();
}

Watchdog::~Watchdog() { stop(); }

void Watchdog::stop() {
  if (state_->stopped.exchange(true)) return;
  state_->wake.notify_all();
  // Let the threads return (a beat takes milliseconds); one blocked on a dead store is left behind.
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  while (state_->running > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

Watchdog::Waiting::Waiting(std::shared_ptr<State> state, const char* what) : state_(std::move(state)) {
  state_->waiting_for = what;
  state_->waiting_since = now_ns();
}

Watchdog::Waiting::~Waiting() { state_->waiting_since = 0; }

Watchdog::Waiting Watchdog::waiting(const char* what) { return Waiting(state_, what); }

}  // namespace gqe
