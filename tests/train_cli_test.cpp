// `gqe train` and `gqe export` end to end, as a user runs them: the budget, exact resume after
// SIGTERM and after kill -9, damaged checkpoints, changed configs, divergence, bad input, export,
// and the loss falling on the sample corpus.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "test_util.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::run_command;

using test::gqe;

using test::metrics_of;

using test::deterministic_metrics;

size_t lines_in(const fs::path& file) {
  if (!fs::exists(file)) return 0;
  const std::string text = read_file(file);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

void wait_for(const std::function<bool()>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!ready()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// A dataset from the hand-written fixture, and a model small enough to train in a blink.
class Train : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    test::make_fixture_dataset(dir_->path());
    config_ = dir_->write("small.yaml", R"(
model:
  vocab_size: 400
  d_model: 32
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  head_dim: 8
  ffn_hidden: 64
  attention:
    type: gqe
data:
  dataset: )" + (dir_->path() / "ds").string() + R"(
  seq_len: 32
train:
  tokens: 12800
  global_batch_tokens: 256
  micro_batch_size: 4
  device: cpu
  precision: fp32
  threads: 2
  optimizer:
    lr: 3.0e-3
  schedule:
    warmup_tokens: 1024
    min_lr: 3.0e-5
  clip:
    warmup_steps: 5
  checkpoint:
    every_tokens: 2560
    keep: 3
eval:
  every_tokens: 2560
  val_tokens: 256
  batch_size: 4
log:
  every_steps: 5
)");
  }
  static void TearDownTestSuite() { delete dir_; }

  // gqe train on the small config with a run directory of our own.
  std::string train(const std::string& run, const std::string& extra = "") const {
    return gqe("train " + config_ + " --run-dir " + path(run) + " " + extra);
  }
  std::string path(const std::string& name) const { return (runs_.path() / name).string(); }

  static inline test::TempDir* dir_ = nullptr;
  static inline std::string config_;
  test::TempDir runs_;
};

TEST_F(Train, StopsWhenTheTokenBudgetIsSpent) {
  const auto r = run_command(train("a", "--set train.tokens=12700"));  // not a whole number of batches
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  const auto lines = metrics_of(path("a"));
  std::vector<nlohmann::json> steps, evals;
  for (const auto& j : lines) (j.contains("val_loss") ? evals : steps).push_back(j);
  ASSERT_EQ(steps.size(), 50u);  // ceil(12700 / 256)
  EXPECT_EQ(steps.back()["tokens"], 12800);
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i]["step"], i + 1);
    for (const char* key : {"loss", "ce_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"})
      EXPECT_TRUE(steps[i].contains(key)) << key;
    EXPECT_FALSE(steps[i].contains("mfu"));  // a CPU has no known peak: no MFU rather than a wrong one
  }
  EXPECT_TRUE(steps[4].contains("router"));  // GQE: expert load per layer at each logging step
  EXPECT_EQ(steps[4]["router"]["load"].size(), 2u);
  ASSERT_EQ(evals.size(), 5u);  // every 2560 tokens: steps 10, 20, 30, 40, 50
  EXPECT_EQ(evals.back()["step"], 50);
  EXPECT_LT(evals.back()["val_loss"].get<double>(), evals.front()["val_loss"].get<double>());
  EXPECT_NE(r.out.find("plan: 50 steps of 256 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done: 50 steps, 12800 tokens (budget 12700)"), std::string::npos) << r.out;
  const std::string version = run_command(gqe("--version")).out.substr(4);  // which gqe trained it
  EXPECT_NE(r.out.find(path("a") + " (" + config_ + " new), gqe " + version), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(path("a") + "/config.yaml"));
  EXPECT_NE(read_file(path("a") + "/train.log").find("done: 50 steps"), std::string::npos);
  std::vector<std::string> kept;
  for (const auto& e : fs::directory_iterator(path("a") + "/checkpoints")) kept.push_back(e.path().filename().string());
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<std::string>{"latest", "step_00000030", "step_00000040", "step_00000050"}));
}

