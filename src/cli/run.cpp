#include "cli/run.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <exception>

#include "common/error.h"

namespace gqe {

int run_cli(CLI::App& app, const char* program, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}: {} (see {} --help)\n", program, e.what(), program);
    return 2;
  } catch (const AlreadyReported&) {
    return 2;
  } catch (const UserError& e) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    // Training that cannot go on (diverged, a rank lost) or a bug: one line, torch's backtrace on request.
    const std::string what = e.what();
    const bool debug = std::getenv("GQE_DEBUG") != nullptr;
    fmt::print(stderr, "{}: error: {}{}\n", program, debug ? what : what.substr(0, what.find('\n')),
               !debug && what.find('\n') != std::string::npos ? " (GQE_DEBUG=1 shows the full error)" : "");
    return 1;
  }
  return 0;
}

}  // namespace gqe
