// Scaling ladders: the fitter against laws it must recover (exactly without noise; its 90%
// intervals covering the truth about 90% of the time with noise), ladder files (the rules, and
// one line for each bad one), and a small ladder run end to end as a user runs it: interrupted,
// resumed without retraining finished runs, fitted.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "config/config_loader.h"
#include "ladder/ladder.h"
#include "ladder/ladder_fit.h"
#include "ladder/scaling_fit.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::gqe;
using test::run_command;

TEST(ScalingFit, RecoversAKnownPowerLawExactly) {
  const PowerLaw truth{1.8, 4.0e3, 0.31};
  std::vector<double> C, L;
  for (double c = 1e14; c < 1e20; c *= 6) C.push_back(c), L.push_back(truth(c));
  const PowerLaw fit = power_law(fit_power_law(C, L));
  EXPECT_NEAR(fit.E, truth.E, 1e-6 * truth.E);
  EXPECT_NEAR(fit.A, truth.A, 1e-4 * truth.A);
  EXPECT_NEAR(fit.alpha, truth.alpha, 1e-6);
  EXPECT_NEAR(*fit.inverse(truth(3e17)), 3e17, 1e-4 * 3e17);
  EXPECT_FALSE(fit.inverse(1.7).has_value());  // below the irreducible loss: never reached
}

TEST(ScalingFit, RecoversAKnownChinchillaLawExactly) {
  const ChinchillaLaw truth{1.69, 406.4, 0.34, 410.7, 0.28};  // Hoffmann et al.'s fit, as the truth to recover
  std::vector<double> N, D, L;
  for (double n : {1e7, 4e7, 1.6e8, 6.4e8})
    for (double r : {5.0, 20.0, 80.0}) N.push_back(n), D.push_back(r * n), L.push_back(truth(n, r * n));
  const ChinchillaLaw fit = chinchilla_law(fit_chinchilla(N, D, L));
  EXPECT_NEAR(fit.E, truth.E, 1e-4);
  EXPECT_NEAR(fit.alpha, truth.alpha, 1e-4);
  EXPECT_NEAR(fit.beta, truth.beta, 1e-4);
  EXPECT_NEAR(fit.A / truth.A, 1, 1e-3);
  EXPECT_NEAR(fit.B / truth.B, 1, 1e-3);
}

// The 90% intervals of the paired residual bootstrap, over many synthetic ladders (5 sizes x 2
// seeds, log-normal noise of 1%): the exponent's and a 30x extrapolation's intervals contain the
// truth about 90% of the time, and the gap's (a second arm 0.02 worse) likewise. (Measured
// 2026-11-28: 83%, 89%, 86%. With 4 sizes the same intervals cover 71-83%: docs/scaling.md.)
TEST(ScalingFit, NinetyPercentIntervalsCoverTheTruthAboutNinetyPercentOfTheTime) {
  const PowerLaw truth{2.0, 60.0, 0.12};
  const double target = 3e17 * 30, gap = 0.02;
  const int trials = 150, draws = 200;
  int alpha_in = 0, pred_in = 0, gap_in = 0;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0, 0.01);
  for (int trial = 0; trial < trials; ++trial) {
    std::vector<double> C;
    std::vector<std::vector<double>> L(2);
    for (double c = 3e13; c <= 3e17 * 1.01; c *= 10)
      for (int seed = 0; seed < 2; ++seed) {
        C.push_back(c);
        const double shared = noise(rng);  // the data order's part: both arms see it
        L[0].push_back(truth(c) * std::exp(shared + noise(rng) / 2));
        L[1].push_back((truth(c) + gap) * std::exp(shared + noise(rng) / 2));
      }
    std::vector<FitResult> fits;
    std::vector<std::vector<double>> fitted(2);
    for (int a = 0; a < 2; ++a) {
      fits.push_back(fit_power_law(C, L[a]));
      for (double c : C) fitted[a].push_back(power_law(fits[a])(c));
    }
    auto quantities = [&](const PowerLaw& a, const PowerLaw& b) { return std::vector<double>{a.alpha, a(target), b(target) - a(target)}; };
    const auto est = quantities(power_law(fits[0]), power_law(fits[1]));
    const auto out = residual_bootstrap(fitted, L, 3, draws, static_cast<uint64_t>(trial), [&](const std::vector<std::vector<double>>& s) {
      return quantities(power_law(fit_power_law(C, s[0], fits[0].theta)), power_law(fit_power_law(C, s[1], fits[1].theta)));
    });
    auto covers = [&](size_t k, double value) {
      std::vector<double> v;
      for (const auto& d : out) v.push_back(d[k]);
      const Interval i = interval(est[k], v);
      return i.lo <= value && value <= i.hi;
    };
    alpha_in += covers(0, truth.alpha);
    pred_in += covers(1, truth(target));
    gap_in += covers(2, gap);
  }
  for (const auto& [what, in] : {std::pair{"alpha", alpha_in}, std::pair{"prediction", pred_in}, std::pair{"gap", gap_in}}) {
    const double coverage = static_cast<double>(in) / trials;
    EXPECT_GE(coverage, 0.80) << what;
    EXPECT_LE(coverage, 0.97) << what;
  }
}

