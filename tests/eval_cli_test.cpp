// gqe-data encode-eval, gqe eval and gqe sample as a user runs them, on a small trained run.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/host_memory.h"
#include "common/utf8.h"
#include "config/config_loader.h"
#include "data/tokenizer.h"
#include "dist/launcher.h"
#include "eval/tasks.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::run_command;

std::string fixture(const std::string& name) { return std::string(GQE_SOURCE_DIR) + "/tests/data/eval/" + name; }

using test::gqe;
using test::metrics_of;

// One trained run (with eval.tasks, so training scores the tasks too) for every test.
class EvalCli : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    test::make_fixture_dataset(dir_->path());
    const std::string tool = GQE_DATA_BINARY;
    for (const auto& [task, args] : std::vector<std::pair<std::string, std::string>>{
             {"hellaswag", "--input " + fixture("hellaswag.jsonl")},
             {"arc_easy", "--input " + fixture("arc_easy.jsonl")},
             {"piqa", "--input " + fixture("piqa.jsonl") + " --labels " + fixture("piqa-labels.lst")}}) {
      const auto r = run_command(tool + " encode-eval --task " + task + " " + args + " --dataset " + path("ds") + " --out " +
                                 path(task + ".jsonl"));
      ASSERT_EQ(r.status, 0) << r.err;
      ASSERT_NE(r.out.find("wrote " + path(task + ".jsonl")), std::string::npos);
    }
    const std::string config = dir_->write("small.yaml", "inherit: " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqe.yaml\n" + R"(
model: {vocab_size: 400, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8, ffn_hidden: 64}
data: {dataset: )" + path("ds") + R"(, seq_len: 32}
train: {tokens: 5120, global_batch_tokens: 256, micro_batch_size: 4, threads: 1, schedule: {warmup_tokens: 1024},
        checkpoint: {every_tokens: 2560}}
eval: {every_tokens: 2560, val_tokens: 256, batch_size: 4, tasks: {piqa: )" + path("piqa.jsonl") + R"(}}
)");
    const auto trained = run_command(gqe("train " + config + " --run-dir " + path("run")));
    ASSERT_EQ(trained.status, 0) << trained.err << trained.out;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string path(const std::string& name) { return (dir_->path() / name).string(); }
  static inline test::TempDir* dir_ = nullptr;
};

TEST_F(EvalCli, TrainingScoresTheConfiguredTasks) {
  std::vector<nlohmann::json> evals;
  for (const auto& j : metrics_of(path("run")))
    if (j.contains("val_loss")) evals.push_back(j);
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[1]["tasks"]["piqa"]["items"], 2);
  EXPECT_TRUE(evals[1]["tasks_average"].contains("acc_norm"));
}

