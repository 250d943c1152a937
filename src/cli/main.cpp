// gqe: the user's entry point. Exit status: 0 success, 2 bad usage or bad input (one line on
// stderr naming what is wrong), 1 anything else.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"gqe: train and compare small language models with GQA or Grouped Query Experts attention"};
  app.footer(
      "Examples:\n"
      "  gqe info configs/gqe-250m.yaml\n"
      "  gqe info configs/tiny/gqe.yaml --set model.attention.top_k=2\n"
      "Run 'gqe COMMAND --help' for a command's options.");
  app.require_subcommand(1);
  gqe::add_info_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "gqe: {} (see gqe --help)\n", e.what());
    return 2;
  } catch (const gqe::UserError& e) {
    fmt::print(stderr, "gqe: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "gqe: internal error: {}\n", e.what());
    return 1;
  }
  return 0;
}
