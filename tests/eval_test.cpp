// Evaluation: task formats and the harness's preprocessing, the context/continuation split, eval
// set files, scoring against a direct computation, acc vs acc_norm, generation, and gqe eval /
// gqe sample end to end.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "data/tokenizer.h"
#include "dist/communicator.h"
#include "eval/generate.h"
#include "eval/scoring.h"
#include "eval/tasks.h"
#include "model_util.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::run_command;

std::string fixture(const std::string& name) { return std::string(GQE_SOURCE_DIR) + "/tests/data/eval/" + name; }

TEST(EvalTasks, HellaSwagIsCleanedLikeTheHarness) {
  const auto items = read_eval_items(EvalTask::hellaswag, fixture("hellaswag.jsonl"));
  ASSERT_EQ(items.size(), 3u);
  // ctx_b is capitalize()d: first letter up, the rest down.
  EXPECT_EQ(items[0].context, "Baking bread: A woman kneads dough on a floured table. She");
  EXPECT_EQ(items[0].choices[0], "shapes it into a loaf and places it in a tin.");
  EXPECT_EQ(items[0].label, 0);
  // " [title]" -> ". ", brackets dropped, double spaces halved; "moist" lower-cased by capitalize().
  EXPECT_EQ(items[1].context, "Home and Garden: How to repot a plant. Water the plant a day before. moist soil holds together better.");
  EXPECT_EQ(items[1].choices[2], " Loosen the roots gently with your fingers.");  // the harness keeps this space
  EXPECT_EQ(items[1].choices[1], " Sing to the roots.");
  EXPECT_EQ(items[1].label, 2);  // given as the string "2"
  EXPECT_EQ(items[2].context, "Playing chess: Two men sit at a board. One of them moves a knight");  // ctx only
  EXPECT_EQ(items[2].line, 3u);
  EXPECT_EQ(hellaswag_clean("  a   b [x] c  "), "a  b c");  // "  " -> " " once, left to right
}

TEST(EvalTasks, ArcAndPiqaUseTheQuestionAnswerPrompt) {
  const auto arc = read_eval_items(EvalTask::arc_easy, fixture("arc_easy.jsonl"));
  ASSERT_EQ(arc.size(), 2u);
  EXPECT_EQ(arc[0].context, "Question: Which tool is best for measuring the length of a table?\nAnswer:");
  EXPECT_EQ(arc[0].choices, (std::vector<std::string>{"a thermometer", "a meter stick", "a balance", "a stopwatch"}));
  EXPECT_EQ(arc[0].label, 1);
  EXPECT_EQ(arc[1].context, "Question: What do green plants need to make their food?\nAnswer:");  // flat layout
  EXPECT_EQ(arc[1].label, 0);
  EXPECT_EQ(arc[1].line, 3u);  // the blank line is skipped but counted
  const auto piqa = read_eval_items(EvalTask::piqa, fixture("piqa.jsonl"), fixture("piqa-labels.lst"));
  ASSERT_EQ(piqa.size(), 2u);
  EXPECT_EQ(piqa[1].context, "Question: Loosen a stuck jar lid\nAnswer:");
  EXPECT_EQ(piqa[1].choices[1], "Run the lid under hot water for a minute, then twist.");
  EXPECT_EQ(piqa[1].label, 1);
}

TEST(EvalTasks, BadRecordsNameTheFileAndLine) {
  test::TempDir dir;
  auto error = [&](EvalTask task, const std::string& text, const std::string& labels = "") {
    const std::string file = dir.write("in.jsonl", text);
    const std::string label_file = labels.empty() ? "" : dir.write("labels.lst", labels);
    return test::user_error_of([&] { read_eval_items(task, file, label_file); });
  };
  const std::string in = (dir.path() / "in.jsonl").string();
  EXPECT_EQ(error(EvalTask::hellaswag, R"({"activity_label": "a", "ctx": "b", "label": 0})" "\n"), in + ":1: no \"endings\" field");
  EXPECT_EQ(error(EvalTask::hellaswag, R"({"activity_label": "a", "ctx": "b", "label": 7, "endings": ["x", "y"]})" "\n"),
            in + ":1: label 7 is not the index of one of the 2 choices");
  EXPECT_EQ(error(EvalTask::arc_easy, R"({"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"})" "\n"),
            in + ":1: answerKey 'E' is not one of the choice labels A, B");
  EXPECT_EQ(error(EvalTask::piqa, R"({"goal": "g", "sol1": "a"})" "\n"), in + ":1: no \"sol2\" field");
  EXPECT_EQ(error(EvalTask::piqa, R"({"goal": "g", "sol1": "a", "sol2": "b"})" "\n", "0\n1\n"),
            (dir.path() / "labels.lst").string() + ": 2 labels for the 1 items of " + in);
  EXPECT_EQ(error(EvalTask::piqa, R"({"goal": "g", "sol1": "a", "sol2": "b"})" "\n", "2\n"),
            (dir.path() / "labels.lst").string() + ":1: expected a label 0 or 1, got '2'");
  EXPECT_EQ(error(EvalTask::piqa, "{\"goal\": \"g\"\n"), in + ":1: invalid JSON at byte 13");
}