TEST_F(EvalCli, EvalReproducesTheTrainersValidationLossAndScoresTasks) {
  const auto metrics_before = metrics_of(path("run"));
  const auto r = run_command(gqe("eval " + path("run") + " --val --tasks hellaswag=" + path("hellaswag.jsonl") +
                                 ",arc_easy=" + path("arc_easy.jsonl") + " --tasks piqa=" + path("piqa.jsonl") +
                                 " --log-samples " + path("samples.jsonl")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("checkpoints/step_00000020 (step 20, 5120 tokens)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hellaswag"), std::string::npos);
  const auto report = nlohmann::json::parse(read_file(path("run") + "/eval.json"));
  EXPECT_EQ(report["step"], 20);
  EXPECT_EQ(report["tasks"]["hellaswag"]["items"], 3);
  EXPECT_EQ(report["tasks"]["arc_easy"]["items"], 2);
  const double acc_mean = (report["tasks"]["hellaswag"]["acc"].get<double>() + report["tasks"]["arc_easy"]["acc"].get<double>() +
                           report["tasks"]["piqa"]["acc"].get<double>()) / 3;
  EXPECT_DOUBLE_EQ(report["tasks_average"]["acc"].get<double>(), acc_mean);
  // acc_bytes and the standard errors beside acc and acc_norm; every item in --log-samples, whose
  // picks make the scores.
  std::map<std::string, double> correct, items;
  std::istringstream samples(read_file(path("samples.jsonl")));
  for (std::string line; std::getline(samples, line);) {
    const auto j = nlohmann::json::parse(line);
    items[j["task"]] += 1;
    correct[j["task"].get<std::string>() + "/acc_bytes"] += j["pred"]["acc_bytes"] == j["label"];
    EXPECT_EQ(j["loglikelihoods"].size(), j["choices"].size());
  }
  for (const char* task : {"hellaswag", "arc_easy", "piqa"}) {
    const auto& t = report["tasks"][task];
    EXPECT_EQ(items[task], t["items"].get<double>()) << task;
    EXPECT_DOUBLE_EQ(t["acc_bytes"].get<double>(), correct[std::string(task) + "/acc_bytes"] / items[task]) << task;
    const double n = t["items"].get<double>(), p = t["acc"].get<double>();
    EXPECT_NEAR(t["acc_stderr"].get<double>(), std::sqrt(p * (1 - p) / (n - 1)), 1e-12) << task;
  }
  // The same windows as the trainer's final evaluation: the same number, to the bit.
  const auto lines = metrics_of(path("run"));
  double trainer_val = -1;  // the first evaluation line of step 20 is the trainer's
  for (const auto& j : lines)
    if (j.contains("val_loss") && j["step"] == 20) {
      trainer_val = j["val_loss"].get<double>();
      break;
    }
  EXPECT_EQ(report["val_loss"].get<double>(), trainer_val);
  // Its history in evals.jsonl; the training's metrics gain no line (one val_loss per evaluation).
  EXPECT_EQ(lines, metrics_before);
  const auto history = read_file(path("run") + "/evals.jsonl");
  const auto last = nlohmann::json::parse(history.substr(history.rfind('\n', history.size() - 2) + 1));
  EXPECT_EQ(last, report);
}

TEST_F(EvalCli, TwoRanksScoreTheSame) {
  const std::string tasks_of_both = " --tasks hellaswag=" + path("hellaswag.jsonl") + ",piqa=" + path("piqa.jsonl");
  ASSERT_EQ(run_command(gqe("eval " + path("run") + " --val" + tasks_of_both)).status, 0);
  const auto one = nlohmann::json::parse(read_file(path("run") + "/eval.json"));
  const auto two = run_command(gqe("eval " + path("run") + " --val" + tasks_of_both + " --nproc 2"));
  ASSERT_EQ(two.status, 0) << two.err;
  const auto both = nlohmann::json::parse(read_file(path("run") + "/eval.json"));
  EXPECT_EQ(both["tasks"], one["tasks"]);
  EXPECT_NEAR(both["val_loss"].get<double>(), one["val_loss"].get<double>(), 1e-12);  // summed in another order

  // Said once for the job, not once per rank: bad input (the launcher checks it before any rank
  // starts) and the warning about a damaged newer checkpoint (rank 0's).
  const auto wrong = run_command(gqe("eval " + path("run") + " --tasks piqa=" + path("hellaswag.jsonl") + " --nproc 2"));
  EXPECT_EQ(wrong.status, 2);
  EXPECT_EQ(wrong.err, "gqe: " + path("hellaswag.jsonl") + ": holds the task hellaswag, not piqa\n");
  fs::copy(path("run"), path("damaged-run"), fs::copy_options::recursive);
  const std::string newest = path("damaged-run") + "/checkpoints/step_00000020";
  test::flip_byte(newest + "/model.safetensors", 100);
  const auto older = run_command(gqe("eval " + path("damaged-run") + " --val --nproc 2"));
  ASSERT_EQ(older.status, 0) << older.err;
  EXPECT_EQ(older.err, "gqe: skipping a damaged checkpoint: " + newest + ": model.safetensors does not match its checksum (damaged)\n");
  EXPECT_NE(older.out.find("checkpoints/step_00000010 (step 10, 2560 tokens)"), std::string::npos) << older.out;

  // Ranks that srun (or torchrun) starts check the eval sets in the job: one line, from rank 0.
  const int port = free_port();
  auto tasks = [&](const std::string& args) {
    const test::TwoTasks t = test::run_as_two_slurm_tasks(gqe("eval " + path("run") + args), port, path("eval.1.out"));
    EXPECT_EQ(t.task1_status, t.task0.status);
    EXPECT_EQ(read_file(path("eval.1.out")), "");
    return t.task0;
  };
  const auto slurm_wrong = tasks(" --tasks piqa=" + path("hellaswag.jsonl"));
  EXPECT_EQ(slurm_wrong.status, 2);
  EXPECT_EQ(slurm_wrong.err, wrong.err);
  const auto slurm_right = tasks(" --val" + tasks_of_both);
  ASSERT_EQ(slurm_right.status, 0) << slurm_right.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(path("run") + "/eval.json"))["tasks"], one["tasks"]);

  // Ranks on the CPU share its memory: the check counts each of them. (A batch of windows that one
  // rank's memory holds, but not two ranks'; the val split has fewer windows, so it would run.)
  const Config c = load_config(path("run") + "/config.yaml").config;
  const double per_sequence = static_cast<double>(c.data.seq_len * c.model.vocab_size) * 4.0;  // fp32 logits
  const auto batch = static_cast<int64_t>(0.6 * host_memory_available().value() / per_sequence);
  const auto shared = run_command(gqe("eval " + path("run") + " --val --nproc 2 --batch-size " + std::to_string(batch)));
  EXPECT_EQ(shared.status, 2);
  EXPECT_EQ(shared.err.rfind(fmt::format("gqe: --batch-size {}: the model and the logits of a batch, for 2 ranks would take at least ", batch), 0),
            0u) << shared.err;

  // Two nodes, the run missing on node 1 (unlike training, every machine reads the checkpoint):
  // one line that says so, on both consoles, and the job stops at once.
  const std::string nodes = fmt::format("NNODES=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", free_port());
  const std::string missing = path("run-not-on-node-1");
  test::Background node1("exec env " + nodes + "NODE_RANK=1 " + gqe("eval " + missing + " --val") + " >" + path("node1.out") + " 2>&1");
  const auto node0 = run_command(nodes + "NODE_RANK=0 " + gqe("eval " + path("run") + " --val"));
  const std::string line = missing + ": not on this machine: every machine of an evaluation reads the checkpoint and its config.yaml "
                           "(keep the run on a file system they all see, or copy it to the same path on each)\n";
  EXPECT_EQ(node0.status, 2);
  EXPECT_EQ(node0.err, "gqe: node 1: " + line);
  EXPECT_EQ(node1.wait(), 2);
  EXPECT_EQ(read_file(path("node1.out")), "gqe: " + line);
}