// Ctrl-C while the run starts (verifying a large dataset takes a while) stops it before the run
// directory is touched, not after a first step and its checkpoint: nothing is written, so a
// corrected command starts afresh. The signal is sent before gqe runs, blocked (as a parent's mask
// may leave it), so that it arrives at the first moment gqe listens.
TEST_F(Train, AStopWhileTheRunStartsWritesNothing) {
  const std::string blocked_sigint =
      std::string(GQE_PYTHON) + " -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); "
                                "os.kill(os.getpid(), signal.SIGINT); os.execv(sys.argv[1], sys.argv[1:])' ";
  const auto r = run_command(blocked_sigint + train("early"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("stopped by SIGINT before the first step: nothing was written; the same command starts the job again"),
            std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("early")));
}

TEST_F(Train, ResumeAfterSigtermIsBitwiseExact) {
  const std::string budget = "--set train.tokens=51200";  // 200 steps
  ASSERT_EQ(run_command(train("straight", budget)).status, 0);
  // A run directory whose name a shell would split: the command the run prints must still work.
  const std::string run_dir = path("stopped run");
  {
    test::Background run("exec " + gqe("train " + config_ + " --run-dir '" + run_dir + "' " + budget) + " >" +
                         path("stopped.out") + " 2>&1");
    wait_for([&] { return lines_in(run_dir + "/metrics.jsonl") >= 30; });
    run.signal(SIGTERM);
    ASSERT_EQ(run.wait(), 0);
  }
  const std::string out = read_file(path("stopped.out"));
  EXPECT_NE(out.find("stopped by SIGTERM at step"), std::string::npos) << out;
  const size_t hint = out.find("continue with: gqe train ");
  ASSERT_NE(hint, std::string::npos) << out;
  const std::string command = out.substr(hint + 19, out.find('\n', hint) - hint - 19);
  EXPECT_EQ(command, "train " + config_ + " --set train.tokens=51200 --run-dir '" + run_dir + "'");
  const size_t stopped_at = lines_in(run_dir + "/metrics.jsonl");
  ASSERT_LT(stopped_at, 150u);
  const auto resumed = run_command(gqe(command));
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resuming from"), std::string::npos);
  EXPECT_EQ(deterministic_metrics(run_dir), deterministic_metrics(path("straight")));
}

