// gqe-data: tokenizer training, token shards and datasets. Links no torch.
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/run.h"
#include "common/version.h"

int main(int argc, char** argv) {
  CLI::App app{"gqe-data: train a tokenizer, encode text into token shards, inspect and decode them"};
  app.footer(
      "Examples:\n"
      "  gqe-data train-tokenizer data/sample/*.jsonl --vocab-size 4096 --out data/sample/tokenizer\n"
      "  gqe-data encode data/sample/*.jsonl --tokenizer data/sample/tokenizer.model --out data/sample/shards\n"
      "  gqe-data inspect data/sample/shards --verify\n"
      "Run 'gqe-data COMMAND --help' for a command's options; docs/data-format.md for the files.");
  app.set_version_flag("--version", std::string("gqe-data ") + gqe::gqe_version());
  app.require_subcommand(1);
  gqe::add_data_commands(app, argc, argv);
  return gqe::run_cli(app, "gqe-data", argc, argv);
}