TEST_F(EvalCli, SampleWritesTextDeterministicallyAtTemperatureZero) {
  const std::string cmd = gqe("sample " + path("run") + " --prompt 'The keeper' --temperature 0 --max-tokens 20");
  const auto a = run_command(cmd), b = run_command(cmd);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out.rfind("The keeper", 0), 0u) << a.out;
  EXPECT_GT(a.out.size(), std::string("The keeper\n").size());
  EXPECT_EQ(a.out, b.out);
  const auto several = run_command(gqe("sample " + path("run") + "/checkpoints/step_00000010 --prompt 'A' --num-samples 2 --top-k 20"));
  ASSERT_EQ(several.status, 0) << several.err;
  EXPECT_NE(several.out.find("--- sample 2 ---"), std::string::npos);
}

// transformers loads the exports of a GQA run and of every GQE variant (top_k 1 and 2): the
// validation loss over gqe's windows equals the trainer's (and so gqe eval --val's) to 1e-5, greedy
// generation gives gqe sample's tokens, and the fast tokenizer (tokenizer.json) gqe's ids with
// the EOS in front. scripts/check_hf_export.py does the Python side.
TEST_F(EvalCli, TransformersLoadsGqaAndEveryGqeVariantWithGqesNumbers) {
  const std::string python = GQE_PYTHON;
  if (python.empty() || run_command(python + " -c 'import transformers'").status != 0)
    GTEST_SKIP() << "transformers is not installed in the build's Python (scripts/setup.sh installs it)";
  // Texts with what sentencepiece makes of them, for the tokenizer.
  const Tokenizer tokenizer((dir_->path() / "ds" / "tokenizer.model").string());
  nlohmann::json pairs = nlohmann::json::array();
  for (const std::string text : {"The keeper counted 112 steps, twice \u2014 and wrote it down.", "  two  spaces, and three   ",
                                 "tabs\tand\nnewlines\r\n", "\u00dcn\u00efc\u00f6d\u00e9 \u00e9den \u00c9den \u65e5\u672c\u8a9e \U0001F642",
                                 "\u00a0non-breaking\u00a0", "", " ", "3.14159 and 2026-11-28"})
    pairs.push_back({text, tokenizer.encode(text)});
  const std::string texts = dir_->write("texts.json", pairs.dump());

  const std::string config = (dir_->path() / "small.yaml").string(), ten = " --set train.tokens=2560";
  for (const auto& [name, overrides] : std::vector<std::pair<std::string, std::string>>{
           {"run", ""},  // the fixture's: GQE, variant gqe, top_k 1
           {"hf-gqa", ten + " --set model.attention.type=gqa"},
           {"hf-top2", ten + " --set model.attention.top_k=2"},
           {"hf-hard", ten + " --set model.attention.variant=hard_concat"},
           {"hf-weighted", ten + " --set model.attention.variant=weighted_concat"}}) {
    SCOPED_TRACE(name);
    if (!overrides.empty()) {
      const auto trained = run_command(gqe("train " + config + " --run-dir " + path(name) + overrides));
      ASSERT_EQ(trained.status, 0) << trained.err;
    }
    const std::string latest = read_file(path(name) + "/checkpoints/latest");
    const std::string exported = path(name + "-export");
    const auto e = run_command(gqe("export " + path(name) + "/checkpoints/" + latest.substr(0, latest.size() - 1) + " --out " + exported));
    ASSERT_EQ(e.status, 0) << e.err;
    EXPECT_EQ(fs::exists(exported + "/modeling_gqe.py"), name != "hf-gqa");
    const auto sampled = run_command(gqe("sample " + path(name) + " --prompt 'The keeper' --temperature 0 --max-tokens 16 --ids"));
    ASSERT_EQ(sampled.status, 0) << sampled.err;
    const std::string greedy = dir_->write(name + "-greedy.json", sampled.out);
    const auto checked = run_command(python + " " + GQE_SOURCE_DIR + "/scripts/check_hf_export.py " + exported + " " + path(name) +
                                     " --greedy " + greedy + " --texts " + texts + " --json");
    ASSERT_EQ(checked.status, 0) << checked.err << checked.out;
    const auto report = nlohmann::json::parse(checked.out);
    EXPECT_EQ(report["model"], name == "hf-gqa" ? "LlamaForCausalLM" : "GqeForCausalLM");
    EXPECT_NEAR(report["val_loss_transformers"].get<double>(), report["val_loss_gqe"].get<double>(),
                1e-5 * report["val_loss_gqe"].get<double>());
    EXPECT_EQ(report["generated_transformers"], report["generated_gqe"]);
    EXPECT_FALSE(report["generated_gqe"].empty());
    EXPECT_EQ(report["tokenizer_mismatches"], nlohmann::json::array());
  }
}

