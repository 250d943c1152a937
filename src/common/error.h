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

// Bad input that another rank of the same job reports (Communicator::check_input): exit status 2,
// nothing printed, so that a job of many ranks says what is wrong once.
struct ReportedElsewhere : UserError {
  using UserError::UserError;
};

}  // namespace gqe
