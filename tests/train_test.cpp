// Trainer parts on their own: schedules at their boundaries, clipping, AdamW against the formula,
// safetensors, checkpoints (atomic, verified, fallback), the metrics log on resume.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common/files.h"
#include "test_util.h"
#include "train/adamw.h"
#include "checkpoint/checkpoint.h"
#include "train/clipping.h"
#include "train/metrics.h"
#include "checkpoint/safetensors.h"
#include "train/schedule.h"
#include "train/update.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

TrainConfig schedule_config(ScheduleKind kind, DecayShape shape = DecayShape::linear) {
  TrainConfig t;
  t.tokens = 1000;
  t.optimizer.lr = 1.0;
  t.schedule.kind = kind;
  t.schedule.warmup_tokens = 100;
  t.schedule.decay_fraction = 0.2;
  t.schedule.decay_shape = shape;
  t.schedule.min_lr = 0.1;
  return t;
}

TEST(Schedule, WarmupStableDecayHitsItsBoundaries) {
  const TrainConfig t = schedule_config(ScheduleKind::wsd);
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), 0.1);   // the first step already moves
  EXPECT_DOUBLE_EQ(learning_rate(t, 50), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(t, 100), 1.0);  // end of warmup
  EXPECT_DOUBLE_EQ(learning_rate(t, 500), 1.0);  // stable
  EXPECT_DOUBLE_EQ(learning_rate(t, 800), 1.0);  // decay starts after 80% of the budget
  EXPECT_DOUBLE_EQ(learning_rate(t, 900), 0.55); // halfway down, linear
  EXPECT_DOUBLE_EQ(learning_rate(t, 1000), 0.1); // the floor at the budget
  EXPECT_DOUBLE_EQ(learning_rate(t, 1024), 0.1); // a last step past the budget stays at the floor
  const TrainConfig s = schedule_config(ScheduleKind::wsd, DecayShape::one_minus_sqrt);
  EXPECT_NEAR(learning_rate(s, 900), 0.1 + 0.9 * (1 - std::sqrt(0.5)), 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1000), 0.1);
}

TEST(Schedule, CosineGoesFromPeakToFloorAfterWarmup) {
  const TrainConfig t = schedule_config(ScheduleKind::cosine);
  EXPECT_DOUBLE_EQ(learning_rate(t, 50), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(t, 100), 1.0);
  EXPECT_NEAR(learning_rate(t, 550), 0.55, 1e-12);  // halfway: the mean of peak and floor
  EXPECT_NEAR(learning_rate(t, 1000), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(t, 2000), 0.1, 1e-12);
}

ClipConfig zclip() {
  ClipConfig c;
  c.kind = ClipKind::zclip;
  c.max_norm = 100;  // out of the way, to see the adaptive threshold
  c.warmup_steps = 25;
  return c;
}

// One decision, read back: the clipping factor and the threshold.
std::pair<double, double> decide(GradClipper& clipper, double norm, bool counts = true) {
  const GradClipper::Decision d = clipper.decide(at::scalar_tensor(norm, at::kDouble), at::scalar_tensor(counts));
  return {d.scale.item<double>(), d.threshold.item<double>()};
}

TEST(Clipping, ZClipPassesOrdinaryStepsAndClipsAPlantedSpike) {
  GradClipper clipper(zclip(), at::kCPU);
  // Warmup: norms around 2 with some spread.
  std::vector<double> warmup;
  for (int i = 0; i < 25; ++i) {
    warmup.push_back(2.0 + 0.1 * std::sin(i));
    EXPECT_EQ(decide(clipper, warmup.back()).first, 1.0);
    ASSERT_EQ(clipper.state().initialized, i == 24);
  }
  double mean = 0, var = 0;  // the EMAs start from the warmup's mean and population variance
  for (double x : warmup) mean += x / 25;
  for (double x : warmup) var += (x - mean) * (x - mean) / 25;
  EXPECT_NEAR(clipper.state().mean, mean, 1e-12);
  EXPECT_NEAR(clipper.state().var, var, 1e-12);
  for (int i = 0; i < 50; ++i) {
    const double x = 2.0 + 0.1 * std::sin(i + 25);
    EXPECT_EQ(decide(clipper, x).first, 1.0) << i;
    mean = 0.97 * mean + 0.03 * x;
    var = 0.97 * var + 0.03 * (x - mean) * (x - mean);
  }
  EXPECT_NEAR(clipper.state().mean, mean, 1e-12);
  EXPECT_NEAR(clipper.state().var, var, 1e-12);
  const double std = std::sqrt(var);
  const double spike = 20.0;
  const double z = (spike - mean) / (std + 1e-6);
  const auto [scale, threshold] = decide(clipper, spike);
  const double expected = mean + 2.5 * 2.5 * std / z;  // mean + z_thr * std / (z / z_thr)
  EXPECT_NEAR(threshold, expected, 1e-9);
  EXPECT_NEAR(scale, expected / (spike + 1e-6), 1e-12);
  EXPECT_LT(threshold, mean + 2.5 * std);  // pulled in below the detection bound
  // The EMA saw the threshold, not the spike.
  EXPECT_NEAR(clipper.state().mean, 0.97 * mean + 0.03 * expected, 1e-12);
  EXPECT_EQ(decide(clipper, 2.0).first, 1.0);  // and the next ordinary step passes
}

