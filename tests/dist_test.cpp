// Data-parallel training with real processes over Gloo on 127.0.0.1: the environment, 1 vs N
// processes, resume on another number of processes, torchrun, and ranks that die or hang.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "dist/communicator.h"
#include "dist/environment.h"
#include "dist/gradient_reducer.h"
#include "dist/launcher.h"
#include "dist/watchdog.h"
#include "test_util.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::run_command;

DistEnvironment env_of(const std::map<std::string, std::string>& vars) {
  return read_dist_environment([&](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
}

TEST(DistEnvironment, ReadsTorchrunThenSlurmThenDefaultsToOneProcess) {
  const DistEnvironment single = env_of({});
  EXPECT_EQ(single.world, 1);
  EXPECT_FALSE(single.distributed());
  const DistEnvironment t = env_of({{"RANK", "5"}, {"WORLD_SIZE", "16"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"},
                                    {"MASTER_ADDR", "10.0.0.7"}, {"MASTER_PORT", "29511"}, {"SLURM_PROCID", "9"}});
  EXPECT_EQ(t.rank, 5);
  EXPECT_EQ(t.world, 16);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.local_world, 4);
  EXPECT_EQ(t.master_addr, "10.0.0.7");
  EXPECT_EQ(t.master_port, 29511);
  const DistEnvironment s = env_of({{"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "2"},
                                    {"SLURM_NTASKS_PER_NODE", "4(x2)"}, {"SLURM_JOB_NODELIST", "gpu-[07-08]"}});
  EXPECT_EQ(s.rank, 6);
  EXPECT_EQ(s.world, 8);
  EXPECT_EQ(s.local_rank, 2);
  EXPECT_EQ(s.local_world, 4);
  EXPECT_EQ(s.master_addr, "gpu-07");
  EXPECT_EQ(s.master_port, 29500);
}

TEST(DistEnvironment, InconsistentValuesAreOneLineErrors) {
  EXPECT_EQ(test::user_error_of([] { env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}); }),
            "environment: rank 2 is not below the world size 2");
  EXPECT_EQ(test::user_error_of([] { env_of({{"RANK", "0"}}); }), "environment: RANK and WORLD_SIZE must be set together");
  EXPECT_EQ(test::user_error_of([] { env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}}); }),
            "environment: RANK=x is not a non-negative integer");
  EXPECT_EQ(test::user_error_of([] { env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}); }),
            "environment: MASTER_PORT=70000 is not a port number");
}

TEST(DistEnvironment, NodeLayoutFromTorchrunStyleVariables) {
  auto layout = [](std::map<std::string, std::string> vars) {
    return read_node_layout([&](const std::string& name) -> std::optional<std::string> {
      const auto it = vars.find(name);
      return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    });
  };
  const NodeLayout alone = layout({});
  EXPECT_EQ(alone.nnodes, 1);
  EXPECT_EQ(alone.master_addr, "127.0.0.1");
  EXPECT_EQ(alone.master_port, 0);  // a free one
  EXPECT_EQ(layout({{"NNODES", "1"}}).nnodes, 1);
  const NodeLayout two = layout({{"NNODES", "2"}, {"NODE_RANK", "1"}, {"MASTER_ADDR", "node01"}, {"MASTER_PORT", "29500"}});
  EXPECT_EQ(two.nnodes, 2);
  EXPECT_EQ(two.node_rank, 1);
  EXPECT_EQ(two.master_addr, "node01");
  EXPECT_EQ(two.master_port, 29500);
  EXPECT_EQ(test::user_error_of([&] { layout({{"NNODES", "2"}, {"NODE_RANK", "0"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}); }),
            "environment: MASTER_PORT=70000 is not a port number");
  EXPECT_EQ(test::user_error_of([&] { layout({{"NNODES", "two"}}); }), "environment: NNODES=two is not a non-negative integer");
}

TEST(DistEnvironment, FirstSlurmHost) {
  EXPECT_EQ(first_slurm_host("node17"), "node17");
  EXPECT_EQ(first_slurm_host("a1,b2"), "a1");
  EXPECT_EQ(first_slurm_host("gpu-[003-005,9],cpu1"), "gpu-003");
  EXPECT_EQ(first_slurm_host("x[4,6]"), "x4");
  EXPECT_EQ(first_slurm_host("cpu1,gpu-[2-3]"), "cpu1");
}

// Which GPU a rank takes: its local rank among every GPU of the machine; GPU 0 where SLURM bound
// one GPU to each task (srun --gpus-per-task=1); none where that would share a GPU.
TEST(DistEnvironment, EachRankTakesAGpuOfItsOwn) {
  const DistEnvironment task3 = env_of({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "3"},
                                        {"SLURM_NTASKS_PER_NODE", "8"}, {"SLURM_JOB_NODELIST", "gpu1"}});
  EXPECT_EQ(rank_gpu(task3, 8, true), 3);              // --gpus-per-node=8: every task sees all
  EXPECT_EQ(rank_gpu(task3, 1, true), 0);              // --gpus-per-task=1: its own, as its GPU 0
  EXPECT_EQ(rank_gpu(task3, 1, false), std::nullopt);  // one GPU, not bound to it
  EXPECT_EQ(rank_gpu(task3, 2, true), std::nullopt);
  const DistEnvironment torchrun = env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "3"}, {"LOCAL_WORLD_SIZE", "8"}});
  EXPECT_EQ(rank_gpu(torchrun, 8, true), 3);
  EXPECT_EQ(rank_gpu(torchrun, 1, true), std::nullopt);  // CUDA_VISIBLE_DEVICES=0 for all: they would share it
  const DistEnvironment launched = env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                                           {"GQE_NPROC", "2"}});
  EXPECT_EQ(rank_gpu(launched, 1, true), std::nullopt);
  EXPECT_EQ(rank_gpu(env_of({}), 1, false), 0);
}

// The watchdog's verdicts, in one process against an in-memory store (the job tests below run it
// for real between processes). Each verdict ends the process: death tests.
using namespace std::chrono_literals;

// A store whose operations block while `frozen`, as a stopped store host's do.
class FreezableStore : public c10d::HashStore {
 public:
  std::atomic<bool> frozen{false};
  int64_t add(const std::string& key, int64_t value) override {
    while (frozen) std::this_thread::sleep_for(10ms);
    return HashStore::add(key, value);
  }
};

// Rank r's beats, as its watchdog would make them, for `seconds`.
void beat_as(c10d::Store& store, int rank, double seconds) {
  for (auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds); std::chrono::steady_clock::now() < end;) {
    store.add(fmt::format("gqe/watchdog/beat/{}", rank), 1);
    std::this_thread::sleep_for(100ms);
  }
}

class WatchdogVerdicts : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(WatchdogVerdicts, RankZeroNamesARankThatFellSilent) {
  EXPECT_EXIT(
      {
        auto store = c10::make_intrusive<c10d::HashStore>();
        Watchdog dog(store, 0, 3, 1000ms, "store");
        std::thread two([&] { beat_as(*store, 2, 10); });  // rank 2 keeps beating
        beat_as(*store, 1, 2);                               // rank 1 beats for 2 s, then stops
        std::this_thread::sleep_for(5s);
      },
      testing::ExitedWithCode(1),
      "gqe: error: rank 0: rank 1 has not been heard from for 1 s: it is stopped, stuck or cut off from the network "
      "\\(dist.timeout_s = 1\\); stopping the job");
}

TEST_F(WatchdogVerdicts, OtherRanksFollowRankZerosVerdictAndWatchIt) {
  EXPECT_EXIT(
      {
        auto store = c10::make_intrusive<c10d::HashStore>();
        Watchdog dog(store, 1, 2, 1000ms, "store");
        beat_as(*store, 0, 0.5);
        const std::string why = "rank 2 has not been heard from";
        store->set("gqe/watchdog/verdict", std::vector<uint8_t>(why.begin(), why.end()));
        std::this_thread::sleep_for(5s);
      },
      testing::ExitedWithCode(1), "gqe: error: rank 1: stopping: rank 0 stopped the job \\(rank 2 has not been heard from\\)");
  EXPECT_EXIT(
      {
        auto store = c10::make_intrusive<c10d::HashStore>();
        Watchdog dog(store, 1, 2, 1000ms, "store");
        std::this_thread::sleep_for(5s);  // rank 0 never beats
      },
      testing::ExitedWithCode(1), "gqe: error: rank 1: rank 0 has not been heard from for 1 s");
}

TEST_F(WatchdogVerdicts, AStoreThatStopsAnsweringIsAVerdictToo) {
  EXPECT_EXIT(
      {
        auto store = c10::make_intrusive<FreezableStore>();
        Watchdog dog(store, 1, 2, 1000ms, "10.0.0.1:29500");
        std::thread zero([&] { beat_as(*store, 0, 10); });
        std::this_thread::sleep_for(1s);
        store->frozen = true;
        std::this_thread::sleep_for(5s);
      },
      testing::ExitedWithCode(1),
      "gqe: error: rank 1: the job's store at 10.0.0.1:29500 has not answered for 1 s: its host \\(rank 0, or the launcher "
      "that serves it\\) is stopped or cut off from the network");
}

// The backstop: a collective that outlasts the timeout by kSlack without failing ends the job.
TEST_F(WatchdogVerdicts, AWaitThatOutlastsTheTimeoutEndsTheJob) {
  EXPECT_EXIT(
      {
        auto store = c10::make_intrusive<c10d::HashStore>();
        Watchdog dog(store, 1, 2, 1000ms, "store");
        std::thread zero([&] { beat_as(*store, 0, 20); });
        const Watchdog::Waiting waiting = dog.waiting("all-reduce");
        std::this_thread::sleep_for(10s);
      },
      testing::ExitedWithCode(1), "gqe: error: rank 1: waited 6 s in all-reduce for the other ranks, and the collective did not time out");
}

