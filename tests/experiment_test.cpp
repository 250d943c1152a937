// Experiments and comparisons: statistics against independent values, the comparison on synthetic
// runs (different logging intervals, seeds), experiment files, and an experiment interrupted,
// resumed and skipped as a user runs it.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/run_lock.h"
#include "config/config_loader.h"
#include "dist/launcher.h"
#include "experiment/compare.h"
#include "experiment/experiment.h"
#include "experiment/stats.h"
#include "test_util.h"

namespace gqe {
namespace {

using test::gqe;

namespace fs = std::filesystem;
using test::run_command;

TEST(Stats, WelchTTestAndStudentTMatchMpmath) {
  // Expected values computed with mpmath (an independent implementation) at 30 digits.
  const auto t = welch_t_test({3.10, 3.02, 3.07, 3.12, 2.98}, {3.15, 3.21, 3.11, 3.18});
  ASSERT_TRUE(t);
  EXPECT_NEAR(t->t, -3.1221863030364, 1e-10);
  EXPECT_NEAR(t->df, 6.98706053568937, 1e-10);
  EXPECT_NEAR(t->p, 0.0168322042584127, 1e-10);
  EXPECT_NEAR(student_t_cdf(1.5, 3), 0.884708067377588, 1e-12);
  EXPECT_NEAR(student_t_cdf(-2.2, 7.5), 0.030599732953058, 1e-12);
  EXPECT_NEAR(student_t_cdf(0.3, 40), 0.61713464161449, 1e-12);
  EXPECT_FALSE(welch_t_test({1.0}, {1.0, 2.0}));  // one value has no spread
  EXPECT_DOUBLE_EQ(stddev({2, 4, 4, 4, 5, 5, 7, 9}), std::sqrt(32.0 / 7));
}

TEST(Stats, SmoothingAndInterpolation) {
  const auto smooth = ema({{1, 10}, {2, 0}, {3, 0}}, 0.5);
  EXPECT_DOUBLE_EQ(smooth[0].value, 10);                   // bias-corrected: the first value itself
  EXPECT_DOUBLE_EQ(smooth[1].value, (0.5 * 5) / 0.75);      // (0.5*(0.5*10) + 0.5*0) / (1 - 0.25)
  EXPECT_DOUBLE_EQ(*value_at({{100, 4}, {300, 2}}, 150), 3.5);
  EXPECT_FALSE(value_at({{100, 4}, {300, 2}}, 301));
  EXPECT_FALSE(value_at({}, 1));
}

// A run directory made by hand: config.yaml, metrics.jsonl, eval.json.
void fake_run(const fs::path& dir, const std::vector<std::string>& overrides, int64_t log_every,
              int64_t val_every, double slope, const std::map<std::string, std::pair<double, double>>& tasks) {
  fs::create_directories(dir);
  const std::string base = std::string(GQE_SOURCE_DIR) + "/configs/tiny/base.yaml";
  write_file_atomic(dir / "config.yaml", to_yaml(load_config(base, overrides).config));  // tokens 1M
  std::string lines;
  for (int64_t t = log_every; t <= 1'000'000; t += log_every) {
    lines += fmt::format("{{\"step\":{},\"tokens\":{},\"loss\":{},\"lr\":0.001,\"tokens_per_s\":1000}}\n", t / log_every, t,
                         8.0 - slope * static_cast<double>(t) / 1e6);
    if (t % val_every == 0) lines += fmt::format("{{\"step\":{},\"tokens\":{},\"val_loss\":{}}}\n", t / log_every, t, 7.0 - slope * static_cast<double>(t) / 1e6);
  }
  write_file_atomic(dir / "metrics.jsonl", lines);
  nlohmann::json report = {{"step", 1}, {"tasks", nlohmann::json::object()}};
  for (const auto& [task, s] : tasks) report["tasks"][task] = {{"acc", s.first}, {"acc_norm", s.second}, {"items", 10}};
  write_file_atomic(dir / "eval.json", report.dump());
}

TEST(Compare, MatchesRunsByTokensWhateverTheirLoggingIntervals) {
  test::TempDir dir;
  // A: logs every 1000 tokens, evaluates every 250K; B: every 4000 tokens, evaluates every 200K.
  fake_run(dir.path() / "a", {}, 1000, 250'000, 2.0, {{"hellaswag", {0.30, 0.40}}, {"piqa", {0.60, 0.55}}});
  fake_run(dir.path() / "b", {"model.attention.type=gqe"}, 4000, 200'000, 3.0, {{"hellaswag", {0.32, 0.38}}, {"piqa", {0.64, 0.50}}});
  const Comparison c = compare({dir.path() / "a", dir.path() / "b"}, 0.0);  // no smoothing: the raw curves
  EXPECT_EQ(c.points, (std::vector<double>{250'000, 500'000, 750'000, 1'000'000}));  // A's evaluations
  const RunSummary &a = c.runs[0], &b = c.runs[1];
  EXPECT_NEAR(*a.train_at[1], 8.0 - 2.0 * 0.5, 1e-12);
  EXPECT_NEAR(*b.train_at[1], 8.0 - 3.0 * 0.5, 1e-12);  // logged at 500K exactly (125 x 4000)
  EXPECT_NEAR(*a.val_at[0], 7.0 - 2.0 * 0.25, 1e-12);
  EXPECT_NEAR(*b.val_at[0], 7.0 - 3.0 * 0.25, 1e-12);  // between B's evaluations at 200K and 400K
  EXPECT_NEAR(*b.val_at[3], 7.0 - 3.0, 1e-12);
  EXPECT_NEAR(*a.score, (0.40 + 0.60) / 2, 1e-12);      // HellaSwag by acc_norm, PIQA by acc
  EXPECT_NEAR(*b.score, (0.38 + 0.64) / 2, 1e-12);
  EXPECT_EQ(a.active_heads, 4);
  EXPECT_EQ(b.active_heads, 3);
  const std::string md = comparison_markdown(c);
  EXPECT_NE(md.find("| b | 1.33M | 3/4 | 1000 | 7.2500 | 6.5000 | 5.7500 | 5.0000 | 6.2500 | 5.5000 | 4.7500 | 4.0000 | -1.0000 |"
                    " 0.3800 | 0.6400 | 0.5100 | +0.0100 |"),
            std::string::npos) << md;
  const std::string csv = comparison_csv(c);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "run,group,params,active_q_heads,q_heads,tokens,tokens_per_s,train_loss@250000,train_loss@500000,"
            "train_loss@750000,train_loss@1000000,val_loss@250000,val_loss@500000,val_loss@750000,val_loss@1000000,"
            "final_val_loss,hellaswag_acc,hellaswag_acc_norm,piqa_acc,piqa_acc_norm,score");
  EXPECT_EQ(test::user_error_of([&] { compare({dir.path()}, 0.9); }), dir.path().string() + ": not a run directory (no config.yaml)");
}

TEST(Compare, SeedsOfAnArmAreGroupedAndTestedAgainstTheBaseline) {
  test::TempDir dir;
  std::vector<fs::path> runs;
  const double gqa_slopes[] = {2.0, 2.1, 1.9}, gqe_slopes[] = {2.6, 2.5, 2.8};
  for (int s = 0; s < 3; ++s) {
    runs.push_back(dir.path() / fmt::format("gqa-seed{}", s));
    fake_run(runs.back(), {fmt::format("train.seed={}", s)}, 10'000, 250'000, gqa_slopes[s], {});
  }
  for (int s = 0; s < 3; ++s) {
    runs.push_back(dir.path() / fmt::format("gqe-seed{}", s));
    fake_run(runs.back(), {"model.attention.type=gqe", fmt::format("train.seed={}", s)}, 10'000, 250'000, gqe_slopes[s], {});
  }
  const Comparison c = compare(runs, 0.9);
  ASSERT_EQ(c.groups.size(), 2u);
  EXPECT_EQ(c.groups[0].name, "gqa");
  EXPECT_EQ(c.groups[1].name, "gqe");
  EXPECT_EQ(c.groups[1].runs, (std::vector<size_t>{3, 4, 5}));
  const std::vector<double> gqa{5.0, 4.9, 5.1}, gqe{4.4, 4.5, 4.2};  // final val loss: 7 - slope
  EXPECT_NEAR(c.groups[1].val_mean, mean(gqe), 1e-12);
  EXPECT_NEAR(c.groups[1].val_std, stddev(gqe), 1e-12);
  ASSERT_TRUE(c.groups[1].val_test);
  EXPECT_NEAR(c.groups[1].val_test->p, welch_t_test(gqe, gqa)->p, 1e-12);
  EXPECT_LT(c.groups[1].val_test->p, 0.01);
  EXPECT_NE(comparison_markdown(c).find("| gqe | 3 | 4.3667 ± 0.1528 |"), std::string::npos) << comparison_markdown(c);
}

TEST(ExperimentFile, ArmsMayDifferOnlyInTheAttention) {
  test::TempDir dir;
  const std::string base = std::string(GQE_SOURCE_DIR) + "/configs/tiny/base.yaml";
  auto error = [&](const std::string& text) {
    const std::string file = dir.write("exp.yaml", "name: x\nbase: " + base + "\nout: " + (dir.path() / "runs").string() + "\n" + text);
    return test::user_error_of([&] { load_experiment(file); });
  };
  const std::string file = (dir.path() / "exp.yaml").string();
  EXPECT_EQ(error("arms:\n  a: {model.attention.type: gqa}\n  b: {model.attention.type: gqe, train.tokens: 2M}\n"),
            file + ": arms.b changes train.tokens: 1000000 -> 2000000 -- arms may differ only in model.attention.* (same data, "
                   "order, budget and everything else)");
  EXPECT_EQ(error("arms:\n  a: {model.attention.top_k: 9, model.attention.type: gqe}\n"),
            file + ": arms.a: --set: model.attention.top_k: must be between 1 and the 2 experts per group (n_heads / n_kv_heads "
                   "= 4 / 2), got 9");
  EXPECT_EQ(error("arms: {a: {}}\nseed: [1]\n"), file + ": unknown key 'seed'; valid keys: name, base, out, seeds, arms, eval");
  EXPECT_NO_THROW(load_experiment(std::string(GQE_SOURCE_DIR) + "/configs/experiments/tiny.yaml"));
  const Experiment paper = load_experiment(std::string(GQE_SOURCE_DIR) + "/configs/experiments/paper-table2.yaml");
  EXPECT_EQ(paper.arms.size(), 4u);
  EXPECT_EQ(experiment_runs(paper)[1].config.config.model.attention.variant, GqeVariant::gqe);
  EXPECT_EQ(experiment_runs(paper)[3].run_dir, fs::path("runs/paper-table2/weighted_concat"));
}

class ExperimentRunning : public testing::Test {
 protected:
  void SetUp() override {
    test::make_fixture_dataset(dir_.path());
    const std::string base = dir_.write("base.yaml", "inherit: " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqa.yaml\n" + R"(
model: {vocab_size: 400, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8, ffn_hidden: 64}
data: {dataset: )" + (dir_.path() / "ds").string() + R"(, seq_len: 32}
train: {tokens: 25600, global_batch_tokens: 256, micro_batch_size: 8, threads: 1, schedule: {warmup_tokens: 1024},
        checkpoint: {every_tokens: 2560}}
eval: {every_tokens: 6400, val_tokens: 256, batch_size: 4}
)");
    experiment_ = dir_.write("exp.yaml", "name: small\nbase: base.yaml\nout: " + (dir_.path() / "runs").string() +
                                             "\narms:\n  gqa: {model.attention.type: gqa}\n  gqe: {model.attention.type: gqe}\n");
  }
  test::TempDir dir_;
  std::string experiment_;
};

TEST_F(ExperimentRunning, AnInterruptedArmResumesAndFinishedArmsAreSkipped) {
  const fs::path runs = dir_.path() / "runs";
  {  // stopped (Ctrl-C reaches the experiment, which forwards it) while training the first arm
    test::Background job("exec " + gqe("experiment run " + experiment_) + " >" + (dir_.path() / "first.out").string() + " 2>&1");
    while (!fs::exists(runs / "gqa/checkpoints/latest")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    job.signal(SIGINT);
    ASSERT_EQ(job.wait(), 0) << read_file(dir_.path() / "first.out");
  }
  EXPECT_NE(read_file(dir_.path() / "first.out").find("stopped during gqa; run the same command to continue"), std::string::npos);
  // The run's own line says to continue the experiment (its gqe train would continue that run alone).
  EXPECT_NE(read_file(dir_.path() / "first.out").find("; continue with: gqe experiment run " + experiment_ + "\n"), std::string::npos)
      << read_file(dir_.path() / "first.out");
  const auto status = run_command(gqe("experiment status " + experiment_));
  EXPECT_NE(status.out.find("gqa                   interrupted"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("gqe                   not started"), std::string::npos);

  const auto second = run_command(gqe("experiment run " + experiment_));
  ASSERT_EQ(second.status, 0) << second.err << second.out;
  EXPECT_NE(second.out.find("[experiment] gqa: continuing from step"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("[experiment] gqe: training"), std::string::npos);
  EXPECT_NE(second.out.find("resuming from"), std::string::npos);
  for (const char* file : {"comparison.md", "comparison.csv", "loss.png", "loss_delta.png", "lr.png", "router_gqe.png"})
    EXPECT_GT(fs::file_size(runs / "comparison" / file), 100u) << file;
  EXPECT_EQ(read_file(runs / "comparison/loss.png").substr(1, 3), "PNG");
  EXPECT_TRUE(nlohmann::json::parse(read_file(runs / "gqe/eval.json")).contains("val_loss"));

  const auto metrics_before = read_file(runs / "gqa/metrics.jsonl");
  const auto third = run_command(gqe("experiment run " + experiment_));
  ASSERT_EQ(third.status, 0) << third.err;
  EXPECT_NE(third.out.find("[experiment] gqa: finished at step 100 (25600 tokens), skipped"), std::string::npos) << third.out;
  EXPECT_NE(third.out.find("[experiment] gqe: finished at step 100 (25600 tokens), skipped"), std::string::npos);
  EXPECT_EQ(third.out.find("resuming from"), std::string::npos);
  EXPECT_EQ(read_file(runs / "gqa/metrics.jsonl"), metrics_before);  // nothing trained or evaluated again

  // A finished arm whose last checkpoint is damaged is not skipped: its last steps train again,
  // identically, from the checkpoint before.
  const auto before_damage = test::deterministic_metrics(runs / "gqa");
  test::flip_byte(runs / "gqa/checkpoints/step_00000100/model.safetensors", 2000);
  const auto damaged = run_command(gqe("experiment run " + experiment_));
  ASSERT_EQ(damaged.status, 0) << damaged.err << damaged.out;
  EXPECT_NE(damaged.out.find("[experiment] gqa: its newest checkpoint (step 100) does not verify: training again from the one before"),
            std::string::npos)
      << damaged.out;
  EXPECT_NE(damaged.out.find("resuming from " + (runs / "gqa/checkpoints/step_00000090").string()), std::string::npos) << damaged.out;
  EXPECT_EQ(test::deterministic_metrics(runs / "gqa"), before_damage);

  // Ctrl-C while an arm is evaluated: a stop, said as such (the evaluation ends at once), and the
  // next run evaluates it.
  fs::remove(runs / "gqe/eval.json");
  {
    test::Background job("exec " + gqe("experiment run " + experiment_) + " >" + (dir_.path() / "fourth.out").string() + " 2>&1");
    auto evaluating = [&] {  // the child has become `gqe eval` (not a fork of the experiment that is yet to exec)
      const std::string child = run_command("pgrep -P " + std::to_string(job.pid())).out;
      std::ifstream cmdline("/proc/" + child.substr(0, child.find('\n')) + "/cmdline");
      const std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      return !child.empty() && args.find("eval") != std::string::npos;
    };
    for (int i = 0; i < 3000 && !evaluating(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_TRUE(evaluating());
    job.signal(SIGINT);
    ASSERT_EQ(job.wait(), 0) << read_file(dir_.path() / "fourth.out");
  }
  const std::string fourth = read_file(dir_.path() / "fourth.out");
  EXPECT_NE(fourth.find("[experiment] stopped while evaluating gqe; run the same command to continue"), std::string::npos) << fourth;
  EXPECT_EQ(fourth.find("failed"), std::string::npos) << fourth;
  EXPECT_FALSE(fs::exists(runs / "gqe/eval.json"));
}

// Several machines: every node runs the experiment with NNODES, NODE_RANK, MASTER_ADDR and
// MASTER_PORT, and each run is one job over all of them, trained as on one machine. Only node 0
// holds the run directories and evaluates (node 1's copy of the file says out: elsewhere, as on a
// machine without a shared file system, and nothing is written there); a finished run's job is
// still started on every node, since only node 0 can tell.
TEST_F(ExperimentRunning, TwoNodesTrainEachRunAsOneJob) {
  dir_.write("short.yaml", "inherit: base.yaml\ntrain: {tokens: 2560, micro_batch_size: 4, checkpoint: {every_tokens: 1280}}\n"
                           "eval: {every_tokens: 1280}\n");
  const fs::path runs = dir_.path() / "two-nodes", node1_cwd = dir_.path() / "node1";
  const std::string arms = "\narms:\n  gqa: {model.attention.type: gqa}\n  gqe: {model.attention.type: gqe}\n";
  const std::string exp = dir_.write("two.yaml", "name: two\nbase: short.yaml\nout: " + runs.string() + arms);
  const std::string exp1 = dir_.write("two-node1.yaml", "name: two\nbase: short.yaml\nout: " + (node1_cwd / "runs").string() + arms);
  // The reference: the second arm (its job on the port above MASTER_PORT) on one machine's 2 ranks.
  const std::string one = (dir_.path() / "one").string();
  ASSERT_EQ(run_command(gqe("train " + (dir_.path() / "short.yaml").string() + " --run-dir " + one +
                            " --set model.attention.type=gqe --nproc 2")).status, 0);
  auto both = [&](const std::string& out) {
    const int port = test::free_port_pair();
    auto env = [&](int node) { return fmt::format("NNODES=2 NODE_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", node, port); };
    fs::create_directories(node1_cwd);
    test::Background node1("cd " + node1_cwd.string() + " && exec env " + env(1) + gqe("experiment run " + exp1 + " --nproc 1") + " >" +
                           (dir_.path() / out).string() + " 2>&1");
    const auto node0 = run_command(env(0) + gqe("experiment run " + exp + " --nproc 1"));
    EXPECT_EQ(node1.wait(), 0) << read_file(dir_.path() / out);
    return node0;
  };
  const auto first = both("first.1.out");
  ASSERT_EQ(first.status, 0) << first.err << first.out;
  EXPECT_NE(first.out.find("[experiment] gqe: training -> " + (runs / "gqe").string()), std::string::npos) << first.out;
  EXPECT_EQ(test::deterministic_metrics(runs / "gqe"), test::deterministic_metrics(one));
  EXPECT_NE(first.out.find("data parallel: 2 ranks (1 local) over gloo"), std::string::npos) << first.out;
  EXPECT_TRUE(fs::exists(runs / "comparison/comparison.md"));
  const std::string node1 = read_file(dir_.path() / "first.1.out");
  EXPECT_NE(node1.find("[experiment] gqa: ranks 1..1 of 2 on this node; node 0 trains it or finds it finished"), std::string::npos)
      << node1;
  EXPECT_NE(node1.find("[experiment] every run is trained; node 0 evaluates and compares them"), std::string::npos) << node1;

  EXPECT_FALSE(fs::exists(node1_cwd / "runs"));

  const auto metrics = read_file(runs / "gqa/metrics.jsonl");
  const auto again = both("again.1.out");
  ASSERT_EQ(again.status, 0) << again.err << again.out;
  EXPECT_NE(again.out.find("[experiment] gqa: finished at step 10 (2560 tokens), started on every node all the same (the other "
                           "nodes cannot tell): its job ends without a step"),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find((runs / "gqa").string() + ": trained to its budget already (step 10, 2560 tokens), with this config: "
                                                      "nothing to do"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(again.out.find("verifying"), std::string::npos) << again.out;  // ended before the data was read
  EXPECT_EQ(read_file(runs / "gqa/metrics.jsonl"), metrics);
}

// Ctrl-C on node 0 alone (where a user watches) stops the job: its ranks vote. Node 1's
// experiment, which cannot read the run directory, hears from its rank that the run was stopped
// rather than trained, and ends too, rather than start the next run's job and wait dist.timeout_s
// for a node 0 that will not come.
TEST_F(ExperimentRunning, AStopOnNode0AloneEndsEveryNodesExperiment) {
  dir_.write("long.yaml", "inherit: base.yaml\ntrain: {tokens: 2560000, micro_batch_size: 4, checkpoint: {every_tokens: 1280}}\n"
                          "dist: {timeout_s: 60}\n");
  const fs::path runs = dir_.path() / "stopped";
  const std::string exp = dir_.write("long-exp.yaml", "name: long\nbase: long.yaml\nout: " + runs.string() +
                                                          "\narms:\n  gqa: {model.attention.type: gqa}\n  gqe: {model.attention.type: gqe}\n");
  const int port = test::free_port_pair();
  auto node = [&](int n) {
    return test::Background(fmt::format("exec env NNODES=2 NODE_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", n, port) +
                            gqe("experiment run " + exp + " --nproc 1") + " >" + (dir_.path() / fmt::format("node{}.out", n)).string() +
                            " 2>&1");
  };
  test::Background node1 = node(1), node0 = node(0);
  while (!fs::exists(runs / "gqa/checkpoints/latest")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  node0.signal(SIGINT);
  ASSERT_EQ(node0.wait(), 0) << read_file(dir_.path() / "node0.out");
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_EQ(node1.wait(), 0) << read_file(dir_.path() / "node1.out");
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, std::chrono::seconds(10));  // not dist.timeout_s
  const std::string out0 = read_file(dir_.path() / "node0.out"), out1 = read_file(dir_.path() / "node1.out");
  EXPECT_NE(out0.find("[experiment] stopped during gqa; run the same command on every node to continue"), std::string::npos) << out0;
  EXPECT_NE(out0.find("; continue with: gqe experiment run " + exp + " --nproc 1 (on every node, as before)\n"), std::string::npos) << out0;
  EXPECT_NE(out1.find("[experiment] stopped during gqa (by a signal to another node); run the same command on every node to "
                      "continue"),
            std::string::npos)
      << out1;
  EXPECT_EQ(out1.find("gqe: ranks"), std::string::npos) << out1;  // the next run's job was not started
  EXPECT_FALSE(fs::exists(runs / "gqe"));
}

// Bad input is one line and exit status 2, on one machine (a run's job finds it) and over several
// nodes, where a node that finds it before the first run's job stops that job on every node at
// once rather than leave the others waiting dist.timeout_s.
TEST_F(ExperimentRunning, BadInputIsOneLineAndStopsEveryNodeAtOnce) {
  dir_.write("nodata.yaml", "inherit: base.yaml\ndata: {dataset: " + (dir_.path() / "missing").string() + "}\n");
  const std::string arms = "\narms:\n  gqa: {model.attention.type: gqa}\n  gqe: {model.attention.type: gqe}\n";
  const std::string nodata = dir_.write("nodata-exp.yaml", "name: x\nbase: nodata.yaml\nout: " + (dir_.path() / "x").string() + arms);
  const auto one = run_command(gqe("experiment run " + nodata));
  EXPECT_EQ(one.status, 2);
  EXPECT_EQ(one.err, "gqe: " + (dir_.path() / "missing").string() + ": dataset directory not found\n");

  dir_.write("slow.yaml", "inherit: base.yaml\ndist: {timeout_s: 60}\n");
  const std::string exp = dir_.write("slow-exp.yaml", "name: y\nbase: slow.yaml\nout: " + (dir_.path() / "y").string() + arms);
  const int port = test::free_port_pair();
  auto env = [&](int node) { return fmt::format("env NNODES=2 NODE_RANK={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", node, port); };
  const auto start = std::chrono::steady_clock::now();
  test::Background node1("exec " + env(1) + gqe("experiment run " + exp + " --nproc 1") + " >" + (dir_.path() / "node1.out").string() + " 2>&1");
  const auto node0 = run_command(env(0) + gqe("experiment run " + (dir_.path() / "missing.yaml").string() + " --nproc 1"));
  EXPECT_EQ(node0.status, 2);
  EXPECT_EQ(node0.err, "gqe: " + (dir_.path() / "missing.yaml").string() + ": cannot open experiment file (no such file)\n");
  EXPECT_EQ(node1.wait(), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));  // not dist.timeout_s
  EXPECT_NE(read_file(dir_.path() / "node1.out").find("[experiment] gqa: its job stopped on bad input, which node 0's console names"),
            std::string::npos)
      << read_file(dir_.path() / "node1.out");
  EXPECT_FALSE(fs::exists(dir_.path() / "y"));

  // Found by node 0 after the first run's job: the second arm's run is locked (being trained by
  // another process). The second run's job, which node 1 starts, is told too.
  dir_.write("two-ranks.yaml", "inherit: base.yaml\ntrain: {tokens: 2560, micro_batch_size: 4}\ndist: {timeout_s: 60}\n");
  const std::string locked = dir_.write("locked-exp.yaml", "name: z\nbase: two-ranks.yaml\nout: " + (dir_.path() / "z").string() + arms);
  fs::create_directories(dir_.path() / "z" / "gqe");
  const RunLock held(dir_.path() / "z" / "gqe");  // as a trainer holds it
  test::Background second("exec " + env(1) + gqe("experiment run " + locked + " --nproc 1") + " >" + (dir_.path() / "node1.out").string() + " 2>&1");
  const auto first = run_command(env(0) + gqe("experiment run " + locked + " --nproc 1"));
  const auto found = std::chrono::steady_clock::now();
  EXPECT_EQ(first.status, 2);
  EXPECT_NE(first.err.find("gqe: " + (dir_.path() / "z" / "gqe").string() + ": is being trained by another process\n"), std::string::npos)
      << first.err;
  EXPECT_EQ(second.wait(), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - found, std::chrono::seconds(20));  // not dist.timeout_s
  EXPECT_NE(read_file(dir_.path() / "node1.out").find("[experiment] gqe: its job stopped on bad input, which node 0's console names"),
            std::string::npos)
      << read_file(dir_.path() / "node1.out");
}

TEST_F(ExperimentRunning, OneTrainerPerRunDirectory) {
  const std::string run = (dir_.path() / "locked").string();
  test::Background first("exec " + gqe("train " + (dir_.path() / "base.yaml").string() + " --run-dir " + run +
                                       " --set train.tokens=2560000") + " >/dev/null 2>&1");
  while (!fs::exists(run + "/metrics.jsonl")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto second = run_command(gqe("train " + (dir_.path() / "base.yaml").string() + " --run-dir " + run + " --set train.tokens=2560000"));
  EXPECT_EQ(second.status, 2);
  EXPECT_NE(second.err.find(run + ": is being trained by another process (pid "), std::string::npos) << second.err;
}

}  // namespace
}  // namespace gqe
