// Error kinds shared by every part. A UserError is bad input (config, data, checkpoint, command
// line): the entry points print its message as one line and exit with status 2. Anything else that
// escapes is an internal failure (exit status 1).
#pragma once

#include <stdexcept>
#include <string>

namespace gqe {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An error whose line is printed already, by this process or by rank 0 of the same job
// (Communicator::check_input, a process that stopped before joining): nothing more is printed, and
// the exit status is `status` (2: bad input).
struct AlreadyReported : UserError {
  explicit AlreadyReported(const std::string& line, int exit_status = 2) : UserError(line), status(exit_status) {}
  int status;
};

}  // namespace gqe