TEST(ScalingFit, LineSlopeAndItsTest) {
  const auto flat = fit_line({1, 2, 3, 4}, {0.5, 0.52, 0.49, 0.51});
  ASSERT_TRUE(flat);
  EXPECT_GT(flat->p, 0.5);
  const auto steep = fit_line({1, 2, 3, 4, 5}, {1.01, 2.0, 2.99, 4.02, 5.0});
  EXPECT_NEAR(steep->slope, 1.0, 0.01);
  EXPECT_LT(steep->p, 1e-4);
  EXPECT_FALSE(fit_line({1, 2}, {1, 2}));
}

TEST(ShippedLadders, LoadAndThePaperLadderHoldsThePaperModel) {
  const Ladder tiny = load_ladder(std::string(GQE_SOURCE_DIR) + "/configs/ladders/tiny.yaml");
  EXPECT_EQ(ladder_runs(tiny).size(), 16u);
  const Ladder paper = load_ladder(std::string(GQE_SOURCE_DIR) + "/configs/ladders/paper.yaml");
  const std::vector<LadderRun> runs = ladder_runs(paper);
  EXPECT_EQ(runs.size(), 30u);
  const Config gqa250 = load_config(std::string(GQE_SOURCE_DIR) + "/configs/gqa-250m.yaml").config;
  int found = 0;
  for (const LadderRun& r : runs)
    if (r.point == "d1024-L16-20x" && r.run.arm == "gqa") {
      ++found;
      Config rung = gqa250;
      rung.model = r.run.config.config.model;
      EXPECT_EQ(to_yaml(rung), to_yaml(gqa250));  // the shape rule makes the paper's model
      EXPECT_EQ(r.run.config.config.train.optimizer.lr, gqa250.train.optimizer.lr);   // the rule's reference point
    }
  EXPECT_EQ(found, 1);
}

// A ladder over the fixture dataset: 3 sizes (32, 48, 64 wide; 2, 3, 4 layers), GQA and GQE.
class Ladders : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::make_fixture_dataset(dir_->path());
    dir_->write("base.yaml", "inherit: " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqa.yaml\n" + R"(
model: {vocab_size: 400, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8, ffn_hidden: 64}
data: {dataset: )" + (dir_->path() / "ds").string() + R"(, seq_len: 32}
train: {tokens: 25600, global_batch_tokens: 256, micro_batch_size: 8, threads: 1, schedule: {warmup_tokens: 1024}}
eval: {val_tokens: 256, batch_size: 4}
)");
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string ladder(const std::string& extra, const std::string& rungs = "[32, 48, 64]", const std::string& name = "ladder.yaml",
                            const std::string& budgets = "{tokens_per_param: 0.3}") {
    return dir_->write(name, R"(name: small
base: base.yaml
out: )" + (dir_->path() / "runs").string() + R"(
arms:
  gqa: {model.attention.type: gqa}
  gqe: {model.attention.type: gqe, model.attention.top_k: 1}
shape: {head_dim: 8, aspect: 16, kv_group: 2, ffn_ratio: 2}
rungs: )" + rungs + R"(
budgets: )" + budgets + "\n" + extra);
  }
  static test::TempDir* dir_;
};
test::TempDir* Ladders::dir_ = nullptr;

