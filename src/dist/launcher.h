// The built-in launcher (`gqe train CONFIG --nproc N`, on each node of several with NNODES,
// NODE_RANK, MASTER_ADDR, MASTER_PORT set): starts N copies of this program as this node's ranks
// with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT), forwards SIGINT/SIGTERM to
// them, and when one fails stops the others (SIGTERM and SIGCONT, then SIGKILL after kStopGrace:
// a stopped rank or one stuck in a collective ends too) and fails the job with that rank's exit
// status. A rank whose launcher dies gets SIGTERM.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "dist/environment.h"

namespace gqe {

struct LaunchedJob {
  int status = 0;        // the job's exit status
  int stop_signal = 0;   // the last SIGINT/SIGTERM forwarded to the ranks; 0 if none came
};

// args: the command line to run in every rank (args[0] is ignored: this program runs). `node`:
// this machine's part of a job over several (its ranks are node_rank * nproc + 0..nproc-1); the
// other nodes' launchers start theirs.
LaunchedJob launch_local_ranks(int nproc, const std::vector<std::string>& args, const NodeLayout& node = {});

// A port free on 127.0.0.1 now (for a one-machine job's store, and tests' "nodes").
int free_port();

// How long the other ranks get to end by themselves once one has failed. They cannot save
// anything then (saving takes every rank), so it is short.
constexpr std::chrono::seconds kStopGrace{5};

}  // namespace gqe
