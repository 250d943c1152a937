#include "dist/environment.h"

#include <cstdlib>

#include <fmt/format.h>

#include "common/error.h"
#include "config/config_loader.h"

namespace gqe {
namespace {

int integer(const std::string& name, const std::string& value) {
  const auto v = parse_integer(value);
  if (!v || *v < 0 || *v > 1'000'000'000)
    throw UserError(fmt::format("environment: {}={} is not a non-negative integer", name, value));
  return static_cast<int>(*v);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  const auto bracket = nodelist.find('['), comma = nodelist.find(',');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket))
    return nodelist.substr(0, comma);
  const auto end = nodelist.find_first_of(",-]", bracket + 1);
  return nodelist.substr(0, bracket) + nodelist.substr(bracket + 1, end - bracket - 1);
}

DistEnvironment read_dist_environment(const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  DistEnvironment e;
  auto get_int = [&](const std::string& name) -> std::optional<int> {
    const auto v = getenv(name);
    if (!v) return std::nullopt;
    return integer(name, *v);
  };
  if (getenv("RANK") || getenv("WORLD_SIZE")) {
    e.source = getenv("GQE_NPROC") ? "gqe --nproc" : "RANK/WORLD_SIZE (torchrun)";
    e.nproc = get_int("GQE_NPROC").value_or(0);
    e.continue_with = getenv("GQE_CONTINUE_WITH").value_or("");
    const bool elastic = getenv("TORCHELASTIC_RESTART_COUNT").has_value();
    e.restart = get_int(elastic ? "TORCHELASTIC_RESTART_COUNT" : "GQE_RESTART_COUNT").value_or(0);
    e.max_restarts = get_int(elastic ? "TORCHELASTIC_MAX_RESTARTS" : "GQE_MAX_RESTARTS").value_or(0);
    const auto rank = get_int("RANK"), world = get_int("WORLD_SIZE");
    if (!rank || !world) throw UserError("environment: RANK and WORLD_SIZE must be set together");
    e.rank = *rank;
    e.world = *world;
    e.local_rank = get_int("LOCAL_RANK").value_or(e.rank);
    e.local_world = get_int("LOCAL_WORLD_SIZE").value_or(e.world);
    e.master_addr = getenv("MASTER_ADDR").value_or("127.0.0.1");
    e.master_port = get_int("MASTER_PORT").value_or(29500);
  } else if (getenv("SLURM_PROCID") && getenv("SLURM_NTASKS")) {
    e.source = "SLURM";
    e.rank = *get_int("SLURM_PROCID");
    e.world = *get_int("SLURM_NTASKS");
    e.local_rank = get_int("SLURM_LOCALID").value_or(0);
    // SLURM_NTASKS_PER_NODE looks like "4" or "4(x2)"; the leading number is what a node runs.
    const auto per_node = getenv("SLURM_NTASKS_PER_NODE");
    e.local_world = per_node ? integer("SLURM_NTASKS_PER_NODE", per_node->substr(0, per_node->find('('))) : 1;
    const auto nodes = getenv("SLURM_JOB_NODELIST");
    e.master_addr = getenv("MASTER_ADDR").value_or(nodes ? first_slurm_host(*nodes) : "127.0.0.1");
    e.master_port = get_int("MASTER_PORT").value_or(29500);
  }
  if (e.world < 1) throw UserError(fmt::format("environment: the world size is {}, it must be at least 1", e.world));
  if (e.rank >= e.world) throw UserError(fmt::format("environment: rank {} is not below the world size {}", e.rank, e.world));
  if (e.local_rank >= e.local_world)
    throw UserError(fmt::format("environment: local rank {} is not below the local world size {}", e.local_rank, e.local_world));
  if (e.master_port < 1 || e.master_port > 65535)
    throw UserError(fmt::format("environment: MASTER_PORT={} is not a port number", e.master_port));
  return e;
}

NodeLayout read_node_layout(const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  NodeLayout n;
  const auto nnodes = getenv("NNODES");
  if (!nnodes) return n;
  n.nnodes = integer("NNODES", *nnodes);
  if (n.nnodes < 1 || n.nnodes > 65536) throw UserError(fmt::format("environment: NNODES={} is not in 1..65536", *nnodes));
  const auto node_rank = getenv("NODE_RANK");
  n.node_rank = node_rank ? integer("NODE_RANK", *node_rank) : 0;
  if (n.node_rank >= n.nnodes)
    throw UserError(fmt::format("environment: NODE_RANK={} is not below NNODES={}", n.node_rank, n.nnodes));
  if (n.nnodes == 1) return n;
  const auto addr = getenv("MASTER_ADDR"), port = getenv("MASTER_PORT");
  if (!node_rank || !addr || !port || addr->empty())
    throw UserError(fmt::format("environment: NNODES={} needs NODE_RANK, MASTER_ADDR and MASTER_PORT (node 0's address and a free port "
                                "on it, the same on every node)", n.nnodes));
  n.master_addr = *addr;
  n.master_port = integer("MASTER_PORT", *port);
  if (n.master_port < 1 || n.master_port > 65535)
    throw UserError(fmt::format("environment: MASTER_PORT={} is not a port number", *port));
  return n;
}

NodeLayout read_node_layout() {
  return read_node_layout([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
}

DistEnvironment read_dist_environment() {
  return read_dist_environment([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
}

DistEnvironment launched_rank(const NodeLayout& node, int nproc, int local_rank) {
  DistEnvironment env;
  env.master_addr = node.master_addr;
  env.master_port = node.master_port;
  env.local_rank = local_rank;
  env.local_world = nproc;
  env.world = node.nnodes * nproc;
  env.rank = node.node_rank * nproc + local_rank;
  return env;
}

}  // namespace gqe