TEST_F(Ladders, RungsBudgetsAndHyperparametersFollowTheRules) {
  const Ladder l = load_ladder(ladder("seeds: [0, 3]\nrules: {warmup_fraction: 0.1}\n"));
  const std::vector<LadderRun> runs = ladder_runs(l);
  ASSERT_EQ(runs.size(), 3u * 2 * 2);
  const Config& small = runs.front().run.config.config;
  EXPECT_EQ(runs.front().point, "d32-L2");
  EXPECT_EQ(small.model.n_heads, 4);
  EXPECT_EQ(small.model.n_kv_heads, 2);
  EXPECT_EQ(small.model.ffn_hidden, 64);
  const LadderRun& big = runs.back();
  EXPECT_EQ(big.point, "d64-L4");
  EXPECT_EQ(big.run.run_dir, dir_->path() / "runs/d64-L4/gqe-seed3");
  const Config& c = big.run.config.config;
  EXPECT_EQ(c.model.n_layers, 4);
  EXPECT_EQ(c.model.n_heads, 8);
  EXPECT_EQ(c.model.n_kv_heads, 4);
  EXPECT_EQ(c.model.ffn_hidden, 128);
  EXPECT_EQ(c.train.seed, 3);
  EXPECT_EQ(c.model.attention.type, AttentionType::gqe);
  // tokens: 0.3 x the first arm's (GQA's) non-embedding parameters, rounded up to whole batches
  const double n = static_cast<double>(runs[8].info.non_embedding);  // d64-L4, gqa, seed 0
  EXPECT_EQ(runs[8].run.arm, "gqa");
  EXPECT_GE(static_cast<double>(c.train.tokens), 0.3 * n);
  EXPECT_LT(static_cast<double>(c.train.tokens), 0.3 * n + static_cast<double>(c.train.global_batch_tokens));
  EXPECT_EQ(c.train.tokens % c.train.global_batch_tokens, 0);
  EXPECT_EQ(c.train.tokens, runs[8].run.config.config.train.tokens);  // every arm of a rung: the same tokens
  EXPECT_EQ(c.data.seed, small.data.seed);                            // and the same data order
  // lr = 3e-3 x (N / N_base)^(-1/3), N_base the base config's non-embedding parameters
  const double n_base = static_cast<double>(describe_model(l.base_config).non_embedding);
  EXPECT_NEAR(c.train.optimizer.lr, 3e-3 * std::pow(n / n_base, -1.0 / 3), 1e-12);
  EXPECT_EQ(c.train.schedule.warmup_tokens, std::llround(0.1 * static_cast<double>(c.train.tokens)));
  // sequences = 8 x (C / C_base)^0.3271, to a power of two
  const double c_base = describe_model(l.base_config).train_flops_per_token() * 25600;
  const double seqs = 8 * std::pow(runs[8].info.train_flops_per_token() * 0.3 * n / c_base, 0.3271);
  EXPECT_EQ(c.train.global_batch_tokens, 32 * (int64_t{1} << std::llround(std::log2(seqs))));
  // On W ranks each rank's share of a batch goes in micro-batches of at most the base's 8; a batch
  // that does not split over the ranks is refused before anything trains.
  for (int world : {1, 2, 4})
    for (const LadderRun& r : ladder_runs(l, world)) {
      const int64_t share = r.run.config.config.train.global_batch_tokens / 32 / world;
      EXPECT_EQ(r.run.config.config.train.micro_batch_size, std::min<int64_t>(8, share)) << r.point << " on " << world;
    }
  try {
    ladder_runs(l, 3);
    ADD_FAILURE() << "3 ranks";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), l.file + ": rung d32-L2: its batch of " + std::to_string(small.train.global_batch_tokens / 32) +
                                         " sequences (the batch rule's power of 2) does not split over 3 ranks: train the ladder on "
                                         "fewer ranks, or on a power of 2 of them");
  }
  // budgets as multiples of Chinchilla's 20 tokens per parameter, and as FLOPs
  const Ladder multiples = load_ladder(ladder("", "[32, 64]", "multiples.yaml", "{chinchilla: [0.01, 0.02], flops: 3e9}"));
  const std::vector<LadderRun> m = ladder_runs(multiples);
  ASSERT_EQ(m.size(), 2u * 3 * 2);
  EXPECT_EQ(m[0].point, "d32-L2-0.01xC");
  EXPECT_EQ(m[2].point, "d32-L2-0.02xC");
  EXPECT_EQ(m[4].point, "d32-L2-3e+09F");
  EXPECT_GE(static_cast<double>(m[2].run.config.config.train.tokens), 0.4 * static_cast<double>(m[2].info.non_embedding));
  EXPECT_GE(m[4].flops, 3e9);
  EXPECT_LT(m[4].flops, 3e9 + m[4].info.train_flops_per_token() * static_cast<double>(m[4].run.config.config.train.global_batch_tokens));
  // a per-rung learning rate (a documented table) replaces the rule
  const Ladder table = load_ladder(ladder("", "[32, {width: 64, lr: 0.002}]", "table.yaml"));
  EXPECT_EQ(ladder_runs(table).back().run.config.config.train.optimizer.lr, 0.002);
  // explicit sizes instead of the shape rule
  const Ladder expl = load_ladder(ladder("", "[{model: {d_model: 48, n_layers: 1, n_heads: 6, n_kv_heads: 3, head_dim: 8, ffn_hidden: 96}}, 32, 64]",
                                         "explicit.yaml"));
  EXPECT_EQ(ladder_runs(expl)[2].point, "d48-L1");  // ordered by size: 32-L2, 48-L1, 64-L4
}