TEST(Scoring, AccAccNormAndAccBytesPickByTotalPerCharacterAndPerByte) {
  // A short choice with the higher total, a long one with the higher total per character.
  EXPECT_EQ(best_choices({-4.0, -10.0}, {4, 40}, {4, 40}), (Picks{0, 1, 1}));
  EXPECT_EQ(best_choices({-4.0, -10.0}, {4, 5}, {4, 5}), (Picks{0, 0, 0}));
  EXPECT_EQ(best_choices({-3.0, -3.0, -1.0}, {3, 3, 3}, {3, 3, 3}), (Picks{2, 2, 2}));
  // Characters and bytes differ beyond ASCII ("éé": 2 characters, 4 bytes): acc_norm and
  // acc_bytes (the harness's metrics of those names) can disagree.
  EXPECT_EQ(best_choices({-4.0, -6.0}, {2, 4}, {4, 4}), (Picks{0, 1, 0}));
}

// A real tokenizer and a small random model for the rest.
class Eval : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    TokenizerTraining t;
    t.files = {std::string(GQE_SOURCE_DIR) + "/tests/data/prose.txt"};
    t.input.boundary = DocBoundary::blank_line;
    t.vocab_size = 400;
    t.out_prefix = (dir_->path() / "tok").string();
    train_tokenizer(t);
    tokenizer_ = new Tokenizer(t.out_prefix + ".model");
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  static EvalSet hellaswag() {
    return tokenize_eval_items(EvalTask::hellaswag, read_eval_items(EvalTask::hellaswag, fixture("hellaswag.jsonl")), *tokenizer_);
  }
  static inline test::TempDir* dir_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
};

TEST_F(Eval, ContinuationsAreWhatTheContextLeavesOfTheWhole) {
  const auto items = read_eval_items(EvalTask::hellaswag, fixture("hellaswag.jsonl"));
  const EvalSet set = hellaswag();
  ASSERT_EQ(set.items.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const TokenizedItem& t = set.items[i];
    EXPECT_EQ(t.context.front(), tokenizer_->eos_id());
    EXPECT_EQ(std::vector<int32_t>(t.context.begin() + 1, t.context.end()), tokenizer_->encode(items[i].context));
    for (size_t c = 0; c < t.continuations.size(); ++c) {
      std::vector<int32_t> joined(t.context.begin() + 1, t.context.end());
      joined.insert(joined.end(), t.continuations[c].begin(), t.continuations[c].end());
      EXPECT_EQ(joined, tokenizer_->encode(items[i].context + " " + items[i].choices[c]));
      EXPECT_EQ(t.choice_bytes[c], items[i].choices[c].size());
      EXPECT_EQ(tokenizer_->decode(t.continuations[c]), " " + items[i].choices[c]);
    }
  }
  EXPECT_EQ(set.tokenizer_fingerprint, tokenizer_->fingerprint());
}

TEST_F(Eval, EvalSetFilesRoundTripAndDamageIsFound) {
  const EvalSet set = hellaswag();
  const fs::path file = dir_->path() / "hs.jsonl";
  write_eval_set(file, set);
  const EvalSet back = read_eval_set(file);
  EXPECT_EQ(back.task, "hellaswag");
  ASSERT_EQ(back.items.size(), 3u);
  EXPECT_EQ(back.items[1].continuations, set.items[1].continuations);
  EXPECT_EQ(back.items[1].label, 2);
  const std::string text = read_file(file);
  write_file_atomic(file, text.substr(0, text.rfind('\n', text.size() - 2) + 1));  // drop the last item
  EXPECT_EQ(test::user_error_of([&] { read_eval_set(file); }), file.string() + ": 2 items, the header says 3 (truncated?)");
}