// lm-evaluation-harness, offline, on local files in the formats of its hellaswag, arc_easy and piqa
// tasks (tests/data/eval/harness_*.jsonl: non-ASCII capitalisation and final sigmas, non-breaking
// spaces at the ends, "\r" inside brackets, a context that ends in a space, choices whose
// characters and bytes differ), scoring the export of the fixture's run: gqe eval's acc, acc_norm,
// acc_bytes and standard errors are the harness's, and each item's log-likelihoods agree.
TEST_F(EvalCli, ScoresAreLmEvaluationHarnesssItemByItem) {
  const std::string python = GQE_PYTHON;
  if (python.empty() || run_command(python + " -c 'import lm_eval, accelerate'").status != 0)
    GTEST_SKIP() << "lm-evaluation-harness is not installed in the build's Python (scripts/setup.sh installs it)";
  const std::string data = std::string(GQE_SOURCE_DIR) + "/tests/data/eval/harness_";
  std::string tasks, sources;
  for (const std::string task : {"hellaswag", "arc_easy", "piqa"}) {
    const auto r = run_command(std::string(GQE_DATA_BINARY) + " encode-eval --task " + task + " --input " + data + task +
                               ".jsonl --dataset " + path("ds") + " --out " + path("h-" + task + ".jsonl"));
    ASSERT_EQ(r.status, 0) << r.err;
    tasks += (tasks.empty() ? "" : ",") + task + "=" + path("h-" + task + ".jsonl");
    sources += " " + task + "=" + data + task + ".jsonl";
  }
  const auto exported = run_command(gqe("export " + path("run") + "/checkpoints/step_00000020 --out " + path("h-export")));
  ASSERT_EQ(exported.status, 0) << exported.err;
  const auto ours = run_command(gqe("eval " + path("run") + " --tasks " + tasks + " --log-samples " +
                                    path("h-samples.jsonl")));
  ASSERT_EQ(ours.status, 0) << ours.err;
  const auto report = nlohmann::json::parse(read_file(path("run") + "/eval.json"));
  const auto theirs = run_command(python + " " + GQE_SOURCE_DIR + "/tests/harness_scores.py " + path("h-export") + " " +
                                  path("h-work") + sources + " 2>/dev/null");
  ASSERT_EQ(theirs.status, 0) << theirs.out;
  const auto harness = nlohmann::json::parse(theirs.out);
  for (const char* task : {"hellaswag", "arc_easy", "piqa"}) {
    SCOPED_TRACE(task);
    for (const char* metric : {"acc", "acc_norm", "acc_bytes"}) {
      EXPECT_EQ(report["tasks"][task][metric].get<double>(), harness[task][metric].get<double>()) << metric;
      EXPECT_NEAR(report["tasks"][task][std::string(metric) + "_stderr"].get<double>(),
                  harness[task][std::string(metric) + "_stderr"].get<double>(), 1e-12) << metric;
    }
  }
  std::istringstream samples(read_file(path("h-samples.jsonl")));
  size_t n = 0;
  for (std::string line; std::getline(samples, line); ++n) {
    const auto j = nlohmann::json::parse(line);
    const auto& lls = harness[j["task"].get<std::string>()]["loglikelihoods"][j["index"].get<size_t>()];
    ASSERT_EQ(lls.size(), j["loglikelihoods"].size());
    for (size_t c = 0; c < lls.size(); ++c)
      EXPECT_NEAR(j["loglikelihoods"][c].get<double>(), lls[c].get<double>(), 1e-4) << line;
  }
  EXPECT_EQ(n, 10u);
}