TEST_F(Ladders, BadFilesAreOneLineNamingTheFileAndKey) {
  auto error = [&](const std::string& extra, const std::string& rungs = "[32, 48, 64]") {
    const std::string file = ladder(extra, rungs, "bad.yaml");
    return test::user_error_of([&] { load_ladder(file); });
  };
  const std::string file = (dir_->path() / "bad.yaml").string();
  EXPECT_EQ(error("rung: [1]\n"), file + ": unknown key 'rung'; valid keys: name, base, out, seeds, arms, shape, rungs, budgets, rules, cost");
  EXPECT_EQ(error("rules: {lr_exp: 1}\n"), file + ": unknown key 'rules.lr_exp'; valid keys in rules: lr_exponent, batch_exponent, warmup_fraction, evaluations");
  EXPECT_EQ(error("", "[32, 36]"), file + ": rungs[1]: width 36 is not a positive multiple of shape.head_dim (8)");
  EXPECT_EQ(error("", "[32, 24]"), file + ": rungs[1]: width 24 gives 3 heads of 8, which do not divide into KV groups of shape.kv_group = 2");
  EXPECT_EQ(error("", "[32, 32]"), file + ": rungs[1]: d32-L2 is already a rung");
  EXPECT_EQ(error("", "[{width: 32, model: {d_model: 32}}]"), file + ": rungs[0]: give either width (the shape rule) or model (explicit sizes)");
  EXPECT_EQ(error("", "[{model: {attention: {top_k: 2}}}]"),
            file + ": rungs[0].model: model.attention.top_k -- a rung sets the size; the attention belongs to the arms");
  EXPECT_EQ(error("", "[{model: {d_model: 32, n_heads: 3}}]").rfind(file + ": rungs[0]: ", 0), 0u);
  EXPECT_EQ(error("", "[]"), file + ": rungs: a list of model sizes ({width: 256} or {model: {d_model: ..., ...}})");
  // a budget smaller than one batch
  const std::string tiny = dir_->write("tinybudget.yaml", read_file(ladder("", "[32, 48, 64]", "tb.yaml")) + "");
  {
    std::string text = read_file(tiny);
    text.replace(text.find("tokens_per_param: 0.3"), 21, "tokens_per_param: 0.001");
    dir_->write("tinybudget.yaml", text);
    EXPECT_EQ(test::user_error_of([&] { load_ladder(tiny); }),
              tiny + ": budgets: 0.001x at rung d32-L2 (18.59K non-embedding parameters) is 18.592 tokens, less than one batch (32 "
                     "tokens = 1 x 32)");
  }
}

TEST_F(Ladders, ArmsMayDifferOnlyInTheAttentionAndMustExist) {
  const std::string base = (dir_->path() / "base.yaml").string();
  auto with_arms = [&](const std::string& arms) {
    const std::string file = dir_->write("arms.yaml", "name: a\nbase: base.yaml\nout: runs\narms: " + arms +
                                                          "\nrungs: [32]\nbudgets: {tokens_per_param: 1}\nshape: {head_dim: 8}\n");
    return test::user_error_of([&] { load_ladder(file); });
  };
  const std::string file = (dir_->path() / "arms.yaml").string();
  EXPECT_EQ(with_arms("{}"), file + ": arms: a mapping of arm name to overrides");
  EXPECT_EQ(with_arms("{gqa: {model.attention.type: gqa}, wide: {model.attention.type: gqe, train.optimizer.lr: 0.01}}"),
            file + ": arms.wide changes train.optimizer.lr: 0.003 -> 0.01 -- arms may differ only in model.attention.* (same data, order, "
                   "budget and everything else)");
  // the command line: exit status 2, one line
  const auto r = run_command(gqe("ladder status " + file));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe: " + file + ": arms.wide changes train.optimizer.lr: 0.003 -> 0.01 -- arms may differ only in "
                   "model.attention.* (same data, order, budget and everything else)\n");
  EXPECT_EQ(run_command(gqe("ladder fit " + ladder("") + " --predict 250M")).status, 2);
}

