// Runs a CLI11 app the way every gqe executable does: status 0 on success, 2 for bad usage or bad
// input (one line on stderr, naming what is wrong), 1 for anything else (also one line; the full
// message, with torch's backtrace, when GQE_DEBUG is set).
#pragma once

namespace CLI {
class App;
}

namespace gqe {

int run_cli(CLI::App& app, const char* program, int argc, char** argv);

}  // namespace gqe
