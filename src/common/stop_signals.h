// SIGINT and SIGTERM as a request to stop at the next safe point rather than at once: gqe train
// saves a checkpoint after the current step, and a job that is still gathering stops before it
// starts (dist/rendezvous.h). A second signal stops the process at once.
#pragma once

namespace gqe {

// Catches SIGINT and SIGTERM while it lives; the previous handlers come back after.
// (unblock_stop_signals: a signal that came before is caught at once.)
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  void (*previous_int_)(int);
  void (*previous_term_)(int);
};

// The signal a StopSignals caught, 0 if none (or none is installed).
int stop_signal();

// A process may start with SIGINT and SIGTERM blocked (a mask is inherited, and a program that
// handles signals on a thread of its own blocks them on the others, whose children inherit it):
// a handler would then never run. Unblocks both for the calling thread; one already sent arrives.
void unblock_stop_signals();

// "SIGINT", "SIGTERM", else "a signal".
const char* stop_signal_name(int sig);

}  // namespace gqe