// The clean-up and capitalisation against the harness's own preprocess() and Python's
// str.capitalize(), on the edge cases and on random text from many scripts.
TEST(HellaswagCleanup, IsTheHarnesssPreprocessAndPythonsCapitalize) {
  const std::string python = GQE_PYTHON;
  if (python.empty() || run_command(python + " -c 'import lm_eval'").status != 0)
    GTEST_SKIP() << "lm-evaluation-harness is not installed in the build's Python";
  std::vector<std::string> texts = {"  éden was here ", "\u00a0nbsp at both ends\u00a0", "a [b\r c] d", "a [b\n c] d [e]",
                                    "ends in a title [title]", "ΣΑΣ ΟΔΟΣ, ΚΟΣΜΟΣ. Σ", "ßtraße", "ǆungla", "ﬀ ligature",
                                    "İstanbul", "two  spaces   three", "", " ", "[only]", "x [unclosed", "ΑΣ\u0301 ΑΣ'Σ"};
  // Random strings over ASCII, Latin, Greek (sigmas), Cyrillic, combining marks, titlecase digraphs,
  // ligatures, Armenian, Georgian, Cherokee, Deseret, brackets and whitespace.
  const std::vector<std::pair<char32_t, char32_t>> blocks = {{0x20, 0x7e},   {0xa0, 0x24f},  {0x370, 0x3ff}, {0x400, 0x4ff},
                                                             {0x300, 0x36f}, {0x1c4, 0x1cc}, {0xfb00, 0xfb06}, {0x531, 0x587},
                                                             {0x10a0, 0x10ff}, {0x13a0, 0x13fd}, {0x10400, 0x1044f}, {0x2000, 0x2029}};
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    std::string s;
    const int length = static_cast<int>(rng() % 12);
    for (int k = 0; k < length; ++k) {
      const auto& [lo, hi] = blocks[rng() % blocks.size()];
      const char32_t c = rng() % 8 == 0 ? U"[] \u03a3\u00a0\r"[rng() % 6] : lo + static_cast<char32_t>(rng() % (hi - lo + 1));
      append_utf8(s, c);
    }
    texts.push_back(s);
  }
  test::TempDir dir;
  const std::string input = dir.write("texts.json", nlohmann::json(texts).dump());
  const auto r = run_command(python + " " + GQE_SOURCE_DIR + "/tests/harness_cleanup.py < " + input);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto expected = nlohmann::json::parse(r.out);
  ASSERT_EQ(expected.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(hellaswag_clean(texts[i]), expected[i][0].get<std::string>()) << nlohmann::json(texts[i]).dump();
    EXPECT_EQ(python_capitalize(texts[i]), expected[i][1].get<std::string>()) << nlohmann::json(texts[i]).dump();
  }
}

