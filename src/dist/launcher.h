// The built-in launcher (`gqe train CONFIG --nproc N`, on each node of several with NNODES,
// NODE_RANK, MASTER_ADDR, MASTER_PORT set): starts N copies of this program as this node's ranks
// with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT), forwards SIGINT/SIGTERM to
// them, and when one fails stops the others (SIGTERM and SIGCONT, then SIGKILL after kStopGrace:
// a stopped rank or one stuck in a collective ends too) and fails the job with that rank's exit
// status. A rank whose launcher dies gets SIGTERM. With restarts, a job that fails by a fault is
// started again; over several nodes the launchers agree on each start (dist/node_agreement.h).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "dist/environment.h"

namespace gqe {

struct LaunchedJob {
  int status = 0;        // the job's exit status
  int stop_signal = 0;   // the last SIGINT/SIGTERM forwarded to the ranks; 0 if none came
  int restarts = 0;      // how many times the job was started again after a fault
  bool finished = false; // a rank of this node said the job's work is done (tell_launcher_finished)
};

// `--max-restarts`: how often a job that fails by a fault is started again, and the command line
// of those starts (gqe train's continues from the newest checkpoint). A fault is a rank that was
// killed or crashed, or ended with an error other than bad input (status 2), before any rank
// ended well and while no stop signal had come; the job's other ranks fail with it.
struct Restarts {
  int max = 0;
  std::vector<std::string> args;
};

// args: the command line to run in every rank (args[0] is ignored: this program runs). `node`:
// this machine's part of a job over several (its ranks are node_rank * nproc + 0..nproc-1); the
// other nodes' launchers start theirs. Each start's ranks see GQE_RESTART_COUNT (0 first).
LaunchedJob launch_local_ranks(int nproc, const std::vector<std::string>& args, const NodeLayout& node = {},
                               const Restarts& restarts = {});

// In a rank the built-in launcher started: tells it that the job's work is done (gqe train: the
// budget is trained), which a stop (a signal on any node: the ranks vote) is not, though both end
// the ranks well. Only node 0 can read the run directory; the other nodes' experiments and ladders
// learn this way whether to go on to the next run. Nothing happens in any other process.
void tell_launcher_finished();

// A port free on 127.0.0.1 now (for a one-machine job's store, and tests' "nodes").
int free_port();

// How long the other ranks get to end by themselves once one has failed. They cannot save
// anything then (saving takes every rank), so it is short.
constexpr std::chrono::seconds kStopGrace{5};
// What a launcher says when the last restart failed too.
std::string giving_up(int restarts, int max_restarts);

}  // namespace gqe
