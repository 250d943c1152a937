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

// Bad input whose line is printed already, by this rank or by rank 0 of the same job
// (Communicator::check_input): exit status 2, nothing more printed.
struct AlreadyReported : UserError {
  using UserError::UserError;
};

}  // namespace gqe
