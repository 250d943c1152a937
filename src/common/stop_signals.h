// SIGINT and SIGTERM as a request to stop at the next safe point rather than at once: gqe train
// saves a checkpoint after the current step, and a job that is still gathering stops before it
// starts (dist/rendezvous.h). A second signal stops the process at once.
#pragma once

namespace gqe {

// Catches SIGINT and SIGTERM while it lives; the previous handlers come back after.
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

// "SIGINT", "SIGTERM", else "a signal".
const char* stop_signal_name(int sig);

}  // namespace gqe
