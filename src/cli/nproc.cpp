#include "cli/nproc.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "cli/run.h"
#include "common/error.h"
#include "dist/launcher.h"
#include "dist/rendezvous.h"

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
  return launched_rank(*node, nproc, nproc - 1);
}

bool hosts_rank0(int nproc) {
  if (const std::optional<DistEnvironment> last = last_launched_rank(nproc)) return last->rank == last->local_rank;
  return read_dist_environment().rank == 0;
}

bool launch_if_requested(int nproc, int argc, char** argv, int max_restarts) {
  std::optional<NodeLayout> node = launch_layout(nproc);
  if (!node && max_restarts > 0) node = NodeLayout{};  // one rank, which the launcher can start again
  if (!node) return false;
  std::vector<std::string> args;  // the launcher's options are not the ranks'
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc" || a == "--max-restarts") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) != 0 && a.rfind("--max-restarts=", 0) != 0) args.push_back(a);
  }
  // A restart continues the run from its newest complete checkpoint, whatever the first start was
  // told (--resume never would refuse the run it began).
  Restarts restarts{max_restarts, args};
  for (size_t i = 0; i < restarts.args.size(); ++i) {
    if (restarts.args[i] == "--resume" && i + 1 < restarts.args.size()) restarts.args[i + 1] = "auto";
    if (restarts.args[i].rfind("--resume=", 0) == 0) restarts.args[i] = "--resume=auto";
  }
  const int status = launch_local_ranks(nproc, args, *node, restarts).status;
  if (status != 0) std::exit(status);  // the failing rank said why
  return true;
}

void check_restarts(int max_restarts) {
  if (max_restarts == 0) return;
  const DistEnvironment env = read_dist_environment();
  if (env.source != DistEnvironment{}.source)
    throw UserError(fmt::format("--max-restarts: this process is a rank of a job already ({}): restarts are its launcher's "
                                "(torchrun --max-restarts)", env.source));
}

void job_command(int nproc, const std::function<void()>& body) {
  try {
    body();
  } catch (const AlreadyReported&) {
    throw;
  } catch (const std::exception& e) {
    const std::exception_ptr error = std::current_exception();
    DistEnvironment first;  // the first rank this process stands for
    int ranks = 1;
    std::string who;
    try {
      if (const std::optional<NodeLayout> node = launch_layout(nproc)) {
        first = launched_rank(*node, nproc, 0);
        ranks = nproc;
        who = fmt::format("node {}", node->node_rank);
      } else {
        first = read_dist_environment();
        who = fmt::format("rank {}", first.rank);
      }
    } catch (const std::exception&) {
      std::rethrow_exception(error);  // the environment itself is wrong: it names no job to tell
    }
    // A launcher's line, or rank 0's, is printed at once (telling may take a while); another rank's
    // where the job cannot show it.
    const int status = exit_status(e);
    const bool at_once = ranks > 1 || first.rank == 0;
    if (at_once) report_error("gqe", e);
    if (tell_job_stopped(first, ranks, who, status, error_line(e)) && !at_once) report_error("gqe", e);
    throw AlreadyReported(e.what(), status);
  }
}

void add_nproc_option(CLI::App* command, int& nproc) {
  command->add_option("--nproc", nproc,
                      "Data-parallel processes on this machine (one per GPU on CUDA); on several machines, set NNODES, NODE_RANK, "
                      "MASTER_ADDR and MASTER_PORT on each")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

void add_restarts_option(CLI::App* command, int& max_restarts) {
  command->add_option("--max-restarts", max_restarts,
                      "Start a job that fails by a fault (a rank killed, crashed or ended with an error; not bad input) again, "
                      "up to N times, from its newest checkpoint (over several nodes: give it on every node)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
}

}  // namespace gqe