// A job that ends stops its watchdog: the ranks that finish first fall silent without a verdict.
TEST_F(WatchdogVerdicts, StoppedWatchdogsJudgeNothing) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  Watchdog dog(store, 0, 2, 1000ms, "store");
  beat_as(*store, 1, 0.5);
  dog.stop();
  std::this_thread::sleep_for(2500ms);  // rank 1 silent past the timeout: still here
  SUCCEED();
}

// The lines without wall-clock fields.
std::vector<nlohmann::json> steps_of(const fs::path& run) {
  std::vector<nlohmann::json> lines = test::metrics_of(run);
  for (auto& j : lines) j.erase("tokens_per_s"), j.erase("elapsed_s");
  return lines;
}

std::string dumped(const std::vector<nlohmann::json>& lines) {
  std::string s;
  for (const auto& j : lines) s += j.dump() + "\n";
  return s;
}

class Distributed : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    test::make_fixture_dataset(dir_->path());
    // 8 sequences of 32 per step, micro-batches of 4: one process accumulates 2, two ranks take 1 each.
    config_ = test::write_small_config(*dir_, "dist: {timeout_s: 5, check_replicas_every_steps: 1}\n");
  }
  static void TearDownTestSuite() { delete dir_; }

  std::string train(const std::string& run, const std::string& extra = "") const {
    return test::gqe("train " + config_ + " --run-dir " + path(run) + " " + extra);
  }
  std::string path(const std::string& name) const { return (runs_.path() / name).string(); }
  // The checksum of the weights in a run's latest checkpoint.
  std::string model_hash(const std::string& run) const {
    const std::string dir = path(run) + "/checkpoints/" + read_file(path(run) + "/checkpoints/latest").substr(0, 13);
    return nlohmann::json::parse(read_file(dir + "/state.json"))["files"]["model.safetensors"]["xxh3"];
  }

  static inline test::TempDir* dir_ = nullptr;
  static inline std::string config_;
  test::TempDir runs_;
};

TEST_F(Distributed, TwoProcessesTrainBitwiseLikeOne) {
  // One process sums g0/2 + g1/2 over its two micro-batches; two ranks hold g0/2 and g1/2 and the
  // all-reduce adds them: the same single addition, so the runs agree to the bit (halving is exact).
  ASSERT_EQ(run_command(train("one")).status, 0);
  const auto two = run_command(train("two", "--nproc 2"));
  ASSERT_EQ(two.status, 0) << two.err << two.out;
  EXPECT_NE(two.out.find("data parallel: 2 ranks (2 local) over gloo"), std::string::npos) << two.out;
  const auto one_lines = steps_of(path("one")), two_lines = steps_of(path("two"));
  ASSERT_EQ(one_lines.size(), 24u);  // 20 steps and 4 evaluations
  EXPECT_EQ(dumped(two_lines), dumped(one_lines));
}

