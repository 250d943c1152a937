// How the launchers of a job over several nodes agree on starting it again (`--max-restarts` with
// NNODES > 1), as torchrun's agents do. Node 0's launcher serves the job's store at
// MASTER_ADDR:MASTER_PORT for as long as it runs; every attempt's ranks meet there under keys of
// their own (GQE_AGENT_STORE, dist/rendezvous.h), and the launchers use it to tell each other:
// a fault on one node stops every node's ranks at once, and node 0 decides, from how each node's
// ranks ended, whether all of them start again.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/intrusive_ptr.h>

#include "dist/environment.h"

namespace c10d {
class Store;
}

namespace gqe {

// How one start of a node's ranks ended.
enum class NodeOutcome {
  stopped,    // a stop signal came to this node's launcher
  bad_input,  // a rank ended with status 2, having said why
  fault,      // a rank was killed, crashed or failed (the Restarts of dist/launcher.h)
  followed,   // stopped because another node's ranks failed, or node 0's launcher is gone
  ok,         // none of these: every rank ended well (the work done, or a stop voted), or one did before another failed
};

// Set by node 0's launcher, to its --max-restarts: the ranks of every node check that theirs was
// started alike (join_job), since a node without it would neither be told nor tell.
inline constexpr const char* kLauncherRestartsKey = "gqe/launch/max_restarts";

class NodeAgreement {
 public:
  // Node 0 serves the store (a MASTER_PORT in use is a UserError); the others connect once it
  // answers, which they check while their ranks run.
  NodeAgreement(const NodeLayout& node, int max_restarts);
  // Node 0: waits a little (kTellFor at most) for the other nodes' launchers to end before the
  // store goes: one whose ranks end a moment later than node 0's must not find it gone.
  ~NodeAgreement();
  NodeAgreement(const NodeAgreement&) = delete;
  NodeAgreement& operator=(const NodeAgreement&) = delete;

  // While this node's ranks run, every few hundred ms (cheap): says this launcher is alive, and
  // returns the line of another node's failure in this attempt, or that node 0's launcher is gone.
  // Empty while all is well.
  std::optional<std::string> beat(int attempt);
  static constexpr std::chrono::milliseconds kBeatEvery{250};
  // beat() until another node's failure comes, for at most `wait`.
  std::optional<std::string> await_failure_elsewhere(int attempt, std::chrono::milliseconds wait);
  // This node's ranks failed by a fault: the others stop theirs. The first line told is kept.
  void tell_failure(int attempt, const std::string& line);
  // Once this node's ranks have ended: whether every node starts the job again. Node 0 decides
  // (where its own ranks failed, once every node has said how its ranks ended); the others, where
  // theirs failed, wait for the decision. A
  // line that says why not, where no node's ranks said it (the last restart spent, a node that
  // does not answer), is printed here.
  bool start_again(int attempt, NodeOutcome own, int max_restarts);

 private:
  bool connected();
  std::string node0_gone() const;
  NodeLayout node_;
  c10::intrusive_ptr<c10d::Store> store_;
  bool node0_gone_ = false;
  std::vector<bool> silent_;  // node 0: launchers that stopped beating before they said how their ranks ended
};

}  // namespace gqe
