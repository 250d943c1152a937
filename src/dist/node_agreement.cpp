#include "dist/node_agreement.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <thread>
#include <vector>

#include "dist/launcher.h"
#include "dist/rendezvous.h"

namespace gqe {
namespace {

using Clock = std::chrono::steady_clock;

// How long node 0 waits for a node whose ranks failed to say so (its ranks end within kStopGrace
// of the failure), and how long the others wait for node 0's decision after that. A launcher that
// stops beating for kSilence is taken for dead (its machine down, or the launcher killed).
constexpr std::chrono::seconds kReportWithin = kStopGrace + std::chrono::seconds(25);
constexpr std::chrono::seconds kDecideWithin = kReportWithin + kStopGrace + std::chrono::seconds(25);
constexpr std::chrono::seconds kSilence{3};

std::string key(int attempt, const std::string& what) { return fmt::format("gqe/launch/{}/{}", attempt, what); }
std::string beat_key(int node) { return fmt::format("gqe/launch/beat/{}", node); }
constexpr const char* kEnded = "gqe/launch/ended";  // nodes other than 0 that have ended for good

const char* name(NodeOutcome o) {
  switch (o) {
    case NodeOutcome::ok: return "ok";
    case NodeOutcome::stopped: return "stopped";
    case NodeOutcome::bad_input: return "bad_input";
    case NodeOutcome::fault: return "fault";
    case NodeOutcome::followed: return "followed";
  }
  return "?";
}

// Outcomes after which a new start is wanted: a fault here, or another node's that stopped this one.
bool failed(NodeOutcome o) { return o == NodeOutcome::fault || o == NodeOutcome::followed; }
bool failed(const std::string& outcome) { return outcome == name(NodeOutcome::fault) || outcome == name(NodeOutcome::followed); }

// The launcher's place in the job's store (only its address counts).
DistEnvironment launcher_env(const NodeLayout& node) { return launched_rank(node, 1, 0); }

}  // namespace

NodeAgreement::NodeAgreement(const NodeLayout& node, int max_restarts)
    : node_(node), silent_(static_cast<size_t>(node.nnodes), false) {
  if (node_.node_rank != 0) return;
  store_ = connect_store(launcher_env(node_), kDecideWithin, true);
  store_->set(kLauncherRestartsKey, std::to_string(max_restarts));
}

NodeAgreement::~NodeAgreement() {
  if (node_.node_rank != 0 || !store_) return;
  try {
    // The launchers that came (they beat) and have not been taken for dead.
    auto expected = [&] {
      int64_t n = 0;
      for (int k = 1; k < node_.nnodes; ++k) n += !silent_[static_cast<size_t>(k)] && store_->add(beat_key(k), 0) > 0;
      return n;
    };
    const auto until = Clock::now() + kTellFor;
    while (store_->add(kEnded, 0) < expected() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } catch (const std::exception&) {
  }
}

std::string NodeAgreement::node0_gone() const {
  return fmt::format("node 0's launcher, which serves the job's store at {}:{}, is gone", node_.master_addr, node_.master_port);
}

bool NodeAgreement::connected() {
  if (store_) return true;
  if (node0_gone_) return false;
  try {
    store_ = connect_store(launcher_env(node_), std::chrono::milliseconds(200), false);
    // Not node 0's launcher (yet): rank 0's store, where node 0 runs without --max-restarts (its
    // ranks say so), or the store of a process that tells the job it stopped.
    if (!store_->check({kLauncherRestartsKey})) store_.reset();
  } catch (const std::exception&) {
    store_.reset();  // not serving yet
  }
  return store_ != nullptr;
}

std::optional<std::string> NodeAgreement::beat(int attempt) {
  if (!connected()) return std::nullopt;
  try {
    if (node_.node_rank != 0) store_->add(beat_key(node_.node_rank), 1);
    if (!store_->check({key(attempt, "failure")})) return std::nullopt;
    const std::string line = store_->get_to_str(key(attempt, "failure"));
    if (line.rfind(fmt::format("node {}:", node_.node_rank), 0) == 0) return std::nullopt;  // this node's own
    return line;
  } catch (const std::exception&) {
    node0_gone_ = true;
    store_.reset();
    return node0_gone();
  }
}

std::optional<std::string> NodeAgreement::await_failure_elsewhere(int attempt, std::chrono::milliseconds wait) {
  const auto until = Clock::now() + wait;
  for (;;) {
    std::optional<std::string> line = beat(attempt);
    if (line || Clock::now() > until) return line;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void NodeAgreement::tell_failure(int attempt, const std::string& line) {
  if (!connected()) return;
  try {
    store_->compareSet(key(attempt, "failure"), "", line);
  } catch (const std::exception&) {
  }
}

bool NodeAgreement::start_again(int attempt, NodeOutcome own, int max_restarts) {
  if (node_.node_rank != 0) {
    std::string decision;
    try {
      if (!connected()) return false;  // node 0 never came, or is gone: nothing to start again with
      store_->set(key(attempt, fmt::format("outcome/{}", node_.node_rank)), name(own));
      if (failed(own)) {
        const auto until = Clock::now() + kDecideWithin;
        while (!store_->check({key(attempt, "decision")}) && Clock::now() < until) {
          store_->add(beat_key(node_.node_rank), 1);
          std::this_thread::sleep_for(NodeAgreement::kBeatEvery);
        }
        if (store_->check({key(attempt, "decision")})) decision = store_->get_to_str(key(attempt, "decision"));
        else print_now(fmt::format("node 0's launcher did not decide within {} s whether to start the job again: not starting it", kDecideWithin.count()));
      }
      if (decision == "again") return true;
      store_->add(kEnded, 1);
    } catch (const std::exception&) {
      // Said where it matters: this node's ranks failed, and nobody decides about a new start.
      if (!node0_gone_ && failed(own)) print_now(node0_gone() + ": not starting the job again");
      node0_gone_ = true;
      return false;
    }
    if (decision.size() > 4) print_now(decision.substr(4));  // "end <line>"
    return false;
  }

  // Node 0 decides: again only where every node's ranks failed by a fault (theirs, or another
  // node's), as one machine's launcher starts again only after a fault.
  std::string why;
  bool again = failed(own);
  if (again) {
    const auto until = Clock::now() + kReportWithin;
    int64_t beats = -1;
    Clock::time_point beat_changed = Clock::now();
    for (int k = 1; k < node_.nnodes && again;) {
      const std::string outcome_key = key(attempt, fmt::format("outcome/{}", k));
      const int64_t now_beats = store_->add(beat_key(k), 0);
      if (now_beats != beats) beats = now_beats, beat_changed = Clock::now();
      if (store_->check({outcome_key})) {
        again = failed(store_->get_to_str(outcome_key));
        ++k, beats = -1;
      } else if (Clock::now() > until || Clock::now() - beat_changed > kSilence) {
        why = fmt::format("node {}'s launcher {}: not starting the job again", k,
                          Clock::now() > until ? fmt::format("did not say within {} s how its ranks ended", kReportWithin.count())
                                               : fmt::format("has not been heard from for {} s (is its machine down?)", kSilence.count()));
        silent_[static_cast<size_t>(k)] = true;
        again = false;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (again && attempt >= max_restarts) {
      why = giving_up(attempt, max_restarts);
      again = false;
    }
  }
  store_->set(key(attempt, "decision"), again ? "again" : "end " + why);
  if (!why.empty()) print_now(why);
  return again;
}

}  // namespace gqe
