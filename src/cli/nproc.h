// --nproc N for commands that can run as N local ranks (train, eval): the built-in launcher.
#pragma once

#include <functional>
#include <optional>

#include "dist/environment.h"

namespace CLI {
class App;
}

namespace gqe {

// With nproc > 1 (or NNODES > 1: this machine's part of a job over several, docs/distributed.md),
// runs this command line (minus --nproc) as nproc ranks and returns true (the process exits with
// the job's status if it failed); otherwise returns false: run in this process. Throws UserError
// when --nproc is given inside a launched job, or for bad NNODES/NODE_RANK/MASTER_* values. With
// max_restarts (gqe train's --max-restarts, checked by check_restarts), the ranks are launched
// even for nproc 1, and a job that fails by a fault starts again with `--resume auto`.
bool launch_if_requested(int nproc, int argc, char** argv, int max_restarts = 0);

// --max-restarts N (N > 0): throws UserError where the built-in launcher cannot restart the job:
// in a rank that another launcher started (torchrun's agents restart it).
void check_restarts(int max_restarts);

// The environment of this machine's last rank in the job launch_if_requested would start (the
// launcher checks the input against it before it starts any rank: that rank's device must exist
// too); nothing when the command would run in this process. Throws as launch_if_requested does.
std::optional<DistEnvironment> last_launched_rank(int nproc);

// Whether the job's rank 0 runs on this machine: in this process (a rank that torchrun or srun
// started, or a single process), or among the ranks launch_if_requested would start. Only rank 0
// writes the run directory and the reports, so only there are their paths checked. Throws as
// launch_if_requested does.
bool hosts_rank0(int nproc);

// Runs the body of a command whose processes form a job (train, eval, bench train|comm). If it
// stops with an error before this process joins the job (a config that is bad on one node only, a
// missing GPU), the error is printed and the job told (tell_job_stopped): its waiting ranks stop
// with the line at once instead of after dist.timeout_s. Rethrown as AlreadyReported.
void job_command(int nproc, const std::function<void()>& body);

// Adds the --nproc option.
void add_nproc_option(CLI::App* command, int& nproc);
// Adds the --max-restarts option (commands that train).
void add_restarts_option(CLI::App* command, int& max_restarts);

}  // namespace gqe
