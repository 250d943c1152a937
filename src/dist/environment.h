// Where this process stands in a distributed job, read from the environment the way the ecosystem
// launches jobs: torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), else SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE,
// the first host of SLURM_JOB_NODELIST), else a single process. No torch.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace gqe {

struct DistEnvironment {
  int rank = 0, world = 1;
  int local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  // "torchrun", "SLURM", ...
  int nproc = 0;  // started by `gqe ... --nproc N` (GQE_NPROC): N; else 0
  // The command that continues the job where an experiment or a ladder launched it
  // (GQE_CONTINUE_WITH: `gqe experiment run EXP ...`, not the run's own `gqe train`); else empty.
  std::string continue_with;
  // Which start of the job this is after faults, 0 the first, and how many its launcher allows
  // (`--max-restarts`: GQE_RESTART_COUNT, GQE_MAX_RESTARTS; torchrun: TORCHELASTIC_*).
  int restart = 0, max_restarts = 0;
  bool distributed() const { return world > 1; }
  bool one_machine() const { return world == local_world; }
};

// `getenv` is injectable for tests. Throws UserError naming the variable for inconsistent values.
DistEnvironment read_dist_environment(const std::function<std::optional<std::string>(const std::string&)>& getenv);
DistEnvironment read_dist_environment();

// This machine's place in a job the built-in launcher starts on several machines ("nodes"), read
// as torchrun's options are given: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT. With `gqe ...
// --nproc N` on each node, node i runs global ranks i*N .. i*N+N-1 of NNODES*N, all meeting at
// MASTER_ADDR:MASTER_PORT (the store rank 0 serves, on node 0). One node: 127.0.0.1 and a free port.
struct NodeLayout {
  int nnodes = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: any free port (one node)
};
// Throws UserError naming the variable: NODE_RANK not below NNODES, MASTER_ADDR or MASTER_PORT
// missing on several nodes, values that are not numbers.
NodeLayout read_node_layout(const std::function<std::optional<std::string>(const std::string&)>& getenv);
NodeLayout read_node_layout();

// The environment the built-in launcher gives local rank `local_rank` of the `nproc` it starts on
// this node (a launcher that tells the job stands for its first).
DistEnvironment launched_rank(const NodeLayout& node, int nproc, int local_rank);

// The first host of a SLURM node list: "gpu-[03-05,9],cpu1" -> "gpu-03".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace gqe