TEST(Clipping, ASkippedStepLeavesTheStateAloneAndTheStateSurvivesACheckpoint) {
  GradClipper clipper(zclip(), at::kCPU);
  for (int i = 0; i < 10; ++i) decide(clipper, 2.0 + 0.1 * i);
  decide(clipper, std::nan(""), /*counts=*/false);  // a non-finite step: not a warmup norm
  ClipState mid = clipper.state();
  ASSERT_EQ(mid.warmup_norms.size(), 10u);
  EXPECT_EQ(mid.warmup_norms[9], 2.9);
  // Restored mid-warmup into a fresh clipper, both go on identically, through the warmup's end.
  GradClipper resumed(zclip(), at::kCPU);
  resumed.restore(mid);
  for (int i = 0; i < 40; ++i) {
    const double x = 2.0 + 0.3 * std::cos(i);
    EXPECT_EQ(decide(clipper, x), decide(resumed, x)) << i;
  }
  const ClipState after = clipper.state();
  ASSERT_TRUE(after.initialized);
  EXPECT_TRUE(after.warmup_norms.empty());
  decide(clipper, std::numeric_limits<double>::infinity(), /*counts=*/false);
  EXPECT_EQ(clipper.state().mean, after.mean);
  EXPECT_EQ(clipper.state().var, after.var);
}

TEST(Clipping, MaxNormCapsDuringWarmupAndAfter) {
  ClipConfig c = zclip();
  c.max_norm = 1.0;
  GradClipper clipper(c, at::kCPU);
  EXPECT_NEAR(decide(clipper, 4.0).first, 1.0 / (4.0 + 1e-6), 1e-12);  // warmup: plain global-norm clipping
  ClipConfig plain;
  plain.kind = ClipKind::norm;
  plain.max_norm = 0.5;
  GradClipper norm(plain, at::kCPU);
  EXPECT_EQ(decide(norm, 0.4).first, 1.0);
  EXPECT_NEAR(decide(norm, 2.0).first, 0.5 / (2.0 + 1e-6), 1e-12);
  EXPECT_NEAR(decide(norm, 2.0).second, 0.5, 1e-12);
  ClipConfig none;
  none.kind = ClipKind::none;
  GradClipper off(none, at::kCPU);
  EXPECT_EQ(decide(off, 1e9).first, 1.0);
}

// Whole parameters, as an unsharded run hands them to AdamW.
std::vector<OptimizedTensor> whole(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<OptimizedTensor> out;
  for (const auto& [name, p] : named) out.push_back({name, p, p.dim()});
  return out;
}

TEST(AdamW, MatchesTheFormulaWithDecayOnMatricesOnly) {
  torch::manual_seed(3);
  const at::Tensor w0 = at::randn({4, 3}), b0 = at::randn({3}), e0 = at::randn({5, 3});
  at::Tensor w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_(), e = e0.clone().requires_grad_();
  OptimizerConfig c;
  c.beta1 = 0.9, c.beta2 = 0.95, c.eps = 1e-7, c.weight_decay = 0.1, c.decay_embeddings = false;
  AdamW opt(whole({{"model.layers.0.mlp.up_proj.weight", w}, {"model.norm.weight", b}, {"model.embed_tokens.weight", e}}), c);
  EXPECT_EQ(opt.decayed(), (std::vector<std::string>{"model.layers.0.mlp.up_proj.weight"}));

  // The reference: decoupled decay, bias-corrected moments.
  at::Tensor rw = w0.clone(), rb = b0.clone(), re = e0.clone();
  at::Tensor m[3] = {at::zeros_like(rw), at::zeros_like(rb), at::zeros_like(re)};
  at::Tensor v[3] = {at::zeros_like(rw), at::zeros_like(rb), at::zeros_like(re)};
  const double lrs[] = {1e-2, 3e-2, 5e-3, 1e-2};
  for (int step = 1; step <= 4; ++step) {
    const at::Tensor gw = at::randn({4, 3}), gb = at::randn({3}), ge = at::randn({5, 3});
    opt.step({gw, gb, ge}, lrs[step - 1]);
    at::Tensor* ref[3] = {&rw, &rb, &re};
    const at::Tensor* g[3] = {&gw, &gb, &ge};
    for (int i = 0; i < 3; ++i) {
      const double lr = lrs[step - 1], decay = i == 0 ? 0.1 : 0.0;
      *ref[i] = *ref[i] * (1 - lr * decay);
      m[i] = 0.9 * m[i] + 0.1 * *g[i];
      v[i] = 0.95 * v[i] + 0.05 * g[i]->pow(2);
      const at::Tensor mhat = m[i] / (1 - std::pow(0.9, step)), vhat = v[i] / (1 - std::pow(0.95, step));
      *ref[i] = *ref[i] - lr * mhat / (vhat.sqrt() + 1e-7);
    }
  }
  EXPECT_TRUE(w.allclose(rw, 1e-6, 1e-7));
  EXPECT_TRUE(b.allclose(rb, 1e-6, 1e-7));
  EXPECT_TRUE(e.allclose(re, 1e-6, 1e-7));
}