// 3 sizes x 2 budgets (a grid: L(N, D) is fitted too) x 2 arms.
TEST_F(Ladders, ARunInterruptedResumesWithoutRetrainingFinishedRunsThenFits) {
  const std::string file = ladder("seeds: [0]\n", "[32, 48, 64]", "run.yaml", "{tokens_per_param: [0.15, 0.3]}");
  const fs::path runs = dir_->path() / "runs";
  {  // Ctrl-C once the second run has a checkpoint
    test::Background job("exec " + gqe("ladder run " + file) + " >" + (dir_->path() / "first.out").string() + " 2>&1");
    while (!fs::exists(runs / "d32-L2-0.15x/gqe/checkpoints/latest")) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    job.signal(SIGINT);
    ASSERT_EQ(job.wait(), 0) << read_file(dir_->path() / "first.out");
  }
  const std::string first_metrics = read_file(runs / "d32-L2-0.15x/gqa/metrics.jsonl");
  const auto status = run_command(gqe("ladder status " + file));
  ASSERT_EQ(status.status, 0) << status.err;
  EXPECT_NE(status.out.find("d32-L2-0.15x/gqa                  finished"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("d64-L4-0.3x/gqe                   not started"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("GPU-hours"), std::string::npos);

  const auto second = run_command(gqe("ladder run " + file));
  ASSERT_EQ(second.status, 0) << second.err << second.out;
  EXPECT_NE(second.out.find("[ladder] d32-L2-0.15x gqa: finished at step"), std::string::npos) << second.out;
  EXPECT_EQ(read_file(runs / "d32-L2-0.15x/gqa/metrics.jsonl"), first_metrics);  // not trained again
  EXPECT_NE(second.out.find("[ladder] d64-L4-0.3x gqe: training"), std::string::npos);
  EXPECT_TRUE(fs::exists(runs / "ladder.yaml"));

  // Fitted from the run directory alone.
  const auto fit = run_command(gqe("ladder fit " + runs.string() + " --predict 150K@50K,1M@1M --bootstrap 200"));
  ASSERT_EQ(fit.status, 0) << fit.err << fit.out;
  const auto j = nlohmann::json::parse(read_file(runs / "fit/ladder.json"));
  EXPECT_EQ(j["runs_finished"], 12);
  EXPECT_TRUE(j["missing"].empty());
  ASSERT_EQ(j["measured"].size(), 6u);
  EXPECT_EQ(j["measured"][5]["point"], "d64-L4-0.3x");
  EXPECT_EQ(j["measured"][5]["arms"]["gqe"]["losses"][0].get<double>(), *final_validation_loss(runs / "d64-L4-0.3x/gqe"));
  EXPECT_NEAR(j["measured"][5]["arms"]["gqe"]["gaps"][0].get<double>(),
              *final_validation_loss(runs / "d64-L4-0.3x/gqe") - *final_validation_loss(runs / "d64-L4-0.3x/gqa"), 1e-12);
  EXPECT_TRUE(j["chinchilla"]["gqe"].contains("beta"));
  EXPECT_EQ(j["chinchilla_predictions"].size(), 2u);
  for (const char* arm : {"gqa", "gqe"}) {
    const auto& law = j["laws"][arm];
    EXPECT_LE(law["alpha"]["lo"].get<double>(), law["alpha"]["value"].get<double>());
    EXPECT_GE(law["alpha"]["hi"].get<double>(), law["alpha"]["value"].get<double>());
  }
  ASSERT_EQ(j["predictions"].size(), 2u);
  const auto& gqe_at = j["predictions"][0]["arms"]["gqe"];
  EXPECT_NEAR(gqe_at["gap_matched_tokens"]["value"].get<double>(),
              gqe_at["loss"]["value"].get<double>() - j["predictions"][0]["arms"]["gqa"]["loss"]["value"].get<double>(), 1e-12);
  EXPECT_LT(gqe_at["flops"].get<double>(), j["predictions"][0]["arms"]["gqa"]["flops"].get<double>());  // fewer active heads
  EXPECT_EQ(std::count(fit.out.begin(), fit.out.end(), '\n') > 10, true);
  const std::string csv = read_file(runs / "fit/ladder.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 13);
  for (const char* png : {"loss_vs_compute.png", "gap_vs_compute.png", "router_health.png"})
    EXPECT_EQ(read_file(runs / "fit" / png).substr(1, 3), "PNG") << png;
}

}  // namespace
}  // namespace gqe