TEST_F(EvalCli, BadInputIsOneLine) {
  const auto nothing = run_command(gqe("eval " + path("ds")));
  EXPECT_EQ(nothing.status, 2);
  EXPECT_EQ(nothing.err, "gqe: " + path("ds") + ": neither a run directory (with checkpoints/) nor a checkpoint (with state.json)\n");
  const auto task = run_command(gqe("eval " + path("run") + " --tasks winogrande=" + path("piqa.jsonl")));
  EXPECT_EQ(task.status, 2);
  EXPECT_EQ(task.err, "gqe: --tasks: unknown task 'winogrande' (hellaswag, arc_easy, piqa)\n");
  const auto swapped = run_command(gqe("eval " + path("run") + " --tasks hellaswag=" + path("piqa.jsonl")));
  EXPECT_EQ(swapped.status, 2);
  EXPECT_EQ(swapped.err, "gqe: " + path("piqa.jsonl") + ": holds the task piqa, not hellaswag\n");
  // --val of a run trained without a validation loss: said before the model is loaded.
  fs::copy(path("run"), path("no-val"), fs::copy_options::recursive);
  std::string config = read_file(path("no-val") + "/config.yaml");
  const size_t at = config.find("val_tokens: 256");
  ASSERT_NE(at, std::string::npos) << config;
  write_file_atomic(path("no-val") + "/config.yaml", config.replace(at, 15, "val_tokens: 0"));
  const auto no_val = run_command(gqe("eval " + path("no-val") + " --val"));
  EXPECT_EQ(no_val.status, 2);
  EXPECT_EQ(no_val.err, "gqe: --val: the run's eval.val_tokens is 0 (no validation loss)\n");
  // An eval set made with another tokenizer.
  ASSERT_EQ(run_command(std::string(GQE_DATA_BINARY) + " train-tokenizer " + std::string(GQE_SOURCE_DIR) +
                        "/tests/data/prose.txt --vocab-size 420 --out " + path("other")).status, 0);
  ASSERT_EQ(run_command(std::string(GQE_DATA_BINARY) + " encode-eval --task piqa --input " + fixture("piqa.jsonl") + " --labels " +
                        fixture("piqa-labels.lst") + " --tokenizer " + path("other.model") + " --out " + path("other.jsonl")).status, 0);
  const auto other = run_command(gqe("eval " + path("run") + " --tasks piqa=" + path("other.jsonl")));
  EXPECT_EQ(other.status, 2);
  EXPECT_NE(other.err.find("tokenized with another tokenizer"), std::string::npos) << other.err;
  const auto encode = run_command(std::string(GQE_DATA_BINARY) + " encode-eval --task arc_easy --input " + fixture("piqa.jsonl") +
                                  " --dataset " + path("ds") + " --out " + path("x.jsonl"));
  EXPECT_EQ(encode.status, 2);
  EXPECT_EQ(encode.err, "gqe-data: " + fixture("piqa.jsonl") + ":1: no \"question\" field\n");
  EXPECT_FALSE(fs::exists(path("x.jsonl")));
}

