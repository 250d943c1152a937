// Keeps the promise of dist.timeout_s (docs/distributed.md, "When a rank fails"): a rank that stops
// answering (stopped, killed, cut off from the network) fails the job within the timeout, whatever
// the other ranks are doing at the time; a rank stuck while its threads live fails it when the
// collective waiting for it times out (kBackendLag later); and no rank waits in a collective longer
// than the timeout plus kSlack, even where the backend's own timeout does not fire.
//
// Every rank beats into the job's store on a connection of its own, about ten times per timeout
// (at most once a second). Rank 0 watches every rank's beat; the others watch rank 0's, and the
// verdict rank 0 publishes. A second thread watches the beating itself, which blocks when the
// store's host (rank 0, or the launcher that serves it) is stopped or unreachable, and the waits the main
// thread declares (waiting()). A verdict is one line on stderr and exit status 1, at once (_exit:
// every file gqe writes is whole at any moment, so nothing half-written stays behind).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <c10/util/intrusive_ptr.h>

namespace c10d {
class Store;
}

namespace gqe {

class Watchdog {
 public:
  // How much longer than the timeout the backend's collectives and store operations wait (the
  // watchdog names a silent rank first), and a declared wait may last before the watchdog ends it.
  static constexpr std::chrono::seconds kBackendLag{2};
  static constexpr std::chrono::seconds kSlack{5};

  // `store`: a connection of the watchdog's own (its operations block while the store's host is
  // stopped, and the main thread's must not queue behind them). `where`: the store's address.
  Watchdog(c10::intrusive_ptr<c10d::Store> store, int rank, int world, std::chrono::milliseconds timeout, std::string where);
  ~Watchdog();  // stop()
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Stops watching: the job is ending, and its ranks stop beating one after the other.
  void stop();

  struct State;  // shared with the watchdog's threads

  // While one of these lives, the main thread is waiting for the other ranks in `what`.
  class Waiting {
   public:
    ~Waiting();
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;

   private:
    friend class Watchdog;
    Waiting(std::shared_ptr<State> state, const char* what);
    std::shared_ptr<State> state_;
  };
  Waiting waiting(const char* what);

 private:
  std::shared_ptr<State> state_;
};

}  // namespace gqe
