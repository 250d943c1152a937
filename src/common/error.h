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

}  // namespace gqe