// The clipping factor and the skip travel to the kernel as tensors, never read by the host.
TEST(AdamW, ASkippedStepChangesNothingAndTheFactorScalesTheGradients) {
  torch::manual_seed(5);
  const at::Tensor w0 = at::randn({4, 3}), g1 = at::randn({4, 3}), g2 = at::randn({4, 3});
  OptimizerConfig c;
  c.weight_decay = 0.1;
  at::Tensor a = w0.clone().requires_grad_(), b = w0.clone().requires_grad_();
  AdamW skipping(whole({{"w", a}}), c), plain(whole({{"w", b}}), c);
  skipping.step({g1.clone()}, 1e-2, at::scalar_tensor(1.0, at::kDouble), at::scalar_tensor(false));
  const at::Tensor after_one = a.detach().clone();
  skipping.step({at::full({4, 3}, std::nan(""))}, 1e-2, at::scalar_tensor(std::nan(""), at::kDouble), at::scalar_tensor(true));
  EXPECT_TRUE(a.equal(after_one));  // no update, no decay
  skipping.step({g2.clone()}, 1e-2, at::scalar_tensor(0.25, at::kDouble), at::scalar_tensor(false));

  plain.step({g1.clone()}, 1e-2);
  plain.step({g2 * 0.25}, 1e-2);
  // Bitwise: the skipped step did not count for bias correction, and dividing by 4 is exact.
  EXPECT_TRUE(a.equal(b));
  EXPECT_TRUE(skipping.state().at("w.exp_avg_sq").equal(plain.state().at("w.exp_avg_sq")));
}

// The update of gqe train (and gqe bench train): norm, skip and clipping factor stay tensors.
TEST(Update, ClipsByTheGlobalNormAndSkipsANonFiniteLoss) {
  at::Tensor a = at::zeros({2}).requires_grad_(), b = at::zeros({1}).requires_grad_();
  OptimizerConfig c;
  c.weight_decay = 0;
  AdamW optimizer(whole({{"a", a}, {"b", b}}), c);
  ClipConfig norm_clip;
  norm_clip.kind = ClipKind::norm;
  norm_clip.max_norm = 1.0;
  GradClipper clipper(norm_clip, at::kCPU);
  const std::vector<at::Tensor> grads{at::tensor({3.0f, 0.0f}), at::tensor({4.0f})};
  const Update u = clip_and_step(optimizer, clipper, grads, gradient_norm(grads), at::scalar_tensor(2.5f), 0.1);
  EXPECT_DOUBLE_EQ(u.norm.item<double>(), 5.0);  // over all the gradients together
  EXPECT_FALSE(u.skip.item<bool>());
  EXPECT_DOUBLE_EQ(u.scale.item<double>(), 1.0 / (5.0 + 1e-6));
  EXPECT_NEAR(a[0].item<double>(), -0.1, 1e-6);  // Adam's first step moves each weight by lr
  EXPECT_NEAR(b[0].item<double>(), -0.1, 1e-6);
  const at::Tensor before = a.detach().clone();
  const Update nan = clip_and_step(optimizer, clipper, grads, gradient_norm(grads), at::scalar_tensor(std::nanf("")), 0.1);
  EXPECT_TRUE(nan.skip.item<bool>());
  EXPECT_TRUE(a.equal(before));
}

