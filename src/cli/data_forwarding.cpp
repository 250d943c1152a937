// `gqe data ARGS...` runs `gqe-data ARGS...` from the same directory as gqe, so that users have
// one entry point while the data tool stays free of torch.
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/process.h"

namespace gqe {

void add_data_forwarding(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("data", "Data tools, the same as gqe-data: train-tokenizer, encode, inspect, decode");
  cmd->prefix_command();
  cmd->set_help_flag();  // --help is gqe-data's to answer
  cmd->allow_extras();
  cmd->callback([cmd] {
    const std::filesystem::path tool = executable_directory() / "gqe-data";
    std::vector<std::string> args{"gqe-data"};
    for (const auto& a : cmd->remaining()) args.push_back(a);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(tool.c_str(), argv.data());
    throw std::runtime_error("cannot run " + tool.string() + ": " + std::strerror(errno));
  });
}

}  // namespace gqe
