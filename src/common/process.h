// Running other programs: gqe-data beside gqe, and the Python scripts in scripts/.
#pragma once

#include <filesystem>
#include <string>

namespace gqe {

// `s` as one word for /bin/sh: as it is where no character needs quoting, else in single quotes.
std::string shell_quoted(const std::string& s);

struct CommandOutput {
  int status = -1;     // the exit status; -1 when it could not run or was killed by a signal
  std::string output;  // stdout and stderr, interleaved
};

// Runs `command` through /bin/sh and waits for it.
CommandOutput run_shell(const std::string& command);

// The directory of the running executable (where gqe-data is, beside gqe).
std::filesystem::path executable_directory();

// The Python that runs the scripts: $GQE_PYTHON, else the project's venv Python set-up built with.
std::string python_executable();

// scripts/ of the source tree gqe was built from.
std::filesystem::path scripts_directory();

}  // namespace gqe