TEST(AdamW, StateRoundTripsAndParametersWithoutGradientsAreLeftAlone) {
  at::Tensor w = at::ones({2, 2}).requires_grad_(), unused = at::ones({2, 2}).requires_grad_();
  OptimizerConfig c;
  AdamW opt(whole({{"w", w}, {"unused", unused}}), c);
  opt.step({at::full({2, 2}, 0.5), at::Tensor()}, 0.1);
  EXPECT_TRUE(unused.equal(at::ones({2, 2})));  // no gradient: no update, no decay
  const auto state = opt.state();
  ASSERT_EQ(state.size(), 4u);
  const std::vector<std::pair<std::string, at::Tensor>> params{{"w", w.detach().clone().requires_grad_()},
                                                               {"unused", unused.detach().clone().requires_grad_()}};
  AdamW restored(whole(params), c);
  check_moments(state, params, "test");
  restored.load_state(state, 1);
  EXPECT_TRUE(restored.state().at("w.exp_avg").equal(state.at("w.exp_avg")));
  auto broken = state;
  broken.erase("w.exp_avg_sq");
  EXPECT_EQ(test::user_error_of([&] { check_moments(broken, params, "ckpt"); }), "ckpt: no optimizer state for w.exp_avg_sq");
  broken = state;
  broken["w.exp_avg"] = at::zeros({4});
  EXPECT_EQ(test::user_error_of([&] { check_moments(broken, params, "ckpt"); }),
            "ckpt: optimizer state w.exp_avg has shape 4, the parameter 2x2");
}

TEST(Safetensors, RoundTripsDtypesAndShapesInTheStandardLayout) {
  TempDir dir;
  const fs::path file = dir.path() / "t.safetensors";
  const at::Tensor f = at::randn({3, 5}), h = at::randn({7}).to(at::kBFloat16), i = at::arange(6, at::kLong).view({2, 3});
  write_safetensors(file, {{"model.a.weight", f}, {"b", h}, {"c", i}, {"scalar", at::scalar_tensor(2.5)}}, {{"format", "pt"}});
  const auto back = read_safetensors(file);
  EXPECT_TRUE(back.at("model.a.weight").equal(f));
  EXPECT_TRUE(back.at("b").equal(h));
  EXPECT_EQ(back.at("b").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(back.at("c").equal(i));
  EXPECT_EQ(back.at("scalar").dim(), 0);
  // Layout: u64 header length, JSON header (8-byte aligned), then data in order.
  const std::string bytes = read_file(file);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find("\"model.a.weight\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60]}"), std::string::npos) << header;
  EXPECT_NE(header.find("\"__metadata__\":{\"format\":\"pt\"}"), std::string::npos);
  EXPECT_EQ(bytes.size(), 8 + n + 60 + 14 + 48 + 4);

  fs::resize_file(file, bytes.size() - 10);
  EXPECT_NE(test::user_error_of([&] { read_safetensors(file); }).find("byte range does not fit"), std::string::npos);
  write_file_atomic(file, "garbage!");
  EXPECT_NE(test::user_error_of([&] { read_safetensors(file); }).find("not a valid safetensors file"), std::string::npos);
}

TrainerState state_at(int64_t step) {
  TrainerState s;
  s.step = step;
  s.tokens = step * 100;
  s.loader = {1, 7};
  s.samples_per_epoch = 50;
  s.dataset_id = "d";
  s.clip.initialized = true;
  s.clip.mean = 0.123456789012345678;
  s.cpu_rng = {"00ff", "0a0b"};
  return s;
}

TEST(Checkpoint, SavesAtomicallyKeepsTheNewestAndRoundTrips) {
  TempDir run;
  const at::Tensor w = at::randn({4, 4});
  for (int64_t step : {10, 20, 30, 40})
    save_checkpoint(run.path(), state_at(step), {{"model.w", w * static_cast<double>(step)}}, {{"model.w.exp_avg", w}}, 2);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(run.path() / "checkpoints")) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"latest", "step_00000030", "step_00000040"}));
  EXPECT_EQ(read_file(run.path() / "checkpoints/latest"), "step_00000040\n");
  const auto c = load_latest_checkpoint(run.path(), [](const std::string& warning) { ADD_FAILURE() << warning; });
  ASSERT_TRUE(c);
  EXPECT_EQ(c->state.step, 40);
  EXPECT_EQ(c->state.loader, (LoaderPosition{1, 7}));
  EXPECT_EQ(c->state.clip.mean, 0.123456789012345678);  // doubles survive JSON exactly
  EXPECT_TRUE(c->model.at("model.w").equal(w * 40.0));
  EXPECT_TRUE(c->optimizer.at("model.w.exp_avg").equal(w));
}

