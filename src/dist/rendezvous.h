// How the processes of a job meet (docs/distributed.md): at the store at MASTER_ADDR:MASTER_PORT,
// served by rank 0 (or by a launcher: torchrun's agent, node 0's gqe over several nodes with
// --max-restarts), where every rank counts itself in. And how a process
// that stops before it meets the others (a node whose launcher finds its config bad, a rank whose
// GPU is missing) tells them, so that they stop at once with its line rather than wait
// dist.timeout_s for ranks that will never come.
#pragma once

#include <chrono>
#include <string>

#include <c10/util/intrusive_ptr.h>

#include "dist/environment.h"

namespace c10d {
class Store;
}

namespace gqe {

// A connection to the job's store: the server itself where `serve` (and no launcher serves it),
// else a client that waits up to `timeout` for the server to answer (and stops at a stop signal,
// as join_job). In a launcher's store, a restarted attempt's keys are its own, as PyTorch's own
// rendezvous keeps them.
c10::intrusive_ptr<c10d::Store> connect_store(const DistEnvironment& env, std::chrono::milliseconds timeout, bool serve);

// This rank's way into the job: connects (rank 0 serves), counts itself in and waits until all
// env.world ranks have. If a process of the job told it stopped (tell_job_stopped), or a rank finds
// the job of the wrong shape (its WORLD_SIZE not rank 0's, its rank taken), rank 0 prints that
// line, and every rank throws AlreadyReported with its exit status. If the job is not whole
// within `timeout`, rank 0 and one rank of every other machine that came print cannot_join(), and
// every rank throws AlreadyReported (status 1); so where nothing serves the store. A stop signal
// meanwhile (common/stop_signals.h) stops every rank that came alike, with AlreadyReported of
// status 0.
c10::intrusive_ptr<c10d::Store> join_job(const DistEnvironment& env, std::chrono::milliseconds timeout);
// One line of this process on stderr, out at once: "gqe: <line>" (a rank may be stopped right after).
void print_now(const std::string& line);
// The line of a rank that could not join the job within `timeout`, and why.
std::string cannot_join(const DistEnvironment& env, std::chrono::milliseconds timeout, const std::string& why);

// For a process of a job that stops before joining it, with exit status `status`: tells the job,
// so that its ranks stop with "<who>: <line>" (rank 0 prints it). `first` is the environment of
// the first of the `ranks` ranks this process stands for (a launcher: its node's; a rank that
// torchrun or srun started: its own). Nothing is told where the job is these ranks alone, or once
// this process has begun to join or started ranks, unless `next_job` (an experiment's or a
// ladder's node 0, between two runs' jobs, tells the next one). A process in rank 0's place (a rank 0, node 0's launcher) serves
// the store until every rank has read it, at most kTellFor; any other reaches the store within
// kTellFor or gives up. Returns whether this machine still needs the line: the job could not be
// told, or this is the first process of a machine other than rank 0's to stop (srun and torchrun
// start one per GPU, and eight that stop alike say so once).
bool tell_job_stopped(const DistEnvironment& first, int ranks, const std::string& who, int status, const std::string& line,
                      bool next_job = false);
inline constexpr std::chrono::seconds kTellFor{10};
// A launcher has started the ranks it stands for: they meet the job (or tell it) themselves, and
// this process's tell_job_stopped tells nothing (an experiment's launcher that fails after its
// first run's job, whose store is gone, must not serve one again).
void ranks_started();

}  // namespace gqe
