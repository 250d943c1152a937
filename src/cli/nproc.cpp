#include "cli/nproc.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/error.h"
#include "dist/launcher.h"

namespace gqe {
namespace {

// This machine's part of the job launch_if_requested would start; nothing when it would run in
// this process.
std::optional<NodeLayout> launch_layout(int nproc) {
  if (std::getenv("RANK")) {
    if (nproc > 1) throw UserError("--nproc: this process is already a rank of a launched job (RANK is set); drop --nproc");
    return std::nullopt;
  }
  const NodeLayout node = read_node_layout();
  if (nproc <= 1 && node.nnodes == 1) return std::nullopt;
  return node;
}

}  // namespace

std::optional<DistEnvironment> last_launched_rank(int nproc) {
  const std::optional<NodeLayout> node = launch_layout(nproc);
  if (!node) return std::nullopt;
  DistEnvironment last;
  last.local_rank = nproc - 1;
  last.local_world = nproc;
  last.world = node->nnodes * nproc;
  last.rank = node->node_rank * nproc + last.local_rank;
  return last;
}

bool hosts_rank0(int nproc) {
  if (const std::optional<DistEnvironment> last = last_launched_rank(nproc)) return last->rank == last->local_rank;
  return read_dist_environment().rank == 0;
}

bool launch_if_requested(int nproc, int argc, char** argv) {
  const std::optional<NodeLayout> node = launch_layout(nproc);
  if (!node) return false;
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) != 0) args.push_back(a);
  }
  const int status = launch_local_ranks(nproc, args, *node);
  if (status != 0) std::exit(status);  // the failing rank said why
  return true;
}

void add_nproc_option(CLI::App* command, int& nproc) {
  command->add_option("--nproc", nproc,
                      "Data-parallel processes on this machine (one per GPU on CUDA); on several machines, set NNODES, NODE_RANK, "
                      "MASTER_ADDR and MASTER_PORT on each")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

}  // namespace gqe