TEST(Checkpoint, DamagedOrHalfWrittenCheckpointsAreNeverLoaded) {
  TempDir run;
  const at::Tensor w = at::randn({64, 64});
  for (int64_t step : {10, 20, 30}) save_checkpoint(run.path(), state_at(step), {{"model.w", w}}, {{"model.w.exp_avg", w}}, 5);
  const fs::path ckpt20 = run.path() / "checkpoints/step_00000020", ckpt30 = run.path() / "checkpoints/step_00000030";
  test::flip_byte(ckpt30 / "model.safetensors", 4000);  // a flipped byte in the newest one's weights
  fs::resize_file(ckpt20 / "optimizer.safetensors", 100);  // and a truncated file in the one before
  // A save interrupted before its state.json, newest of all.
  fs::create_directories(run.path() / "checkpoints/step_00000040");
  fs::copy_file(ckpt20 / "model.safetensors", run.path() / "checkpoints/step_00000040/model.safetensors");

  std::vector<std::string> warnings;
  const auto c = load_latest_checkpoint(run.path(), [&](const std::string& warning) { warnings.push_back(warning); });
  ASSERT_TRUE(c);
  EXPECT_EQ(c->state.step, 10);  // the newest one that verifies
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_EQ(warnings[0], "skipping a damaged checkpoint: " + (run.path() / "checkpoints/step_00000040").string() +
                             ": incomplete checkpoint (no state.json; the save was interrupted)");
  EXPECT_EQ(warnings[1], "skipping a damaged checkpoint: " + ckpt30.string() +
                             ": model.safetensors does not match its checksum (damaged)");
  EXPECT_NE(warnings[2].find(ckpt20.string() + ": optimizer.safetensors has 100 bytes, state.json says"), std::string::npos)
      << warnings[2];
  EXPECT_NE(test::user_error_of([&] { load_checkpoint(ckpt30); }).find("does not match its checksum"), std::string::npos);
}

TEST(Metrics, ResumeDropsLinesPastTheCheckpointAndATornLine) {
  TempDir dir;
  const fs::path file = dir.path() / "metrics.jsonl";
  {
    MetricsLog log(file, std::nullopt);
    for (int s = 1; s <= 6; ++s) log.write({{"step", s}, {"loss", 1.0 / s}});
    log.write({{"step", 4}, {"val_loss", 0.5}});
  }
  std::ofstream(file, std::ios::app) << "{\"step\": 7, \"lo";  // killed mid-write
  {
    MetricsLog log(file, 4);
    log.write({{"step", 5}, {"loss", 0.2}});
  }
  EXPECT_EQ(read_file(file),
            "{\"step\":1,\"loss\":1.0}\n{\"step\":2,\"loss\":0.5}\n{\"step\":3,\"loss\":0.3333333333333333}\n"
            "{\"step\":4,\"loss\":0.25}\n{\"step\":4,\"val_loss\":0.5}\n{\"step\":5,\"loss\":0.2}\n");
}

// A line torn in the middle of the file (by an older gqe on a full disk, or a disk that lost a
// write) costs only that line: the lines after it, up to the checkpoint, stay (they used to go).
TEST(Metrics, ATornLineInTheMiddleCostsOnlyItself) {
  TempDir dir;
  const fs::path file = dir.path() / "metrics.jsonl";
  std::ofstream(file) << "{\"step\":1}\n{\"step\":2,\"lo\n{\"step\":3}\n{\"step\":4}\n{\"step\":5}\n";
  std::vector<std::string> warnings;
  { MetricsLog log(file, 4, [&](const std::string& w) { warnings.push_back(w); }); }
  EXPECT_EQ(read_file(file), "{\"step\":1}\n{\"step\":3}\n{\"step\":4}\n");
  EXPECT_EQ(warnings, std::vector<std::string>{file.string() + ":2: dropped a line that is not a whole metrics record"});
}

// An append that fails is cut off again: the file holds whole lines only.
TEST(Files, AFailedAppendLeavesNoPartOfItself) {
  TempDir dir;
  const fs::path file = dir.path() / "log";
  AppendFile log(file, /*truncate=*/true);
  log.append("first\n");
  const std::string huge(64 << 20, 'x');  // more than RLIMIT_FSIZE lets through
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 1 << 20;
  setrlimit(RLIMIT_FSIZE, &small);
  std::signal(SIGXFSZ, SIG_IGN);  // the write then fails with EFBIG instead of killing the process
  EXPECT_THROW(log.append(huge + "\n"), IoError);
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, SIG_DFL);
  log.append("second\n");
  EXPECT_EQ(read_file(file), "first\nsecond\n");
}

}  // namespace
}  // namespace gqe