// Every command's options are checked before any work: a bad value is one line naming the option,
// exit status 2, and nothing written. (These used to reach a library: "probability tensor contains
// either inf, nan or element < 0", "filesystem error: cannot rename", an 800 GB allocation, or ran.)
TEST_F(EvalCli, EveryBadOptionIsOneLineNamingItWithExitStatus2) {
  const std::string run = path("run"), ckpt = path("run") + "/checkpoints/step_00000020", file = path("run") + "/config.yaml";
  const std::string config = std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqe.yaml", data = GQE_DATA_BINARY;
  const std::string prose = std::string(GQE_SOURCE_DIR) + "/tests/data/prose.txt", tok = path("ds") + "/tokenizer.model";
  const std::string sample = "sample " + run + " --prompt Once ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {gqe(sample + "--top-p 0"), "gqe: --top-p: must be in (0, 1], got 0"},
      {gqe(sample + "--top-p 1.5"), "gqe: --top-p: must be in (0, 1], got 1.5"},
      {gqe(sample + "--top-p nan"), "gqe: --top-p: expected a number, got 'nan'"},
      {gqe(sample + "--max-tokens -1"), "gqe: --max-tokens: must be at least 1, got -1"},
      {gqe(sample + "--max-tokens 0"), "gqe: --max-tokens: must be at least 1, got 0"},
      {gqe(sample + "--max-tokens 99999999999"), "gqe: --max-tokens: must be at most 2147483648, got 99999999999"},
      {gqe(sample + "--num-samples -1"), "gqe: --num-samples: must be at least 1, got -1"},
      {gqe(sample + "--top-k -1"), "gqe: --top-k: must be at least 0, got -1"},
      {gqe(sample + "--temperature -1"), "gqe: --temperature: must be in [0, 1000000], got -1"},
      {gqe(sample + "--temperature inf"), "gqe: --temperature: expected a number, got 'inf'"},
      {gqe(sample + "--seed -1"), "gqe: --seed: must be at least 0, got -1"},
      {gqe("eval " + run + " --val --batch-size 0"), "gqe: --batch-size: must be at least 1, got 0"},
      {gqe("export " + ckpt + " --out ''"), "gqe: --out: empty path"},
      {gqe("export " + ckpt + " --out " + file), "gqe: --out " + file + ": exists and is not a directory"},
      {gqe("export " + ckpt + " --out " + file + "/hf"), "gqe: --out " + file + "/hf: " + file + " is not a directory"},
      {gqe("compare " + run + " --out " + file), "gqe: --out " + file + ": exists and is not a directory"},
      {gqe("compare " + run + " --ema nan"), "gqe: --ema: expected a number, got 'nan'"},
      {gqe("bench train " + config + " --json /nonexistent-dir/b.json"), "gqe: --json /nonexistent-dir/b.json: /nonexistent-dir does not exist"},
      {gqe("bench train " + config + " --json " + run), "gqe: --json " + run + ": is a directory"},
      {gqe("bench train " + config + " --profile -1"), "gqe: --profile: must be at least 0, got -1"},
      {gqe("bench prefill " + config + " --seq-lens 99999999999"), "gqe: --seq-lens 99999999999: a prefill of 99999999999 tokens would take at least "},
      {gqe("info " + run), "gqe: " + run + ": is a directory, not a config file"},
      {gqe("train " + config + " --set dist.timeout_s=1e10"), "gqe: --set: dist.timeout_s: must be at most 86400 (a day), got 10000000000"},
      {gqe("train " + config + " --set log.name=.."), "gqe: --set: log.name: '..' is not a name for a run directory inside log.dir"},
      {data + " encode " + prose + " --tokenizer " + tok + " --out " + path("x") + " --val-fraction nan", "gqe-data: --val-fraction: expected a number, got 'nan'"},
      {data + " encode " + prose + " --tokenizer " + tok + " --out " + path("x") + " --val-fraction 1", "gqe-data: --val-fraction: must be in [0, 1), got 1"},
      {data + " encode " + prose + " --tokenizer " + tok + " --out " + path("x") + " --threads -3", "gqe-data: --threads: must be at least 0, got -3"},
      {data + " encode " + prose + " --tokenizer " + tok + " --out " + file, "gqe-data: --out " + file + ": exists and is not a directory"},
      {data + " decode --shard " + path("ds") + "/train_000000.bin --start -1", "gqe-data: --start: must be at least 0, got -1"},
      {data + " train-tokenizer " + prose + " --vocab-size 400 --out /nonexistent-dir/tok", "gqe-data: --out /nonexistent-dir/tok.model: /nonexistent-dir does not exist"},
      {data + " encode-eval --task piqa --input " + fixture("piqa.jsonl") + " --tokenizer " + tok + " --out " + run, "gqe-data: --out " + run + ": is a directory"},
  };
  for (const auto& [command, expected] : cases) {
    const auto r = run_command(command);
    EXPECT_EQ(r.status, 2) << command << "\n" << r.err;
    EXPECT_EQ(r.err.rfind(expected, 0), 0u) << command << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << command << "\n" << r.err;
    EXPECT_EQ(r.out, "") << command;
  }
  EXPECT_FALSE(fs::exists(path("x")));
  EXPECT_FALSE(fs::exists(file + "/hf"));
}

// Sampling past the positions the model was trained on works, and says so.
TEST_F(EvalCli, SamplingPastTheTrainedContextWarns) {
  const auto r = run_command(gqe("sample " + path("run") + " --prompt Once --temperature 0 --max-tokens 40"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("gqe: warning: the prompt (5 tokens) and --max-tokens 40 reach 45 positions, past the 32 the model "
                       "was trained on (data.seq_len)"),
            std::string::npos) << r.err;
  const auto within = run_command(gqe("sample " + path("run") + " --prompt Once --temperature 0 --max-tokens 20"));
  EXPECT_EQ(within.err, "");
}

}  // namespace
}  // namespace gqe