// The host reads a step's numbers after it has launched the next step, except where a checkpoint
// (or an evaluation) needs them at once: a checkpoint every step reads every step at once.
TEST_F(Train, ReadingEachStepLateLogsWhatReadingItAtOnceLogs) {
  ASSERT_EQ(run_command(train("late", "--set train.tokens=2560")).status, 0);
  const auto r = run_command(train("at_once", "--set train.tokens=2560 --set train.checkpoint.every_tokens=256"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(deterministic_metrics(path("at_once")), deterministic_metrics(path("late")));
  EXPECT_EQ(deterministic_metrics(path("late")).size(), 11u);  // 10 steps and the evaluation
}

// Recomputing the layers in the backward pass changes memory, not the run.
TEST_F(Train, ActivationCheckpointingTrainsTheSameRunBitForBit) {
  ASSERT_EQ(run_command(train("plain", "--set train.tokens=2560")).status, 0);
  const auto r = run_command(train("recomputed", "--set train.tokens=2560 --set train.activation_checkpointing=true"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("2 thread(s), activation checkpointing"), std::string::npos) << r.out;
  EXPECT_EQ(deterministic_metrics(path("recomputed")), deterministic_metrics(path("plain")));
  EXPECT_EQ(deterministic_metrics(path("plain")).size(), 11u);  // 10 steps and the evaluation
}

TEST_F(Train, ResumeAfterKill9LosesOnlyWorkSinceTheCheckpointAndIsExact) {
  const std::string budget = "--set train.tokens=51200";
  ASSERT_EQ(run_command(train("straight", budget)).status, 0);
  {
    test::Background run("exec " + train("killed", budget) + " >/dev/null 2>&1");
    wait_for([&] { return fs::exists(path("killed") + "/checkpoints/latest") && lines_in(path("killed") + "/metrics.jsonl") >= 25; });
    run.signal(SIGKILL);
    EXPECT_EQ(run.wait(), 128 + SIGKILL);
  }
  ASSERT_LT(lines_in(path("killed") + "/metrics.jsonl"), 200u);
  ASSERT_EQ(run_command(train("killed", budget)).status, 0);
  EXPECT_EQ(deterministic_metrics(path("killed")), deterministic_metrics(path("straight")));
}

// A run trained to its budget ends at once when started again with its config (an experiment or
// ladder over several nodes starts every run); not if its newest checkpoint is damaged: then the
// one before it is used and the steps since trained again.
TEST_F(Train, ADamagedCheckpointIsReportedAndThePreviousOneUsed) {
  ASSERT_EQ(run_command(train("a")).status, 0);
  const auto before = deterministic_metrics(path("a"));
  const auto again = run_command(train("a"));
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find(path("a") + ": trained to its budget already (step 50, 12800 tokens), with this config: nothing to do"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(deterministic_metrics(path("a")), before);
  test::flip_byte(path("a") + "/checkpoints/step_00000050/model.safetensors", 2000);
  const auto r = run_command(train("a"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("skipping a damaged checkpoint: " + path("a") +
                       "/checkpoints/step_00000050: model.safetensors does not match its checksum (damaged)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("resuming from " + path("a") + "/checkpoints/step_00000040 (step 40"), std::string::npos);
  EXPECT_EQ(deterministic_metrics(path("a")), before);  // steps 41-50 trained again, identically
  EXPECT_NO_THROW(load_checkpoint(path("a") + "/checkpoints/step_00000050"));
}

TEST_F(Train, AnExistingRunIsNeverSilentlyReplacedOrChanged) {
  ASSERT_EQ(run_command(train("a", "--set train.tokens=2560")).status, 0);
  const auto never = run_command(train("a", "--resume never"));
  EXPECT_EQ(never.status, 2);
  EXPECT_EQ(never.err, "gqe: " + path("a") + ": already holds a run (use --resume auto to continue it, or another --run-dir)\n");
  const auto changed = run_command(train("a", "--set model.d_model=64 --set data.seq_len=16"));
  EXPECT_EQ(changed.status, 2);
  EXPECT_EQ(changed.err, "gqe: " + path("a") + ": the config changed in ways the run cannot continue with: model.d_model: "
                         "32 -> 64; data.seq_len: 32 -> 16 (start a new run with another --run-dir, or --resume never)\n");
  // A longer budget or another learning rate continues the run, with a warning.
  const auto longer = run_command(train("a", "--set train.tokens=5120 --set train.optimizer.lr=1e-3"));
  ASSERT_EQ(longer.status, 0) << longer.err;
  EXPECT_NE(longer.out.find("changed since the run's last start: train.tokens: 2560 -> 5120"), std::string::npos) << longer.out;
  EXPECT_EQ(metrics_of(path("a")).back()["step"], 20);
}

TEST_F(Train, DivergenceSkipsUpdatesThenStopsKeepingTheLastGoodCheckpoint) {
  const auto r = run_command(train("a", "--set train.optimizer.lr=1e30 --set train.schedule.warmup_tokens=0 "
                                        "--set train.max_skipped_steps=3 --set train.checkpoint.every_tokens=256"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("3 non-finite steps in a row"), std::string::npos) << r.err << r.out;
  EXPECT_NE(r.err.find("training diverged; the last good checkpoint is " + path("a") + "/checkpoints/step_"), std::string::npos);
  const auto lines = metrics_of(path("a"));
  ASSERT_GE(lines.size(), 3u);
  for (size_t i = lines.size() - 3; i < lines.size(); ++i) EXPECT_TRUE(lines[i]["skipped"].get<bool>());
  EXPECT_NE(r.out.find("update skipped (1 in a row)"), std::string::npos);
}

TEST_F(Train, BadInputIsOneLineAndLeavesNoRunBehind) {
  const auto no_data = run_command(train("x", "--set data.dataset=" + path("nowhere")));
  EXPECT_EQ(no_data.status, 2);
  EXPECT_EQ(no_data.err, "gqe: " + path("nowhere") + ": dataset directory not found\n");
  const auto small_vocab = run_command(train("x", "--set model.vocab_size=300"));
  EXPECT_EQ(small_vocab.status, 2);
  EXPECT_NE(small_vocab.err.find("--set: model.vocab_size is 300, but the tokenizer of"), std::string::npos) << small_vocab.err;
  const auto cuda = run_command(train("x", "--set train.device=cuda"));
  EXPECT_EQ(cuda.status, 2);
  EXPECT_NE(cuda.err.find("train.device is cuda, but no CUDA device is available"), std::string::npos);
  // A model that cannot fit is refused before anything is allocated (it used to reach the
  // allocator: "DefaultCPUAllocator: can't allocate memory").
  const auto huge = run_command(train("x", "--set model.d_model=100000 --set model.n_layers=100000"));
  EXPECT_EQ(huge.status, 2);
  EXPECT_EQ(huge.err.rfind("gqe: " + config_ + ": the model cannot train here: memory on cpu: ", 0), 0u) << huge.err;
  EXPECT_NE(huge.err.find(" GiB available: does not fit: the weights, gradients, AdamW moments, logits and layer inputs "
                          "alone need "), std::string::npos) << huge.err;
  EXPECT_FALSE(fs::exists(path("x")));
}

TEST_F(Train, ExportWritesAHuggingFaceModelDirectory) {
  ASSERT_EQ(run_command(train("gqa", "--set model.attention.type=gqa --set train.tokens=2560")).status, 0);
  const std::string ckpt = path("gqa") + "/checkpoints/step_00000010";
  const auto r = run_command(gqe("export " + ckpt + " --out " + path("hf")));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto config = nlohmann::json::parse(read_file(path("hf") + "/config.json"));
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["num_attention_heads"], 4);
  EXPECT_EQ(config["num_key_value_heads"], 2);
  EXPECT_EQ(config["hidden_size"], 32);
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_EQ(config["eos_token_id"], 2);
  const auto exported = read_safetensors(path("hf") + "/model.safetensors");
  const auto saved = load_checkpoint(ckpt).model;
  ASSERT_EQ(exported.size(), saved.size());
  for (const auto& [name, t] : saved) EXPECT_TRUE(exported.at(name).equal(t)) << name;
  EXPECT_TRUE(exported.count("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_FALSE(exported.count("lm_head.weight"));  // tied
  EXPECT_EQ(read_file(path("hf") + "/tokenizer.model"), read_file(dir_->path() / "tok.model"));
  const auto again = run_command(gqe("export " + ckpt + " --out " + path("hf")));
  EXPECT_EQ(again.status, 2);  // never overwrites

  ASSERT_EQ(run_command(train("gqe", "--set train.tokens=2560")).status, 0);
  ASSERT_EQ(run_command(gqe("export " + path("gqe") + "/checkpoints/step_00000010 --out " + path("hf-gqe") + " --dtype bf16")).status, 0);
  const auto gqe_config = nlohmann::json::parse(read_file(path("hf-gqe") + "/config.json"));
  EXPECT_EQ(gqe_config["model_type"], "gqe");
  EXPECT_EQ(gqe_config["gqe"]["output_slots"], 4);
  // transformers finds GQE's attention in the export (EvalCli.TransformersLoads... runs it).
  EXPECT_EQ(gqe_config["auto_map"]["AutoModelForCausalLM"], "modeling_gqe.GqeForCausalLM");
  EXPECT_EQ(read_file(path("hf-gqe") + "/modeling_gqe.py"), read_file(std::string(GQE_SOURCE_DIR) + "/hf/modeling_gqe.py"));
  EXPECT_FALSE(fs::exists(path("hf") + "/modeling_gqe.py"));
  // The EOS starts every sequence, in the model's config, the tokenizer's and generation's.
  EXPECT_EQ(gqe_config["bos_token_id"], 2);
  EXPECT_EQ(nlohmann::json::parse(read_file(path("hf-gqe") + "/tokenizer_config.json"))["bos_token"], "</s>");
  EXPECT_EQ(nlohmann::json::parse(read_file(path("hf-gqe") + "/generation_config.json"))["eos_token_id"], 2);
  const auto tokenizer_json = nlohmann::json::parse(read_file(path("hf-gqe") + "/tokenizer.json"));
  EXPECT_EQ(tokenizer_json["model"]["vocab"].size(), 400u);
  const std::string card = read_file(path("hf-gqe") + "/README.md");
  EXPECT_NE(card.find("gqe export " + path("gqe") + "/checkpoints/step_00000010 --out " + path("hf-gqe") + " --dtype bf16"),
            std::string::npos) << card;
  EXPECT_NE(card.find("trust_remote_code=True"), std::string::npos) << card;
  const auto weights = read_safetensors(path("hf-gqe") + "/model.safetensors");
  EXPECT_EQ(weights.at("model.layers.0.self_attn.router.weight").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(weights.count("model.layers.0.self_attn.q_shared.weight"));
}

// The trainer's event files, read back by the tensorboard package: every number of metrics.jsonl
// at its step. A run continued from an earlier checkpoint with another learning rate reads as one
// run: TensorBoard drops what the first attempt wrote past the checkpoint (SessionLog START).
// gqe compare --tensorboard writes the same from metrics.jsonl.
TEST_F(Train, TensorBoardReadsTheMetricsAndAContinuedRunReadsAsOne) {
  const std::string python = GQE_PYTHON;
  if (python.empty() || run_command(python + " -c 'import tensorboard'").status != 0)
    GTEST_SKIP() << "tensorboard is not installed in the build's Python (scripts/setup.sh installs it)";
  auto scalars = [&](const std::string& dir) {
    const auto r = run_command(python + " " + GQE_SOURCE_DIR + "/tests/read_tensorboard.py " + dir);
    EXPECT_EQ(r.status, 0) << r.err;
    return nlohmann::json::parse(r.status == 0 ? r.out : "{}");
  };
  auto expect_metrics = [&](const nlohmann::json& tb, const std::vector<nlohmann::json>& lines) {
    std::map<std::string, size_t> points;
    for (const auto& line : lines)
      for (const char* key : {"loss", "aux_loss", "lr", "grad_norm", "val_loss"}) {
        if (!line.contains(key)) continue;
        const size_t i = points[key]++;
        ASSERT_LT(i, tb[key].size()) << key;
        EXPECT_EQ(tb[key][i][0], line["step"]) << key;
        EXPECT_EQ(tb[key][i][1].get<float>(), line[key].get<float>()) << key << " at step " << line["step"];
      }
    for (const auto& [key, n] : points) EXPECT_EQ(tb[key].size(), n) << key;  // each step once
    EXPECT_TRUE(tb.contains("router/entropy/layer_0"));
    EXPECT_TRUE(tb.contains("router/busiest_expert/layer_1"));
  };
  ASSERT_EQ(run_command(train("tb")).status, 0);
  const auto first = test::metrics_of(path("tb"));
  expect_metrics(scalars(path("tb")), first);

  const auto continued = run_command(train("tb", "--resume " + path("tb") + "/checkpoints/step_00000030 --set train.optimizer.lr=1e-3"));
  ASSERT_EQ(continued.status, 0) << continued.err;
  const auto second = test::metrics_of(path("tb"));
  ASSERT_EQ(second.size(), first.size());
  EXPECT_NE(second.back()["loss"], first.back()["loss"]);  // the second attempt wrote other numbers
  expect_metrics(scalars(path("tb")), second);

  const auto compared = run_command(gqe("compare " + path("tb") + " --no-plots --tensorboard " + path("tb-out")));
  ASSERT_EQ(compared.status, 0) << compared.err;
  expect_metrics(scalars(path("tb-out") + "/tb"), second);
}

// The tokenizer is part of the data's identity: a dataset whose tokenizer file is missing or is
// not the one its manifest fingerprints is refused by train, eval, sample and export (exit 2, one
// line naming the file and both fingerprints), not used to decode or export silently.
TEST_F(Train, ADatasetWhoseTokenizerIsNotItsOwnIsRefusedEverywhere) {
  fs::copy(dir_->path() / "ds", path("ds"), fs::copy_options::recursive);
  const std::string ds = " --set data.dataset=" + path("ds");
  ASSERT_EQ(run_command(train("run", ds + " --set train.tokens=2560")).status, 0);
  const auto manifest = nlohmann::json::parse(read_file(path("ds") + "/manifest.json"));
  const std::string tokenizer = path("ds") + "/" + manifest["tokenizer"]["file"].get<std::string>();
  const std::string original = read_file(tokenizer);
  const std::string fingerprint = manifest["tokenizer"]["fingerprint"];
  for (const std::string damage : {"replaced", "missing"}) {
    SCOPED_TRACE(damage);
    if (damage == "replaced") write_file_atomic(tokenizer, original + "x");  // another model, as far as bytes go
    else fs::remove(tokenizer);
    const std::string expected = damage == "replaced"
                                     ? "gqe: " + tokenizer + ": not the tokenizer the dataset was made with (fingerprint "
                                     : "gqe: " + tokenizer + ": the dataset's tokenizer is missing (or not a file)\n";
    for (const std::string& command : {"train " + config_ + " --run-dir " + path("new") + ds, "eval " + path("run") + " --val",
                                      "sample " + path("run") + " --prompt x --max-tokens 2",
                                      "export " + path("run") + "/checkpoints/step_00000010 --out " + path("hf")}) {
      const auto r = run_command(gqe(command));
      EXPECT_EQ(r.status, 2) << command << "\n" << r.err;
      EXPECT_EQ(r.err.rfind(expected, 0), 0u) << command << "\n" << r.err;
      if (damage == "replaced") {
        EXPECT_NE(r.err.find("the manifest records " + fingerprint + ")"), std::string::npos) << r.err;
      }
    }
    EXPECT_FALSE(fs::exists(path("new")));
    EXPECT_FALSE(fs::exists(path("hf")));
  }
  write_file_atomic(tokenizer, original);
  EXPECT_EQ(run_command(gqe("sample " + path("run") + " --prompt x --max-tokens 2")).status, 0);
}

// A shard truncated under a running trainer: one line and exit 1, not a death by SIGBUS; the
// checkpoint written before is intact.
TEST_F(Train, AShardTruncatedWhileTrainingStopsWithOneLine) {
  fs::copy(dir_->path() / "ds", path("ds"), fs::copy_options::recursive);
  test::Background job("exec " + train("bus", "--set data.dataset=" + path("ds") + " --set train.tokens=51200000") + " >" +
                       path("bus.out") + " 2>&1");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(path("bus") + "/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(fs::exists(path("bus") + "/checkpoints/latest"));
  for (const auto& e : fs::directory_iterator(path("ds")))
    if (e.path().filename().string().rfind("train_", 0) == 0) fs::resize_file(e.path(), 0);  // every page gone
  EXPECT_EQ(job.wait(), 1);
  const std::string out = read_file(path("bus.out"));
  EXPECT_NE(out.find("gqe: error: a memory-mapped shard of the dataset was truncated or replaced while training read it "
                     "(SIGBUS)"), std::string::npos) << out;
  EXPECT_TRUE(load_latest_checkpoint(path("bus"), [](const std::string&) {}).has_value());
}

// eval.val_tokens past the val split is legitimate (the evaluation takes what there is) but
// surprising: one warning says how much is evaluated.
TEST_F(Train, AValidationBudgetLargerThanTheSplitIsAWarning) {
  const auto r = run_command(train("vt", "--set eval.val_tokens=10000000 --set train.tokens=2560"));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("eval.val_tokens is 10000000, but the val split of " + (dir_->path() / "ds").string() + " holds "),
            std::string::npos) << all;
  EXPECT_EQ(run_command(train("no-warning", "--set train.tokens=2560")).out.find("eval.val_tokens is"), std::string::npos);
}

// The sample corpus (scripts/sample_data.sh, which scripts/test.sh runs first): 196 steps of the
// tiny configs must take the validation loss from ln(4096) = 8.3 to a nat below the corpus's
// unigram entropy (6.70 nats: what a model without context reaches), for GQA and GQE alike.
// (Measured: 5.34 for GQE.)
TEST_F(Train, LossFallsOnTheSampleCorpusForGqaAndGqe) {
  const std::string shards = std::string(GQE_SOURCE_DIR) + "/data/sample/shards";
  ASSERT_TRUE(fs::exists(shards + "/manifest.json")) << shards << " is missing: run scripts/sample_data.sh";
  for (const std::string arm : {"gqa", "gqe"}) {
    SCOPED_TRACE(arm);
    const std::string run = path("sample-" + arm);
    const auto r = run_command(gqe("train " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/" + arm + ".yaml --run-dir " + run +
                                   " --set data.dataset=" + shards +
                                   " --set data.seq_len=128 --set train.global_batch_tokens=2048 --set train.micro_batch_size=16"
                                   " --set train.tokens=400K --set train.schedule.warmup_tokens=40K"
                                   " --set eval.every_tokens=100K --set eval.val_tokens=32K"));
    ASSERT_EQ(r.status, 0) << r.err << r.out;
    std::vector<double> ce, val;
    for (const auto& j : metrics_of(run)) {
      if (j.contains("val_loss")) val.push_back(j["val_loss"].get<double>());
      else ce.push_back(j["ce_loss"].get<double>());
    }
    ASSERT_EQ(ce.size(), 196u);
    EXPECT_NEAR(ce.front(), std::log(4096.0), 0.3);  // starts near uniform over the vocabulary
    EXPECT_LT(val.back(), 6.70 - 1.0) << "from " << ce.front();
    for (size_t i = 1; i < val.size(); ++i) EXPECT_LT(val[i], val[i - 1]);
  }
}

}  // namespace
}  // namespace gqe