TEST_F(Distributed, FourProcessesAgreeWithinFloatingPointSummationOrder) {
  // With four micro-batch gradients the all-reduce sums in another order than the accumulation in
  // one process; fp32 sums of four terms differ by a few ulps, which Adam's normalised updates
  // carry at about that relative size: 20 steps stay within 1e-4 of the loss.
  ASSERT_EQ(run_command(train("one", "--set train.micro_batch_size=2")).status, 0);
  const auto four = run_command(train("four", "--nproc 4 --set train.micro_batch_size=2"));
  ASSERT_EQ(four.status, 0) << four.err;
  const auto a = steps_of(path("one")), b = steps_of(path("four"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const char* key = a[i].contains("loss") ? "loss" : "val_loss";
    EXPECT_NEAR(b[i][key].get<double>(), a[i][key].get<double>(), 1e-4 * a[i][key].get<double>()) << i;
    EXPECT_EQ(b[i]["tokens"], a[i]["tokens"]);
  }
}

TEST_F(Distributed, ARunContinuesExactlyOnAnotherNumberOfProcesses) {
  const std::string budget = "--set train.tokens=51200";  // 200 steps
  ASSERT_EQ(run_command(train("straight", budget)).status, 0);
  const std::string expected = dumped(steps_of(path("straight")));
  for (auto [first, then] : {std::pair<std::string, std::string>{"--nproc 2", ""}, {"", "--nproc 2"}}) {
    SCOPED_TRACE("'" + first + "' then '" + then + "'");
    const std::string run = first.empty() ? "one-then-two" : "two-then-one";
    {  // stopped by SIGTERM (the launcher forwards it) once a checkpoint exists
      test::Background job("exec " + train(run, first + " " + budget) + " >" + path(run + ".out") + " 2>&1");
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!fs::exists(path(run) + "/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      job.signal(SIGTERM);
      ASSERT_EQ(job.wait(), 0) << read_file(path(run + ".out"));
    }
    const std::string stopped = read_file(path(run + ".out"));
    ASSERT_NE(stopped.find("stopped by SIGTERM"), std::string::npos);
    // The command it gives to continue launches as this one did.
    EXPECT_NE(stopped.find(" --set train.tokens=51200 --run-dir " + path(run) + (first.empty() ? "" : " --nproc 2") + "\n"),
              std::string::npos) << stopped;
    ASSERT_LT(steps_of(path(run)).size(), 200u);
    const auto r = run_command(train(run, then + " " + budget));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("resuming from"), std::string::npos);
    EXPECT_EQ(dumped(steps_of(path(run))), expected);
  }
}

TEST_F(Distributed, TorchrunLaunchesTheSameJob) {
  const std::string torchrun = GQE_TORCHRUN;
  if (torchrun.empty() || !fs::exists(torchrun)) GTEST_SKIP() << "torchrun is not installed next to the build's Python";
  ASSERT_EQ(run_command(train("one")).status, 0);
  const auto r = run_command(torchrun + " --nproc-per-node 2 --no-python " + train("torchrun"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("failed to bind"), std::string::npos) << r.err;  // the agent's store is used, not fought
  EXPECT_EQ(dumped(steps_of(path("torchrun"))), dumped(steps_of(path("one"))));
}

// A torchrun job stopped by SIGTERM (to the agent, which passes it on) says to run the same torchrun
// command, which continues it exactly; `gqe train` alone would continue on one process.
TEST_F(Distributed, ATorchrunJobStoppedBySignalContinuesWithTheSameTorchrunCommand) {
  const std::string torchrun = GQE_TORCHRUN;
  if (torchrun.empty() || !fs::exists(torchrun)) GTEST_SKIP() << "torchrun is not installed next to the build's Python";
  const std::string budget = "--set train.tokens=51200";  // 200 steps
  ASSERT_EQ(run_command(train("straight", budget)).status, 0);
  const std::string command = torchrun + " --nproc-per-node 2 --no-python " + train("stopped", budget);
  {
    test::Background job("exec " + command + " >" + path("stopped.out") + " 2>&1");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!fs::exists(path("stopped") + "/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    job.signal(SIGTERM);
    job.wait();  // torchrun's own status after a signal (1)
  }
  const std::string out = read_file(path("stopped.out"));
  EXPECT_NE(out.find("; continue with: the same torchrun command, its ranks running gqe train " + config_ +
                     " --set train.tokens=51200 --run-dir " + path("stopped") + "\n"),
            std::string::npos) << out;
  ASSERT_LT(steps_of(path("stopped")).size(), 200u);
  const auto r = run_command(command);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("resuming from"), std::string::npos) << r.out;
  EXPECT_EQ(dumped(steps_of(path("stopped"))), dumped(steps_of(path("straight"))));
}

// A rank killed mid-run (kill -9, after the first checkpoint): with restarts its launcher starts
// the job again, which continues from the last complete checkpoint and ends bitwise where an
// uninterrupted run ends. The built-in launcher (--max-restarts) with 2 ranks (rank 1 killed: rank
// 0 fails at its next collective) and with 1 (whose death only the launcher can tell), and
// torchrun's agent (keys of a new attempt in its store).
TEST_F(Distributed, ALauncherWithRestartsContinuesAKilledJobFromItsLastCheckpoint) {
  const std::string budget = "--set train.tokens=51200";  // 200 steps
  ASSERT_EQ(run_command(train("straight", budget)).status, 0);
  struct Leg {
    std::string run, command;
    int victim;  // the rank killed
  };
  std::vector<Leg> legs{{"two", train("two", budget + " --nproc 2 --max-restarts 1"), 1},
                        {"one", train("one", budget + " --max-restarts 1"), 0}};
  const std::string torchrun = GQE_TORCHRUN;
  if (!torchrun.empty() && fs::exists(torchrun))  // installed next to the build's Python (set-up does)
    legs.push_back({"elastic", torchrun + " --nproc-per-node 2 --max-restarts 1 --no-python " + train("elastic", budget), 1});
  for (const auto& [run, command, victim] : legs) {
    test::Background job("exec " + command + " >" + path(run + ".out") + " 2>&1");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!fs::exists(path(run) + "/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int killed = 0, pid = 0;  // the gqe process of this run with RANK=<victim> in its environment
    const std::string rank = std::string("\0RANK=", 6) + std::to_string(victim) + std::string(1, '\0');
    for (const auto& entry : fs::directory_iterator("/proc")) {
      if (!std::isdigit(static_cast<unsigned char>(entry.path().filename().string()[0]))) continue;
      std::string cmdline, environ;
      try {
        cmdline = read_file(entry.path() / "cmdline"), environ = std::string(1, '\0') + read_file(entry.path() / "environ");
      } catch (const std::exception&) {
        continue;  // gone, or not ours
      }
      if (cmdline.rfind(GQE_BINARY, 0) == 0 && cmdline.find(path(run)) != std::string::npos &&
          environ.find(rank) != std::string::npos) {
        pid = std::stoi(entry.path().filename().string());
        killed += ::kill(pid, SIGKILL) == 0;
      }
    }
    ASSERT_EQ(killed, 1) << run;
    ASSERT_EQ(job.wait(), 0) << read_file(path(run + ".out"));
    const std::string out = read_file(path(run + ".out"));
    EXPECT_NE(out.find("resuming from " + path(run) + "/checkpoints/step_"), std::string::npos) << out;
    EXPECT_EQ(dumped(steps_of(path(run))), dumped(steps_of(path("straight")))) << run;
    EXPECT_EQ(model_hash(run), model_hash("straight")) << run;
    // The restart is said where it happens, and so is the death of a rank that could not say it.
    if (run != "elastic") {
      EXPECT_NE(out.find(fmt::format("gqe: rank {} (pid {}) was killed by signal 9 (Killed){}\n", victim, pid,
                                     run == "two" ? "; stopping the other 1 rank(s)" : "")),
                std::string::npos) << out;
      EXPECT_NE(out.find("gqe: the job failed (exit status 1); starting it again: restart 1 of at most 1 (--max-restarts)"),
                std::string::npos) << out;
    }
    EXPECT_NE(read_file(path(run) + "/train.log").find("started again after a failure (restart 1 of 1)"), std::string::npos) << run;
  }
}

// What restarts and what does not: a job that keeps failing is started again N times and then
// gives up with its status; bad input is not a fault; and another launcher's rank is refused with
// one line.
TEST_F(Distributed, RestartsAreForFaultsAndEndAfterTheLastOne) {
  // Every start fails at its first write to metrics.jsonl (a full disk: exit 1).
  const std::string full = fmt::format("LD_PRELOAD={} GQE_FAULT_PATH=metrics.jsonl ", GQE_FAULT_LIBRARY);
  const auto r = run_command(full + train("full", "--max-restarts 2"));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("restart 1 of at most 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("restart 2 of at most 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("gqe: the job failed again after 2 restart(s) (--max-restarts 2): giving up"), std::string::npos) << r.err;
  // The command that continues it is the one that started it: one rank, with its restarts.
  EXPECT_NE(r.err.find("--run-dir " + path("full") + " --max-restarts 2 continues"), std::string::npos) << r.err;
  EXPECT_NE(read_file(path("full") + "/train.log").find("(restart 2 of 2)"), std::string::npos);

  const auto bad = run_command(train("bad", "--max-restarts 2 --set data.dataset=" + path("nowhere")));
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_EQ(bad.err.find("restart"), std::string::npos) << bad.err;

  const auto ranked = run_command("RANK=0 WORLD_SIZE=1 " + train("ranked", "--max-restarts 1"));
  EXPECT_EQ(ranked.status, 2);
  EXPECT_EQ(ranked.err, "gqe: --max-restarts: this process is a rank of a job already (RANK/WORLD_SIZE (torchrun)): restarts are "
                        "its launcher's (torchrun --max-restarts)\n");
  EXPECT_FALSE(fs::exists(path("ranked")));
}

const std::string kShard = " --set dist.shard_optimizer=true";

// Waits for the launcher's ranks (`count` of them) to be running and returns their pids.
std::vector<int> ranks_of(int launcher, size_t count = 2) {
  std::vector<int> pids;
  for (int i = 0; i < 2000 && pids.size() < count; ++i) {
    pids.clear();
    std::istringstream in(run_command("pgrep -P " + std::to_string(launcher)).out);
    for (int pid; in >> pid;) pids.push_back(pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pids;
}

// Whether something listens at 127.0.0.1:port.
bool listening(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool up = ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(s);
  return up;
}

// torchrun's elastic rendezvous (--nnodes 1:2, c10d): a node that dies (its agent and its rank,
// killed after the first checkpoint) leaves the job to the node that is left, whose agent starts
// it again on one rank from the newest checkpoint; it ends bitwise where a 1-rank run ends (2
// ranks then 1: see ARunContinuesExactlyOnAnotherNumberOfProcesses). Both nodes name one run
// directory, as on a shared file system: torchrun may give rank 0 to either.
TEST_F(Distributed, TorchrunsElasticJobGoesOnWithoutANodeThatDied) {
  const std::string torchrun = GQE_TORCHRUN;
  if (torchrun.empty() || !fs::exists(torchrun)) GTEST_SKIP() << "torchrun is not installed next to the build's Python";
  const std::string budget = "--set train.tokens=51200";  // 200 steps
  ASSERT_EQ(run_command(train("straight", budget)).status, 0);
  const int port = free_port();
  // A dead node leaves the rendezvous after 2 s without its heartbeat; the rest go on 8 s later
  // (node 1 must join within 8 s of node 0, too: the first round waits that long for it).
  const std::string agent = fmt::format("exec {} --nnodes 1:2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{} "
                                        "--rdzv-id elastic --rdzv-conf keep_alive_interval=1,keep_alive_max_attempt=2,"
                                        "last_call_timeout=8 --max-restarts 1 --no-python ",
                                        torchrun, port) +
                            train("elastic", budget + " --resume auto");
  test::Background node0(agent + " >" + path("elastic.0.out") + " 2>&1");
  // Node 0's agent serves the rendezvous's store (the job ends with it); node 1's joins it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!listening(port) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  test::Background node1(agent + " >" + path("elastic.1.out") + " 2>&1");
  const std::vector<int> rank1 = ranks_of(node1.pid(), 1);
  ASSERT_EQ(rank1.size(), 1u);
  while (!fs::exists(path("elastic") + "/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  node1.signal(SIGKILL);
  ::kill(rank1[0], SIGKILL);
  ASSERT_EQ(node0.wait(), 0) << read_file(path("elastic.0.out"));
  const std::string log = read_file(path("elastic") + "/train.log");
  EXPECT_NE(log.find("data parallel: 2 ranks (1 local) over gloo, from RANK/WORLD_SIZE (torchrun)"), std::string::npos) << log;
  EXPECT_NE(log.find("started again after a failure (restart 1 of 1)"), std::string::npos) << log;
  EXPECT_EQ(dumped(steps_of(path("elastic"))), dumped(steps_of(path("straight"))));
  EXPECT_EQ(model_hash("elastic"), model_hash("straight"));
}

struct Fault {
  std::vector<int> pids;  // the two ranks
  int status = -1;        // the job's
  double seconds = 0;     // from the signal to the job's end
  std::string out;        // the job's output
};

// Starts `command` (a 2-rank job writing `run_dir`), waits until it trains, sends `sig` to rank
// `rank` and waits for the whole job to end.
Fault signal_rank(int rank, const std::string& command, const std::string& run_dir, const std::string& out_file, int sig) {
  test::Background job("exec " + command + " >" + out_file + " 2>&1");
  Fault f;
  f.pids = ranks_of(job.pid());
  if (f.pids.size() != 2) return f;  // the caller asserts on it; the job is killed here
  while (!fs::exists(run_dir + "/metrics.jsonl")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto start = std::chrono::steady_clock::now();
  ::kill(f.pids[static_cast<size_t>(rank)], sig);
  f.status = job.wait();
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  f.out = read_file(out_file);
  return f;
}

TEST_F(Distributed, ARankThatDiesFailsTheJobQuicklyWithItsName) {
  const Fault f = signal_rank(1, train("killed", "--nproc 2 --set train.tokens=512000"), path("killed"), path("killed.out"), SIGKILL);
  ASSERT_EQ(f.pids.size(), 2u);
  EXPECT_NE(f.status, 0);
  EXPECT_LT(f.seconds, 5.0 + 5.0);  // dist.timeout_s, then the launcher's grace
  EXPECT_NE(f.out.find("gqe: rank 1 (pid " + std::to_string(f.pids[1]) + ") was killed by signal 9"), std::string::npos) << f.out;
}

// With buckets started from the backward pass's hooks and (sharded) parameter gathers waited for
// in the forward pass, the survivor is most likely waiting on a collective started earlier (a wide
// model in 1 MiB buckets: most of a step has collectives in flight): it fails just as fast, with
// one line.
TEST_F(Distributed, ARankKilledWhileBucketsAreInFlightFailsTheJobQuickly) {
  const std::string wide = "--nproc 2 --set train.tokens=5120000 --set model.d_model=256 --set model.head_dim=64 "
                           "--set model.ffn_hidden=512 --set dist.bucket_mb=1 --set dist.check_replicas_every_steps=0" + kShard;
  const Fault f = signal_rank(1, train("killed-wide", wide), path("killed-wide"), path("killed-wide.out"), SIGKILL);
  ASSERT_EQ(f.pids.size(), 2u);
  EXPECT_NE(f.status, 0);
  EXPECT_LT(f.seconds, 5.0 + 5.0);
  EXPECT_NE(f.out.find("gqe: rank 1 (pid " + std::to_string(f.pids[1]) + ") was killed by signal 9"), std::string::npos) << f.out;
  EXPECT_EQ(f.out.find("frame #"), std::string::npos) << f.out;
}

// A signal that reaches one rank only (a scheduler's, not the launcher's) stops them all at the same
// step: the ranks vote with each step's statistics; the checkpoint saved there resumes exactly.
TEST_F(Distributed, ASignalToOneRankStopsEveryRankAtTheSameStep) {
  const std::string budget = "--nproc 2 --set train.tokens=512000";
  const Fault f = signal_rank(1, train("one", budget), path("one"), path("one.out"), SIGTERM);
  ASSERT_EQ(f.pids.size(), 2u);
  EXPECT_EQ(f.status, 0) << f.out;
  EXPECT_NE(f.out.find("stopped by a signal to another rank at step"), std::string::npos) << f.out;
  const auto steps = test::metrics_of(path("one"));
  ASSERT_FALSE(steps.empty());
  const int last = steps.back()["step"].get<int>();
  EXPECT_LT(last, 2000);  // 512000 tokens would be 2000 steps
  EXPECT_NE(f.out.find("stopped by a signal to another rank at step " + std::to_string(last)), std::string::npos) << f.out;
  EXPECT_NE(f.out.find(fmt::format("saved {}/checkpoints/step_{:08d}", path("one"), last)), std::string::npos) << f.out;
}

// The promise of dist.timeout_s (docs/distributed.md): a rank that stops answering fails the job
// within the timeout and 2 s (the watchdog's beat, at most 1 s, and noticing it), and the launcher
// gives the others kStopGrace to end. Stopped while the other rank may be anywhere in its step.
constexpr double kHangBound = 5.0 + 2.0 + 5.0;  // dist.timeout_s + 2 s + kStopGrace

// Which sees it first, the watchdog (at the timeout) or a collective or store wait already under
// way (the timeout + kBackendLag after it began), depends on where the other rank was and on how
// busy the machine is: either way the job fails, one line per rank, within the bound.
TEST_F(Distributed, AStoppedRankFailsTheJobWithinTheTimeout) {
  const Fault f = signal_rank(1, train("hung", "--nproc 2 --set train.tokens=512000"), path("hung"), path("hung.out"), SIGSTOP);
  ASSERT_EQ(f.pids.size(), 2u);
  EXPECT_EQ(f.status, 1);
  EXPECT_LT(f.seconds, kHangBound) << f.out;
  EXPECT_TRUE(f.out.find("gqe: error: rank 0: rank 1 has not been heard from for 5 s: it is stopped, stuck or cut off from "
                         "the network (dist.timeout_s = 5); stopping the job") != std::string::npos ||
              std::regex_search(f.out, std::regex("gqe: error: rank 0: [a-z-]+ failed \\(another rank died or hangs\\?\\)")))
      << f.out;
  EXPECT_NE(f.out.find("gqe: rank 0 (pid " + std::to_string(f.pids[0]) + ") exited with status 1; stopping the other 1 rank(s)"),
            std::string::npos) << f.out;
  EXPECT_EQ(f.out.find("frame #"), std::string::npos) << f.out;  // one line per rank, no c10d stack frames
}

// Rank 0 also serves the job's store: the others find it silent.
TEST_F(Distributed, AStoppedRankZeroFailsTheJobWithinTheTimeout) {
  const Fault f = signal_rank(0, train("hung0", "--nproc 2 --set train.tokens=512000"), path("hung0"), path("hung0.out"), SIGSTOP);
  ASSERT_EQ(f.pids.size(), 2u);
  EXPECT_EQ(f.status, 1);
  EXPECT_LT(f.seconds, kHangBound) << f.out;
  EXPECT_TRUE((f.out.find("gqe: error: rank 1: the job's store at 127.0.0.1:") != std::string::npos &&
               f.out.find("has not answered for 5 s: its host (rank 0, or the launcher that serves it) is stopped or cut off from the "
                          "network (dist.timeout_s = 5)") != std::string::npos) ||
              std::regex_search(f.out, std::regex("gqe: error: rank 1: [a-z-]+ failed \\(another rank died or hangs\\?\\)")))
      << f.out;
  EXPECT_EQ(f.out.find("frame #"), std::string::npos) << f.out;
}

// Two "nodes" on this machine: each a launcher (or SLURM's srun's tasks) with its part of the
// ranks, meeting at a shared MASTER_ADDR:MASTER_PORT, as on a cluster.

std::string node_env(int node, int port) {
  return fmt::format("NNODES=2 NODE_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", node, port);
}

// ZeRO-1 too: a rank's shards go by its global rank, not its rank on the node.
TEST_F(Distributed, TwoNodesTrainLikeOneMachine) {
  ASSERT_EQ(run_command(train("one")).status, 0);
  ASSERT_EQ(run_command(train("four", "--nproc 4 --set train.micro_batch_size=2")).status, 0);
  ASSERT_EQ(run_command(train("four-sharded", "--nproc 4 --set train.micro_batch_size=2" + kShard)).status, 0);
  for (const auto& [per_node, sharded] : {std::pair{1, false}, std::pair{2, false}, std::pair{2, true}}) {
    SCOPED_TRACE(fmt::format("2 nodes x {} ranks{}", per_node, sharded ? ", sharded" : ""));
    const std::string run = fmt::format("nodes-x{}{}", per_node, sharded ? "-sharded" : ""), port = std::to_string(free_port());
    const std::string extra =
        fmt::format("--nproc {} --set train.micro_batch_size={}", per_node, 4 / per_node) + (sharded ? kShard : "");
    // Only rank 0's machine needs the run directory: on node 1 it may be a path that cannot be one.
    const std::string unusable = test::gqe("train " + config_ + " --run-dir " + path("one") + "/config.yaml/run " + extra);
    test::Background second("exec env " + node_env(1, std::stoi(port)) + unusable + " >" + path(run + ".1.out") + " 2>&1");
    const auto first = run_command(node_env(0, std::stoi(port)) + train(run, extra));
    ASSERT_EQ(first.status, 0) << first.err << first.out;
    ASSERT_EQ(second.wait(), 0) << read_file(path(run + ".1.out"));
    EXPECT_NE(first.out.find(fmt::format("data parallel: {} ranks ({} local) over gloo", 2 * per_node, per_node)), std::string::npos)
        << first.out;
    // 2 ranks: bitwise like 1 (see TwoProcessesTrainBitwiseLikeOne); 4: like 4 on one machine
    // (the same sums in the same order; against 1 rank they differ in summation order).
    EXPECT_EQ(dumped(steps_of(path(run))), dumped(steps_of(path(per_node == 1 ? "one" : sharded ? "four-sharded" : "four"))));
  }
}

TEST_F(Distributed, SlurmTasksOnTwoNodesTrainBitwiseLikeOneRank) {
  ASSERT_EQ(run_command(train("one")).status, 0);
  const int port = free_port();
  auto slurm = [&](int task) {
    return fmt::format("SLURM_PROCID={} SLURM_NTASKS=2 SLURM_LOCALID=0 SLURM_NTASKS_PER_NODE='1(x2)' SLURM_JOB_NODELIST=localhost "
                       "MASTER_PORT={} ", task, port);
  };
  test::Background second("exec env " + slurm(1) + train("slurm") + " >" + path("slurm.1.out") + " 2>&1");
  const auto first = run_command(slurm(0) + train("slurm"));
  ASSERT_EQ(first.status, 0) << first.err;
  ASSERT_EQ(second.wait(), 0) << read_file(path("slurm.1.out"));
  EXPECT_NE(first.out.find("data parallel: 2 ranks (1 local) over gloo, from SLURM"), std::string::npos) << first.out;
  EXPECT_EQ(dumped(steps_of(path("slurm"))), dumped(steps_of(path("one"))));
}

// A node that dies (its launcher and its ranks killed at once) fails the job on the other node
// within the timeout's bound.
TEST_F(Distributed, ANodeThatDiesFailsTheJobWithinTheTimeout) {
  const int port = free_port();
  const std::string extra = "--nproc 2 --set train.micro_batch_size=2 --set train.tokens=512000";
  test::Background node0("exec env " + node_env(0, port) + train("dies", extra) + " >" + path("dies.0.out") + " 2>&1");
  test::Background node1("exec env " + node_env(1, port) + train("dies", extra) + " >" + path("dies.1.out") + " 2>&1");
  const std::vector<int> ranks1 = ranks_of(node1.pid());
  ASSERT_EQ(ranks1.size(), 2u);
  while (!fs::exists(path("dies") + "/metrics.jsonl")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto start = std::chrono::steady_clock::now();
  node1.signal(SIGKILL);
  for (int pid : ranks1) ::kill(pid, SIGKILL);
  const int status = node0.wait();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string out = read_file(path("dies.0.out"));
  EXPECT_NE(status, 0) << out;
  EXPECT_LT(seconds, kHangBound) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("gqe: rank [01] \\(pid [0-9]+\\) exited with status 1; stopping the other 1 rank\\(s\\) of "
                                                "this node")))
      << out;
  EXPECT_EQ(out.find("frame #"), std::string::npos) << out;
}

// Over two nodes with --max-restarts, the launchers agree on each start (dist/node_agreement.h):
// a rank killed on either node stops the other node's ranks at once, both nodes start the job
// again, and it ends bitwise where an uninterrupted run ends; a fault at every start ends on both
// nodes after the last restart; a node that dies (its launcher too) ends the job within seconds,
// not started again; and nodes given different --max-restarts are a job of the wrong shape.
TEST_F(Distributed, TwoNodesWithRestartsStartAgainTogether) {
  const std::string budget = "--set train.tokens=51200 --max-restarts 1";  // 200 steps
  ASSERT_EQ(run_command(train("straight", "--set train.tokens=51200")).status, 0);
  // Node 1's run directory is never written: only rank 0's machine needs one.
  const std::string node1 = test::gqe("train " + config_ + " --run-dir " + path("straight") + "/config.yaml/run " + budget);
  struct Nodes {
    std::unique_ptr<test::Background> zero, one;
    std::string out0, out1;
  };
  auto start = [&](const std::string& run, const std::string& env0 = "") {
    const int port = free_port();
    Nodes n;
    n.zero = std::make_unique<test::Background>("exec env " + env0 + node_env(0, port) + train(run, budget) + " >" + path(run + ".0.out") + " 2>&1");
    n.one = std::make_unique<test::Background>("exec env " + node_env(1, port) + node1 + " >" + path(run + ".1.out") + " 2>&1");
    return n;
  };
  auto after_first_checkpoint = [&](const std::string& run) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!fs::exists(path(run) + "/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };

  for (int victim : {1, 0}) {
    SCOPED_TRACE(fmt::format("a rank killed on node {}", victim));
    const std::string run = fmt::format("killed-on-{}", victim);
    Nodes n = start(run);
    after_first_checkpoint(run);
    const std::vector<int> ranks = ranks_of((victim == 0 ? n.zero : n.one)->pid(), 1);
    ASSERT_EQ(ranks.size(), 1u);
    ::kill(ranks[0], SIGKILL);
    const int status0 = n.zero->wait(), status1 = n.one->wait();
    const std::string out0 = read_file(path(run + ".0.out")), out1 = read_file(path(run + ".1.out"));
    ASSERT_EQ(status0, 0) << out0;
    ASSERT_EQ(status1, 0) << out1;
    EXPECT_EQ(dumped(steps_of(path(run))), dumped(steps_of(path("straight"))));
    EXPECT_EQ(model_hash(run), model_hash("straight"));
    const std::string killed = fmt::format("rank {} (pid {}) was killed by signal 9 (Killed)", victim, ranks[0]);
    EXPECT_NE((victim == 0 ? out0 : out1).find("gqe: " + killed + "\n"), std::string::npos);
    // The other node names it too: its launcher stops its rank, or its rank failed first (its
    // peer gone) and the launcher heard why.
    const std::string& other = victim == 0 ? out1 : out0;
    EXPECT_TRUE(other.find(fmt::format("gqe: node {}: {}; stopping this node's 1 rank(s)\n", victim, killed)) != std::string::npos ||
                other.find(fmt::format("gqe: node {}: {}\n", victim, killed)) != std::string::npos)
        << other;
    for (const std::string* out : {&out0, &out1})
      EXPECT_NE(out->find("gqe: the job failed (exit status 1); starting it again on every node: restart 1 of at most 1 "
                          "(--max-restarts)\n"), std::string::npos) << *out;
    EXPECT_NE(out0.find("resuming from " + path(run) + "/checkpoints/step_"), std::string::npos) << out0;
  }

  {  // every start fails at its first write to metrics.jsonl (a full disk on node 0)
    Nodes n = start("full", fmt::format("LD_PRELOAD={} GQE_FAULT_PATH=metrics.jsonl ", GQE_FAULT_LIBRARY));
    EXPECT_EQ(n.zero->wait(), 1);
    EXPECT_EQ(n.one->wait(), 1);
    const std::string out0 = read_file(path("full.0.out")), out1 = read_file(path("full.1.out"));
    for (const std::string* out : {&out0, &out1}) {
      EXPECT_NE(out->find("restart 1 of at most 1"), std::string::npos) << *out;
      EXPECT_NE(out->find("gqe: the job failed again after 1 restart(s) (--max-restarts 1): giving up\n"), std::string::npos) << *out;
    }
  }

  for (int dies : {1, 0}) {
    SCOPED_TRACE(fmt::format("node {} dies", dies));
    const std::string run = fmt::format("node-{}-dies", dies);
    Nodes n = start(run);
    after_first_checkpoint(run);
    test::Background& dead = dies == 0 ? *n.zero : *n.one;
    const std::vector<int> ranks = ranks_of(dead.pid(), 1);
    ASSERT_EQ(ranks.size(), 1u);
    const auto killed_at = std::chrono::steady_clock::now();
    dead.signal(SIGKILL);
    ::kill(ranks[0], SIGKILL);
    const int status = (dies == 0 ? n.one : n.zero)->wait();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
    const std::string out = read_file(path(run + (dies == 0 ? ".1.out" : ".0.out")));
    EXPECT_EQ(status, 1) << out;
    EXPECT_LT(seconds, kHangBound) << out;
    EXPECT_EQ(out.find("starting it again"), std::string::npos) << out;
    EXPECT_NE(out.find(dies == 1 ? "gqe: node 1's launcher has not been heard from for 3 s (is its machine down?): not starting the job again\n"
                                 : "gqe: node 0's launcher, which serves the job's store at 127.0.0.1:"),
              std::string::npos) << out;
  }

  for (const auto& [restarts0, restarts1] : {std::pair{1, 0}, std::pair{0, 1}, std::pair{2, 1}}) {
    SCOPED_TRACE(fmt::format("--max-restarts {} on node 0, {} on node 1", restarts0, restarts1));
    const int port = free_port();
    auto command = [&](int node, int restarts) {
      return node_env(node, port) + train(fmt::format("mismatch-{}", node), "--set train.tokens=51200" +
                                          (restarts > 0 ? fmt::format(" --max-restarts {}", restarts) : ""));
    };
    test::Background one("exec env " + command(1, restarts1) + " >" + path("mismatch.1.out") + " 2>&1");
    const auto zero = run_command(command(0, restarts0));
    const std::string line =
        fmt::format("gqe: rank 1: --max-restarts {} on this node, {} on node 0: give every node the same\n", restarts1, restarts0);
    EXPECT_EQ(zero.status, 2) << zero.err;
    EXPECT_EQ(one.wait(), 2);
    EXPECT_EQ(zero.err, line);
    EXPECT_EQ(read_file(path("mismatch.1.out")), line);
    EXPECT_FALSE(fs::exists(path("mismatch-0")));
  }
}

// The losses (and validation losses) of two runs' metrics, step by step, within `relative`.
void expect_losses_near(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b, double relative) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const char* key = a[i].contains("loss") ? "loss" : "val_loss";
    EXPECT_EQ(b[i]["step"], a[i]["step"]);
    EXPECT_NEAR(b[i][key].get<double>(), a[i][key].get<double>(), relative * a[i][key].get<double>()) << i << " " << key;
  }
}

// The AdamW moments a run's rank 0 reported, as the allocator counted them.
double moment_bytes(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(AdamW moments [0-9.]+ MiB \(([0-9]+) bytes\) on each rank)"))) {
    ADD_FAILURE() << out;
    return 0;
  }
  return std::stod(m[1].str());
}

// 6 sequences of 32 per step: micro-batches of 2 on 3 ranks, of 3 on 2, 3 x 2 in one process.
const std::string kSix = "--set train.global_batch_tokens=192 ";
std::string ranks_of_six(int w) { return w == 1 ? kSix + "--set train.micro_batch_size=2" : kSix + fmt::format("--nproc {} --set train.micro_batch_size={}", w, 6 / w); }

// ZeRO-1 against plain data parallel. The reduced gradients are the same sums (reduce-scatter adds
// the same W terms per element as all-reduce; with 2 ranks a + b is bitwise either way), but the
// gradient norm is assembled from each rank's sum of squares instead of per-tensor norms: it
// differs in the last bits, and so does ZClip's threshold. 20 steps stay within 1e-5 of the loss.
TEST_F(Distributed, ShardedOptimizerTrainsLikeDataParallelWithAFractionOfTheState) {
  std::map<int, double> bytes;
  for (int w : {2, 3}) {
    SCOPED_TRACE(fmt::format("{} ranks", w));
    const std::string plain = fmt::format("dp{}", w), sharded = fmt::format("zero{}", w);
    const auto p = run_command(train(plain, ranks_of_six(w)));
    ASSERT_EQ(p.status, 0) << p.err;
    const auto z = run_command(train(sharded, ranks_of_six(w) + kShard));
    ASSERT_EQ(z.status, 0) << z.err;
    EXPECT_NE(z.out.find(fmt::format("on each rank, sharded over {} ranks", w)), std::string::npos) << z.out;
    expect_losses_near(steps_of(path(plain)), steps_of(path(sharded)), 1e-5);
    EXPECT_NEAR(moment_bytes(p.out), moment_bytes(run_command(train("one-" + plain, ranks_of_six(1))).out), 1.0);
    bytes[w] = moment_bytes(z.out);
  }
  // One process with a named backend is a real group of one: its collectives run (as NCCL's would
  // on a machine with one GPU), and the run is plain data parallel's.
  const auto one = run_command(train("zero1", ranks_of_six(1) + kShard + " --set dist.backend=gloo"));
  ASSERT_EQ(one.status, 0) << one.err;
  expect_losses_near(steps_of(path("one-dp2")), steps_of(path("zero1")), 1e-5);
  bytes[1] = moment_bytes(one.out);
  // 1/W of the moments, up to the padding of a bucket to a multiple of W and each slice's step count.
  for (int w : {2, 3}) EXPECT_NEAR(bytes[w], bytes[1] / w, 0.01 * bytes[1] / w) << w;
}

// A sharded checkpoint holds whole moments by parameter name: it resumes on any number of ranks,
// sharded or not. Against the uninterrupted run the continued curve differs only in summation
// order (other ranks, other micro-batches): within 1e-4, as FourProcessesAgree... states.
TEST_F(Distributed, ShardedCheckpointsResumeOnAnyNumberOfRanksShardedOrNot) {
  const std::string keep = " --set train.checkpoint.keep=10";
  ASSERT_EQ(run_command(train("straight", ranks_of_six(3) + kShard + keep)).status, 0);
  const auto straight = steps_of(path("straight"));
  auto after = [](const std::vector<nlohmann::json>& lines, int64_t step) {
    std::vector<nlohmann::json> out;
    for (const auto& j : lines)
      if (j["step"].get<int64_t>() > step) out.push_back(j);
    return out;
  };
  struct Leg {
    std::string run, from, how;
    int64_t step;
  };
  // 3 sharded -> 2 sharded, 3 sharded -> 1 plain, and back: 1 plain -> 3 sharded.
  for (const Leg& leg : {Leg{"to-two", "straight", ranks_of_six(2) + kShard, 7}, Leg{"to-one", "straight", ranks_of_six(1), 7},
                         Leg{"back-to-three", "to-one", ranks_of_six(3) + kShard, 14}}) {
    SCOPED_TRACE(leg.run);
    const std::string from = path(leg.from) + "/checkpoints/" + fmt::format("step_{:08d}", leg.step);
    const auto r = run_command(train(leg.run, leg.how + keep + " --resume " + from));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("resuming from " + from + " (step " + std::to_string(leg.step)), std::string::npos) << r.out;
    expect_losses_near(after(straight, leg.step), steps_of(path(leg.run)), 1e-4);
  }
}

// Buckets started by the backward pass's hooks and buckets started after it reduce the same
// sums: bitwise the same run, on 3 ranks and several buckets. bf16 collectives round the
// gradients: close, not equal.
TEST_F(Distributed, OverlappedReductionIsBitwiseTheBlockingOne) {
  const std::string wide = ranks_of_six(3) + " --set train.tokens=1920 --set model.d_model=256 --set model.head_dim=64 "
                                             "--set model.ffn_hidden=512 --set dist.bucket_mb=1";
  const auto overlapped = run_command(train("overlapped", wide));
  ASSERT_EQ(overlapped.status, 0) << overlapped.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(overlapped.out, m, std::regex(R"(gradients reduced in ([0-9]+) bucket\(s\) of up to 1 MiB, overlapped)")))
      << overlapped.out;
  EXPECT_GE(std::stoi(m[1].str()), 3);
  const auto blocking = run_command(train("blocking", wide + " --set dist.overlap_grad_reduce=false"));
  ASSERT_EQ(blocking.status, 0) << blocking.err;
  EXPECT_EQ(dumped(steps_of(path("blocking"))), dumped(steps_of(path("overlapped"))));
  EXPECT_EQ(model_hash("blocking"), model_hash("overlapped"));

  const auto bf16 = run_command(train("bf16", wide + " --set dist.reduce_dtype=bf16"));
  ASSERT_EQ(bf16.status, 0) << bf16.err;
  EXPECT_NE(bf16.out.find("overlapped with the backward pass, in bf16"), std::string::npos) << bf16.out;
  expect_losses_near(steps_of(path("overlapped")), steps_of(path("bf16")), 1e-2);
  EXPECT_NE(model_hash("bf16"), model_hash("overlapped"));
}

// Sharded, each bucket's all-gather of the updated parameters runs while the next forward pass
// goes on, and the forward pass waits for it where it reaches the bucket's parameters: bitwise the
// run whose gathers finish right after the update. 3 ranks, several buckets, 2 micro-batches per
// step (only the first waits), an evaluation and a checkpoint in between (which wait for all).
TEST_F(Distributed, OverlappedParameterGatherIsBitwiseTheBlockingOne) {
  const std::string wide = kSix + "--nproc 3 --set train.micro_batch_size=1 --set train.tokens=1920 --set model.d_model=256 "
                                  "--set model.head_dim=64 --set model.ffn_hidden=512 --set dist.bucket_mb=1 "
                                  "--set dist.check_replicas_every_steps=0" + kShard;
  const auto overlapped = run_command(train("overlapped", wide));
  ASSERT_EQ(overlapped.status, 0) << overlapped.err;
  EXPECT_NE(overlapped.out.find("; parameters all-gathered during the next forward pass"), std::string::npos) << overlapped.out;
  const auto blocking = run_command(train("blocking", wide + " --set dist.overlap_param_gather=false"));
  ASSERT_EQ(blocking.status, 0) << blocking.err;
  EXPECT_NE(blocking.out.find("; parameters all-gathered after the update"), std::string::npos) << blocking.out;
  EXPECT_EQ(dumped(steps_of(path("blocking"))), dumped(steps_of(path("overlapped"))));
  EXPECT_EQ(model_hash("blocking"), model_hash("overlapped"));
  // The mid-run checkpoint holds the gathered weights too: a resume from it continues exactly.
  const std::string from = path("overlapped") + "/checkpoints/step_00000007";
  const auto resumed = run_command(train("resumed", wide + " --resume " + from));
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_EQ(model_hash("resumed"), model_hash("overlapped"));
}

// Warnings that every rank gives (eight GPUs where a fused kernel cannot run) are said once.
TEST(RankLines, EachDistinctLineOnceWithTheRanksUnlessAllGaveIt) {
  const std::string a = "the fused SwiGLU kernel fails on this GPU", b = "the fused RoPE kernel disagrees";
  EXPECT_EQ(merge_rank_lines({{a, b}, {a}, {a, b}, {a}}), (std::vector<std::string>{a, "ranks 0, 2: " + b}));
  EXPECT_EQ(merge_rank_lines({{}, {b}, {}}), (std::vector<std::string>{"rank 1: " + b}));
  EXPECT_EQ(merge_rank_lines({{a, a}}), (std::vector<std::string>{a}));  // one process
  EXPECT_TRUE(merge_rank_lines({{}, {}}).empty());
}

TEST(BucketLayout, FillsFromTheLastParameterAndPadsToTheRanks) {
  // 40-byte buckets of fp32: 10 elements. Parameters of 4, 3, 12, 2, 5 elements.
  const BucketLayout l({4, 3, 12, 2, 5}, 4, 40, 3);
  ASSERT_EQ(l.buckets.size(), 3u);
  EXPECT_EQ(l.buckets[0].params, (std::vector<size_t>{3, 4}));  // the backward pass finishes these first
  EXPECT_EQ(l.buckets[0].offsets, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(l.buckets[1].params, (std::vector<size_t>{2}));     // larger than a bucket: alone
  EXPECT_EQ(l.buckets[2].params, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(l.buckets[2].offsets, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(l.bucket_of, (std::vector<size_t>{2, 2, 1, 0, 0}));
  EXPECT_EQ(l.buckets[0].padded, 9);
  EXPECT_EQ(l.buckets[1].padded, 12);
  EXPECT_EQ(l.buckets[2].padded, 9);
  EXPECT_EQ(l.shard_numel(), 3 + 4 + 3);
}

TEST_F(Distributed, NodeVariablesThatDoNotFitAreRefused) {
  const auto r = run_command("NNODES=2 NODE_RANK=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 " + train("x"));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe: environment: NODE_RANK=2 is not below NNODES=2\n");
  const auto m = run_command("NNODES=2 NODE_RANK=1 " + train("x", "--nproc 2"));
  EXPECT_EQ(m.status, 2);
  EXPECT_EQ(m.err, "gqe: environment: NNODES=2 needs NODE_RANK, MASTER_ADDR and MASTER_PORT (node 0's address and a free port on it, "
                   "the same on every node)\n");
  // A port that another program listens on (another job's store) is the user's to change.
  const int busy = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(busy, 4), 0);
  ASSERT_EQ(::getsockname(busy, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const auto in_use = run_command(fmt::format("NNODES=2 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", port) + train("x", "--nproc 1"));
  ::close(busy);
  EXPECT_EQ(in_use.status, 2);
  EXPECT_EQ(in_use.err, fmt::format("gqe: environment: MASTER_PORT={} is in use on this machine (by another job?): choose another port, "
                                    "the same on every node\n", port));
  EXPECT_FALSE(fs::exists(path("x")));
}

TEST_F(Distributed, ShapesThatDoNotSplitOverTheRanksAreRefused) {
  const auto r = run_command(train("x", "--nproc 3"));
  EXPECT_EQ(r.status, 2);
  // Once, before any rank starts (not once per rank and again from the launcher).
  EXPECT_EQ(r.err, "gqe: " + config_ + ": a global batch of 8 sequences does not split into 3 ranks x micro-batches of 4: "
                   "train on 1 or 2 ranks, or make train.global_batch_tokens a multiple of 384 (3 x 4 sequences of 32)\n");
  const auto nested = run_command("RANK=0 WORLD_SIZE=1 " + train("y", "--nproc 2"));
  EXPECT_EQ(nested.status, 2);
  EXPECT_EQ(nested.err, "gqe: --nproc: this process is already a rank of a launched job (RANK is set); drop --nproc\n");
  EXPECT_FALSE(fs::exists(path("x")));
}

TEST_F(Distributed, BadInputIsOneLineFromTheWholeJob) {
  // What the launcher can check, it checks before any rank starts.
  const auto nccl = run_command(train("x", "--nproc 2 --set dist.backend=nccl --set train.device=cpu"));
  EXPECT_EQ(nccl.status, 2);
  EXPECT_EQ(nccl.err, "gqe: --set: dist.backend is nccl, but training runs on the CPU (use gloo or auto)\n");

  const std::string ds = path("ten-shards");
  const auto enc = run_command(std::string(GQE_DATA_BINARY) + " encode " + GQE_SOURCE_DIR +
                               "/tests/data/prose.txt --doc-boundary blank-line --val-fraction 0.25 --quiet --shard-tokens 100"
                               " --tokenizer " + (dir_->path() / "tok.model").string() + " --out " + ds);
  ASSERT_EQ(enc.status, 0) << enc.err;

  // Rank 0 alone reads a checkpoint: one made on other data stops the other rank too, quietly.
  const auto other = run_command(train("other", "--set train.tokens=1280 --set data.dataset=" + ds));
  ASSERT_EQ(other.status, 0) << other.err;
  const std::string checkpoint = path("other") + "/checkpoints/step_00000005";
  const auto resumed = run_command(train("x", "--nproc 2 --resume " + checkpoint));
  EXPECT_EQ(resumed.status, 2);
  EXPECT_EQ(resumed.err, "gqe: " + checkpoint + ": made on other data than " + (dir_->path() / "ds").string() +
                             " (its data position would not mean the same samples)\n");

  // Each rank verifies its share of the shards (rank r: shards r, r + W, ...): a damaged one that
  // only rank 3 of 4 reads stops every rank, with the one line rank 0 prints, before any rank
  // touches the run directory.
  const fs::path damaged = fs::path(ds) / "train_000003.bin";
  ASSERT_TRUE(fs::exists(fs::path(ds) / "train_000007.bin"));
  test::flip_byte(damaged, static_cast<std::streamoff>(fs::file_size(damaged)) - 1);
  const std::string mismatch = damaged.string() + ": payload checksum mismatch (the tokens were changed or damaged)\n";
  const auto r = run_command(train("y", "--nproc 4 --set train.micro_batch_size=2 --set data.dataset=" + ds));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe: rank 3: " + mismatch);
  EXPECT_FALSE(fs::exists(path("y")));

  // Ranks that srun (or torchrun) starts check everything themselves, in the job: input every
  // rank finds bad is rank 0's one line too, not one per rank.
  const int port = free_port();
  auto tasks = [&](const std::string& extra) {
    const test::TwoTasks t = test::run_as_two_slurm_tasks(train("z", extra), port, path("z.1.out"));
    EXPECT_EQ(t.task1_status, 2);
    EXPECT_EQ(read_file(path("z.1.out")), "");
    return t.task0;
  };
  const auto missing = tasks("--set data.dataset=" + path("nowhere"));
  EXPECT_EQ(missing.status, 2);
  EXPECT_EQ(missing.err, "gqe: " + path("nowhere") + ": dataset directory not found\n");
  const auto odd = tasks("--set data.dataset=" + ds);  // rank 1 reads the odd shards
  EXPECT_EQ(odd.status, 2);
  EXPECT_EQ(odd.err, "gqe: rank 1: " + mismatch);
  EXPECT_FALSE(fs::exists(path("z")));

  // Two nodes of 2 ranks, the dataset missing on the second: its ranks check in the job, so node 0
  // stops at once with the line (and node 1 shows it too), rather than waiting dist.timeout_s for
  // ranks that node 1's launcher never started.
  const int node_port = free_port();
  const std::string nodes = "--nproc 2 --set train.micro_batch_size=2 --set dist.timeout_s=60";
  const auto start = std::chrono::steady_clock::now();
  test::Background node1("exec env " + node_env(1, node_port) + train("w", nodes + " --set data.dataset=" + path("nowhere")) + " >" +
                         path("w.1.out") + " 2>&1");
  const auto node0 = run_command(node_env(0, node_port) + train("w", nodes));
  EXPECT_EQ(node1.wait(), 2);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
  EXPECT_EQ(node0.status, 2);
  EXPECT_EQ(node0.err, "gqe: rank 2: " + path("nowhere") + ": dataset directory not found\n");
  EXPECT_EQ(read_file(path("w.1.out")), "gqe: " + path("nowhere") + ": dataset directory not found\n");
  EXPECT_FALSE(fs::exists(path("w")));
}

// The nodes of a job are started one by one: one started with another --set, or holding another
// copy of the data, would train something else than rank 0 (or hang in a collective). The job
// stops before anything is written, with one line naming the first keys that differ. The data
// goes by content: its path may differ from machine to machine.
TEST_F(Distributed, ANodeWithAnotherConfigOrOtherDataStopsTheJob) {
  const std::string ds = path("copy"), other = path("other-data");
  fs::copy(dir_->path() / "ds", ds);
  const auto enc = run_command(std::string(GQE_DATA_BINARY) + " encode " + GQE_SOURCE_DIR +
                               "/tests/data/prose.txt --doc-boundary blank-line --val-fraction 0.25 --quiet --shard-tokens 100"
                               " --tokenizer " + (dir_->path() / "tok.model").string() + " --out " + other);
  ASSERT_EQ(enc.status, 0) << enc.err;
  auto job = [&](const std::string& run, const std::string& node1_extra) {
    const int port = free_port();
    test::Background node1("exec env " + node_env(1, port) + train(run, node1_extra) + " >" + path(run + ".1.out") + " 2>&1");
    const auto node0 = run_command(node_env(0, port) + train(run));
    EXPECT_EQ(node1.wait(), node0.status);
    return node0;
  };
  const auto lr = job("lr", "--set train.optimizer.lr=0.001 --set train.optimizer.beta2=0.99");
  EXPECT_EQ(lr.status, 2);
  EXPECT_EQ(lr.err, "gqe: rank 1: its config differs from rank 0's (rank 0's -> this rank's): train.optimizer.lr: 0.003 -> 0.001; "
                    "train.optimizer.beta2: 0.95 -> 0.99: start every node with the same command and config files\n");
  EXPECT_EQ(read_file(path("lr.1.out")), "gqe: " + lr.err.substr(13));  // node 1's console shows it too
  EXPECT_FALSE(fs::exists(path("lr")));

  const auto data = job("data", "--set data.dataset=" + other);
  EXPECT_EQ(data.status, 2);
  EXPECT_EQ(data.err, "gqe: rank 1: data.dataset " + other +
                          " holds other data here than on rank 0 (another tokenizer or other shards): every node needs the same copy\n");
  EXPECT_FALSE(fs::exists(path("data")));

  // The same data at another path trains.
  const auto copy = job("copy", "--set data.dataset=" + ds + " --set train.tokens=3840");
  EXPECT_EQ(copy.status, 2);  // train.tokens is compared too
  EXPECT_NE(copy.err.find("train.tokens: 5120 -> 3840"), std::string::npos) << copy.err;
  const auto same = job("same", "--set data.dataset=" + ds);
  EXPECT_EQ(same.status, 0) << same.err << read_file(path("same.1.out"));

  // Node 1 runs another build: a copy of gqe whose version string says another commit (same
  // length, one character changed). It trains, and rank 0 says so once.
  const std::string version = run_command(test::gqe("--version")).out.substr(4);  // "gqe <version>\n"
  std::string binary = read_file(GQE_BINARY), theirs = version;
  theirs[0] = theirs[0] == '0' ? '1' : '0';
  size_t patched = 0;
  for (size_t at = binary.find(version.substr(0, version.size() - 1)); at != std::string::npos;
       at = binary.find(version.substr(0, version.size() - 1), at + 1))
    binary[at] = theirs[0], ++patched;
  ASSERT_GT(patched, 0u);
  const std::string other_build = path("gqe-other-build");
  write_file_atomic(other_build, binary);
  fs::permissions(other_build, fs::perms::owner_all);
  std::string node1_train = train("build");
  node1_train.replace(0, std::string(GQE_BINARY).size(), other_build);
  const int port = free_port();
  test::Background node1("exec env " + node_env(1, port) + node1_train + " >" + path("build.1.out") + " 2>&1");
  const auto build = run_command(node_env(0, port) + train("build"));
  EXPECT_EQ(node1.wait(), 0) << read_file(path("build.1.out"));
  ASSERT_EQ(build.status, 0) << build.err;
  const std::string warning = fmt::format("rank 1: runs gqe {}, rank 0 gqe {}: the ranks may compute differently; build the same commit "
                                          "on every node", theirs.substr(0, theirs.size() - 1), version.substr(0, version.size() - 1));
  EXPECT_NE(build.out.find(warning), std::string::npos) << build.out << build.err;
}


// A process that stops before it joins the job (a node whose launcher finds no GPU, a config bad
// on one node or in one task) tells the ranks already waiting: they stop at once with its line
// (rank 0 prints it) instead of after dist.timeout_s (60 s here). A node that never comes is waited
// for until the timeout, and rank 0 says whom it waits for; node 0 that never comes, too.
TEST_F(Distributed, AProcessThatStopsBeforeJoiningStopsTheJobAtOnce) {
  const std::string extra = "--nproc 2 --set train.micro_batch_size=2 --set dist.timeout_s=60";
  const std::string no_gpu = "--set: train.device is cuda, but no CUDA device is available";
  const std::string bad_lr = "--set: train.optimizer.lr: expected a number, got 'fast'";
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  {  // node 1 has no GPU: node 0's ranks stop with its line
    const int port = free_port();
    const auto start = std::chrono::steady_clock::now();
    test::Background node1("exec env " + node_env(1, port) + train("a", extra + " --set train.device=cuda") + " >" +
                           path("a.1.out") + " 2>&1");
    const auto node0 = run_command(node_env(0, port) + train("a", extra));
    EXPECT_EQ(node1.wait(), 2);
    EXPECT_LT(seconds_since(start), 30.0);
    EXPECT_EQ(node0.status, 2);
    EXPECT_EQ(node0.err, "gqe: node 1: " + no_gpu + "\n");
    EXPECT_EQ(read_file(path("a.1.out")), "gqe: " + no_gpu + "\n");
  }
  {  // node 0 (where rank 0 would serve the store) stops: it serves it until node 1's ranks know
    const int port = free_port();
    const auto start = std::chrono::steady_clock::now();
    test::Background node1("exec env " + node_env(1, port) + train("b", extra) + " >" + path("b.1.out") + " 2>&1");
    const auto node0 = run_command(node_env(0, port) + train("b", extra + " --set train.optimizer.lr=fast"));
    EXPECT_EQ(node1.wait(), 2);
    EXPECT_LT(seconds_since(start), 30.0);
    EXPECT_EQ(node0.status, 2);
    EXPECT_EQ(node0.err, "gqe: " + bad_lr + "\n");
    EXPECT_EQ(read_file(path("b.1.out")), "");  // node 0's console has the line
  }
  {  // srun's task 1 of 2 (on rank 0's machine) has a bad config: rank 0 says so, once
    const auto start = std::chrono::steady_clock::now();
    const std::string good = train("c", "--set dist.timeout_s=60"), bad = train("c", "--set dist.timeout_s=60 --set train.optimizer.lr=fast");
    const test::TwoTasks t = test::run_as_two_slurm_tasks(good, free_port(), path("c.1.out"), bad);
    EXPECT_LT(seconds_since(start), 30.0);
    EXPECT_EQ(t.task1_status, 2);
    EXPECT_EQ(t.task0.status, 2);
    EXPECT_EQ(t.task0.err, "gqe: rank 1: " + bad_lr + "\n");
    EXPECT_EQ(read_file(path("c.1.out")), "");
    // Both have it (as srun's eight tasks of a node would): one line, not one per task.
    const test::TwoTasks both = test::run_as_two_slurm_tasks(bad, free_port(), path("c.1.out"));
    EXPECT_EQ(both.task1_status, 2);
    EXPECT_EQ(both.task0.status, 2);
    EXPECT_EQ(both.task0.err, "gqe: " + bad_lr + "\n");
    EXPECT_EQ(read_file(path("c.1.out")), "");
  }
  {  // node 1 never starts: node 0 says whom it waits for (after 10 s), and how many came at the end
    const int port = free_port();
    const auto node0 = run_command(node_env(0, port) + train("d", "--nproc 2 --set train.micro_batch_size=2 --set dist.timeout_s=9"));
    EXPECT_EQ(node0.status, 1);
    EXPECT_EQ(node0.err.rfind(fmt::format("gqe: waiting at 127.0.0.1:{} for 2 of 4 ranks (2, 3): 10 s so far, giving up at 11 s\n", port), 0),
              0u)
        << node0.err;
    EXPECT_NE(node0.err.find(fmt::format("gqe: error: rank 0: cannot join the job at 127.0.0.1:{} within 11s: 2 of 4 ranks came (is a "
                                         "node not running", port)),
              std::string::npos)
        << node0.err;
    EXPECT_EQ(std::regex_search(node0.err, std::regex("rank 1: cannot join")), false) << "once per machine: " << node0.err;
  }
  {  // node 0 never starts: nothing answers at its address, said once per machine (after 10 s and
     // at the end), without c10d's trace
    const int port = free_port();
    const auto node1 = run_command(node_env(1, port) + train("e", "--nproc 2 --set train.micro_batch_size=2 --set dist.timeout_s=9"));
    EXPECT_EQ(node1.status, 1);
    EXPECT_EQ(node1.err.rfind(fmt::format("gqe: rank 2: waiting for the job's store at 127.0.0.1:{} (rank 0 serves it): 10 s so far, "
                                          "giving up at 11 s\n"
                                          "gqe: error: rank 2: cannot join the job at 127.0.0.1:{} within 11s: nothing answers there (is a "
                                          "node not running", port, port), 0),
              0u)
        << node1.err;
    EXPECT_EQ(node1.err.find("rank 3: cannot join"), std::string::npos) << node1.err;
    EXPECT_EQ(node1.err.find("c10d"), std::string::npos) << node1.err;
  }
  for (const char* run : {"a", "b", "c", "d", "e"}) EXPECT_FALSE(fs::exists(path(run))) << run;
}

// Whether every process in `pids` catches SIGINT (/proc's SigCgt): a rank of gqe train does from
// just before it joins the job.
bool catch_sigint(const std::vector<int>& pids) {
  for (int pid : pids) {
    std::smatch m;
    const std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
    if (!std::regex_search(status, m, std::regex("SigCgt:\\s*([0-9a-f]+)")) || !((std::stoull(m[1], nullptr, 16) >> (SIGINT - 1)) & 1))
      return false;
  }
  return !pids.empty();
}

// Ctrl-C (or SIGTERM) while the job gathers, waiting for a node that is not there, stops it within
// a second instead of at dist.timeout_s (60 s here), on every node: nothing is written, exit status
// 0 as for any stop of gqe train, and the line says so on the consoles of rank 0 and of the node
// stopped.
TEST_F(Distributed, AStopSignalWhileTheJobGathersStopsItAtOnce) {
  const std::string extra = "--nproc 2 --set train.micro_batch_size=2 --set dist.timeout_s=60";
  auto node = [&](int n, int nodes, int port, const std::string& out) {
    return std::make_unique<test::Background>(fmt::format("exec env NNODES={} NODE_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", nodes, n, port) +
                                              train("s", extra) + " >" + path(out) + " 2>&1");
  };
  auto seconds_to_end = [](test::Background& b, int& status) {
    const auto start = std::chrono::steady_clock::now();
    status = b.wait();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const std::string nothing = ": nothing was written; the same command starts the job\n";
  {  // node 1 alone: its ranks wait for node 0's store
    const int port = free_port();
    const auto node1 = node(1, 2, port, "alone.out");
    const std::vector<int> ranks = ranks_of(node1->pid());
    for (int i = 0; i < 3000 && !catch_sigint(ranks); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(catch_sigint(ranks));
    node1->signal(SIGINT);
    int status = -1;
    EXPECT_LT(seconds_to_end(*node1, status), 10.0);
    EXPECT_EQ(status, 0);
    EXPECT_EQ(read_file(path("alone.out")), fmt::format("gqe: rank 2: stopped by SIGINT while waiting for the job's store at 127.0.0.1:{}", port) + nothing);
  }
  {  // 3 nodes, node 2 missing; node 1 is stopped: node 0's ranks stop too
    const int port = free_port();
    const auto node0 = node(0, 3, port, "three.0.out");
    const auto node1 = node(1, 3, port, "three.1.out");
    // Rank 0's notice (after 10 s) says that nodes 0 and 1 have joined.
    const std::string notice = fmt::format("gqe: waiting at 127.0.0.1:{} for 2 of 6 ranks (4, 5)", port);
    auto heard = [&] { return fs::exists(path("three.0.out")) && read_file(path("three.0.out")).find(notice) != std::string::npos; };
    for (int i = 0; i < 3000 && !heard(); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(heard());
    node1->signal(SIGINT);
    int status0 = -1, status1 = -1;
    EXPECT_LT(seconds_to_end(*node1, status1), 10.0);
    EXPECT_LT(seconds_to_end(*node0, status0), 10.0);
    EXPECT_EQ(status0, 0);
    EXPECT_EQ(status1, 0);
    // Either of node 1's ranks may say it first.
    const std::regex line("gqe: rank [23]: stopped by SIGINT while the job gathered \\(4 of 6 ranks had come\\)" + std::regex_replace(nothing, std::regex("[().]"), "\\$&"));
    const std::string out0 = read_file(path("three.0.out")), out1 = read_file(path("three.1.out"));
    EXPECT_TRUE(std::regex_match(out0.substr(out0.find('\n') + 1), line)) << out0;
    EXPECT_TRUE(std::regex_match(out1, line)) << out1;
  }
  {  // a command that leaves the signal to its default (bench comm, eval): the shell's status for
     // it, and no line from the launcher about a rank that was killed
    const auto node0 = std::make_unique<test::Background>(
        fmt::format("exec env NNODES=2 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", free_port()) +
        test::gqe("bench comm " + config_ + " --nproc 2") + " >" + path("comm.out") + " 2>&1");
    ASSERT_EQ(ranks_of(node0->pid()).size(), 2u);
    node0->signal(SIGINT);
    EXPECT_EQ(node0->wait(), 128 + SIGINT);
    EXPECT_EQ(read_file(path("comm.out")), "");
  }
  EXPECT_FALSE(fs::exists(path("s")));
}

// Nodes that do not make the job their variables describe stop at once, saying why, instead of
// waiting dist.timeout_s (60 s here) or mixing ranks up in the collectives.
TEST_F(Distributed, AJobOfTheWrongShapeStopsAtOnceSayingWhy) {
  const std::string timeout = " --set dist.timeout_s=60 --set train.micro_batch_size=2";
  auto node = [&](int n, int nodes, int port, const std::string& run, const std::string& extra) {
    return fmt::format("NNODES={} NODE_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", nodes, n, port) + train(run, extra + timeout);
  };
  auto background = [&](const std::string& command, const std::string& out) {
    return std::make_unique<test::Background>("exec env " + command + " >" + path(out) + " 2>&1");
  };
  const auto start = std::chrono::steady_clock::now();
  {  // node 1 starts one rank where node 0 starts two: its rank 1 is of a job of 2
    const int port = free_port();
    const auto node1 = background(node(1, 2, port, "nproc", "--nproc 1"), "nproc.1.out");
    const auto node0 = run_command(node(0, 2, port, "nproc", "--nproc 2"));
    const std::string line = "rank 1: a job of 2 ranks here, of 4 on rank 0: every node must start as many ranks (--nproc, NNODES)\n";
    EXPECT_EQ(node1->wait(), 2);
    EXPECT_EQ(node0.status, 2);
    EXPECT_EQ(node0.err, "gqe: " + line);
    EXPECT_EQ(read_file(path("nproc.1.out")), "gqe: " + line);  // its own console says it too
  }
  {  // two nodes given NODE_RANK=1 (of 3): rank 1 comes twice
    const int port = free_port();
    const auto a = background(node(1, 3, port, "twice", "--nproc 1"), "twice.a.out");
    const auto b = background(node(1, 3, port, "twice", "--nproc 1"), "twice.b.out");
    const auto node0 = run_command(node(0, 3, port, "twice", "--nproc 1"));
    EXPECT_EQ(a->wait(), 2);
    EXPECT_EQ(b->wait(), 2);
    EXPECT_EQ(node0.status, 2);
    const std::string line = "gqe: rank 1 came twice: two nodes with the same NODE_RANK?\n";
    EXPECT_EQ(node0.err, line);
    EXPECT_EQ(read_file(path("twice.a.out")) + read_file(path("twice.b.out")), line);  // the one that came second
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 45.0);
  for (const char* run : {"nproc", "twice"}) EXPECT_FALSE(fs::exists(path(run))) << run;
}

}  // namespace
}  // namespace gqe
