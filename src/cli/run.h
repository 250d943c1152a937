// Runs a CLI11 app the way every gqe executable does: status 0 on success, 2 for bad usage or bad
// input (one line on stderr, naming what is wrong), 1 for anything else (also one line; the full
// message, with torch's backtrace, when GQE_DEBUG is set).
#pragma once

#include <exception>
#include <string>

namespace CLI {
class App;
}

namespace gqe {

int run_cli(CLI::App& app, const char* program, int argc, char** argv);

// An error as run_cli reports it: printed (a UserError's message whole, anything else its first
// line unless GQE_DEBUG is set), returning the exit status (2 for a UserError, else 1).
int report_error(const char* program, const std::exception& e);
// The exit status of an error: 2 for a UserError (bad input), else 1.
int exit_status(const std::exception& e);
// The line report_error prints, without the program's name.
std::string error_line(const std::exception& e);

}  // namespace gqe
