#include "cli/nproc.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/error.h"
#include "dist/launcher.h"

namespace gqe {

bool launch_if_requested(int nproc, int argc, char** argv) {
  if (nproc <= 1) return false;
  if (std::getenv("RANK"))
    throw UserError("--nproc: this process is already a rank of a launched job (RANK is set); drop --nproc");
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) != 0) args.push_back(a);
  }
  const int status = launch_local_ranks(nproc, args);
  if (status != 0) std::exit(status);  // the failing rank said why
  return true;
}

void add_nproc_option(CLI::App* command, int& nproc) {
  command->add_option("--nproc", nproc, "Data-parallel processes on this machine (one per GPU on CUDA)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

}  // namespace gqe