TEST_F(Eval, ScoresAreTheLogLikelihoodsOfTheModelsForward) {
  torch::manual_seed(5);
  ModelConfig c = test::small_config(AttentionType::gqe);
  c.vocab_size = 400;
  Decoder model(c);
  test::randomize(*model);
  const EvalSet set = hellaswag();
  // Direct: one forward per (context + continuation), no batching, no padding.
  std::vector<std::vector<double>> direct;
  {
    at::NoGradGuard no_grad;
    for (const TokenizedItem& item : set.items) {
      direct.emplace_back();
      for (const auto& cont : item.continuations) {
        std::vector<int64_t> seq(item.context.begin(), item.context.end());
        seq.insert(seq.end(), cont.begin(), cont.end());
        const at::Tensor tokens = at::tensor(seq, at::kLong).view({1, -1});
        const at::Tensor logp = model->forward(tokens).logits[0].log_softmax(-1);
        double sum = 0;
        for (size_t k = 0; k < cont.size(); ++k) {
          const int64_t pos = static_cast<int64_t>(item.context.size() + k) - 1;
          sum += logp[pos][cont[k]].item<double>();
        }
        direct.back().push_back(sum);
      }
    }
  }
  for (int64_t batch : {1, 3, 12}) {  // right padding must not change anything
    const auto ll = continuation_log_likelihoods(*model, set, 0, 3, batch, 256, false);
    for (size_t i = 0; i < 3; ++i)
      for (size_t k = 0; k < ll[i].size(); ++k) EXPECT_NEAR(ll[i][k], direct[i][k], 1e-4) << batch << " " << i << " " << k;
  }
  // A part of the items gives the same numbers for those items.
  const auto tail = continuation_log_likelihoods(*model, set, 1, 3, 4, 256, false);
  EXPECT_NEAR(tail[0][2], direct[1][2], 1e-4);
  // Scores: exactly what best_choices makes of the likelihoods.
  Communicator single(DistEnvironment{}, DistBackend::auto_, at::kCPU, std::chrono::seconds(5));
  std::vector<nlohmann::ordered_json> samples;
  const TaskScore score = score_eval_set(*model, set, 4, 256, false, single, &samples);
  double acc = 0, norm = 0, bytes = 0;
  ASSERT_EQ(samples.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const Picks p = best_choices(direct[i], set.items[i].choice_chars, set.items[i].choice_bytes);
    acc += p.acc == static_cast<size_t>(set.items[i].label);
    norm += p.acc_norm == static_cast<size_t>(set.items[i].label);
    bytes += p.acc_bytes == static_cast<size_t>(set.items[i].label);
    EXPECT_EQ(samples[i]["index"], i);
    EXPECT_EQ(samples[i]["pred"]["acc_norm"], p.acc_norm);
    for (size_t k = 0; k < direct[i].size(); ++k) EXPECT_NEAR(samples[i]["loglikelihoods"][k].get<double>(), direct[i][k], 1e-4);
    EXPECT_EQ(samples[i]["choices"], set.items[i].choice_texts);
  }
  EXPECT_EQ(score.items, 3u);
  EXPECT_DOUBLE_EQ(score.acc, acc / 3);
  EXPECT_DOUBLE_EQ(score.acc_norm, norm / 3);
  EXPECT_DOUBLE_EQ(score.acc_bytes, bytes / 3);
  // The harness's standard error of a mean: sample standard deviation over sqrt(n).
  EXPECT_NEAR(score.acc_stderr, std::sqrt(score.acc * (1 - score.acc) * 3 / 2) / std::sqrt(3.0), 1e-12);
  // A context longer than the window keeps its last tokens.
  const auto truncated = continuation_log_likelihoods(*model, set, 0, 1, 4, 8, false);
  EXPECT_TRUE(std::isfinite(truncated[0][0]));
}

TEST_F(Eval, GreedyGenerationIsTheArgmaxOfTheFullForwardAndSamplingIsSeeded) {
  for (AttentionType type : {AttentionType::gqa, AttentionType::gqe}) {
    torch::manual_seed(6);
    ModelConfig c = test::small_config(type);
    c.vocab_size = 400;
    Decoder model(c);
    test::randomize(*model);
    const std::vector<int32_t> prompt{2, 17, 99, 5};
    SampleOptions greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 12;
    const auto out = generate(*model, prompt, greedy);
    ASSERT_EQ(out.size(), 12u);
    std::vector<int64_t> seq(prompt.begin(), prompt.end());
    {
      at::NoGradGuard no_grad;
      for (int32_t next : out) {  // without a cache: the whole sequence every time
        const at::Tensor logits = model->forward(at::tensor(seq, at::kLong).view({1, -1})).logits[0][-1];
        EXPECT_EQ(logits.argmax().item<int64_t>(), next);
        seq.push_back(next);
      }
    }
    EXPECT_EQ(generate(*model, prompt, greedy), out);
    SampleOptions hot;
    hot.temperature = 1.0;
    hot.max_tokens = 20;
    hot.seed = 11;
    const auto a = generate(*model, prompt, hot), b = generate(*model, prompt, hot);
    EXPECT_EQ(a, b);
    hot.seed = 12;
    EXPECT_NE(generate(*model, prompt, hot), a);
    hot.top_k = 1;  // only the most likely token: greedy again
    hot.max_tokens = 12;
    EXPECT_EQ(generate(*model, prompt, hot), out);
  }
}

}  // namespace
}  // namespace gqe
