#include "cli/run.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <exception>

#include "common/error.h"
#include "common/nearest.h"

namespace gqe {

std::string error_line(const std::exception& e) {
  const std::string what = e.what();
  if (dynamic_cast<const UserError*>(&e) || std::getenv("GQE_DEBUG")) return what;
  return what.substr(0, what.find('\n'));
}

int exit_status(const std::exception& e) { return dynamic_cast<const UserError*>(&e) ? 2 : 1; }

int report_error(const char* program, const std::exception& e) {
  if (exit_status(e) == 2) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 2;
  }
  // Training that cannot go on (diverged, a rank lost) or a bug: one line, torch's backtrace on request.
  const bool cut = std::string(e.what()) != error_line(e);
  fmt::print(stderr, "{}: error: {}{}\n", program, error_line(e), cut ? " (GQE_DEBUG=1 shows the full error)" : "");
  return 1;
}

int run_cli(CLI::App& app, const char* program, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The help of the (sub)command that was being read: its options are listed there.
    const CLI::App* sub = &app;
    std::string command = program, within;  // "gqe bench", "bench "
    while (!sub->get_subcommands().empty()) {
      sub = sub->get_subcommands().front();
      command += " " + sub->get_name();
      within += sub->get_name() + " ";
    }
    // A command's name missing or mistyped: CLI11 says only that one is required.
    std::vector<std::string> names;
    for (const CLI::App* c : sub->get_subcommands([](const CLI::App*) { return true; })) names.push_back(c->get_name());
    const std::vector<std::string> left = sub->remaining();
    if (!names.empty() && !left.empty() && left[0].rfind('-', 0) != 0) {
      const std::optional<std::string> meant = nearest_name(left[0], names);
      fmt::print(stderr, "{}: unknown command '{}{}'{} (see {} --help)\n", program, within, left[0],
                 meant ? fmt::format(" (did you mean '{}{}'?)", within, *meant) : fmt::format("; the commands: {}", fmt::join(names, ", ")),
                 command);
      return 2;
    }
    // An option mistyped: CLI11 lists whatever it could not place (its value too), or first names
    // an option that is then missing.
    if (const auto typed = std::find_if(left.begin(), left.end(), [](const std::string& a) { return a.rfind("--", 0) == 0; });
        typed != left.end()) {
      const std::string name = typed->substr(0, typed->find('='));
      std::vector<std::string> options;
      for (const CLI::Option* o : sub->get_options())
        for (const std::string& l : o->get_lnames()) options.push_back("--" + l);
      const std::optional<std::string> meant = nearest_name(name, options);
      fmt::print(stderr, "{}: unknown option '{}'{} (see {} --help)\n", program, name,
                 meant ? fmt::format(" (did you mean '{}'?)", *meant) : "", command);
      return 2;
    }
    if (!names.empty() && dynamic_cast<const CLI::RequiredError*>(&e)) {
      fmt::print(stderr, "{}: which {}command? {} (see {} --help)\n", program, within, fmt::join(names, ", "), command);
      return 2;
    }
    fmt::print(stderr, "{}: {} (see {} --help)\n", program, e.what(), command);
    return 2;
  } catch (const AlreadyReported& e) {
    return e.status;
  } catch (const std::exception& e) {
    return report_error(program, e);
  }
  return 0;
}

}  // namespace gqe
