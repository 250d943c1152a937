// `gqe bench train|prefill` as a user runs them: both attention kinds side by side, the numbers
// consistent with each other and with `gqe info`, no MFU where no peak is known, and bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <regex>

#include "common/files.h"
#include "test_util.h"

namespace gqe {
namespace {

using test::run_command;

using test::gqe;
std::string config(const std::string& name) { return std::string(GQE_SOURCE_DIR) + "/configs/" + name; }

TEST(Bench, TrainMeasuresGqaAndGqeSideBySide) {
  test::TempDir dir;
  const auto json = dir.path() / "train.json";
  const auto r = run_command(gqe("bench train " + config("tiny/gqe.yaml") +
                                 " --steps 1 --warmup 0 --set train.micro_batch_size=2 --set data.seq_len=32 --json " +
                                 json.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("MFU: none (the peak of this device is not known)"), std::string::npos) << r.out;
  const auto report = nlohmann::json::parse(read_file(json));
  ASSERT_EQ(report["train"].size(), 2u);
  const auto& gqa = report["train"][0];
  const auto& gqe_row = report["train"][1];
  EXPECT_EQ(gqa["attention"], "gqa");
  EXPECT_EQ(gqe_row["attention"], "gqe/gqe");
  for (const auto& row : report["train"]) {
    EXPECT_TRUE(row["mfu"].is_null());
    EXPECT_NEAR(row["tokens_per_s"].get<double>() * row["step_s"].get<double>(), 2 * 32, 1e-6);
  }
  // gqe info's formula, 6 x matmul params + 6 x layers x active heads x head_dim x T: all 4 heads
  // for GQA, 3 for GQE (2 routed + the shared one).
  auto matmul_params = [](const std::string& name) {
    const auto info = run_command(gqe("info " + config(name) + " --set data.seq_len=32"));
    EXPECT_EQ(info.status, 0) << info.err;
    std::smatch m;
    if (!std::regex_search(info.out, m, std::regex(R"(6 x ([0-9,]+) matmul params)"))) ADD_FAILURE() << info.out;
    return std::stod(std::regex_replace(m[1].str(), std::regex(","), ""));
  };
  EXPECT_DOUBLE_EQ(gqa["flops_per_token"].get<double>(), 6 * matmul_params("tiny/gqa.yaml") + 6.0 * 4 * 4 * 32 * 32);
  EXPECT_DOUBLE_EQ(gqe_row["flops_per_token"].get<double>(), 6 * matmul_params("tiny/gqe.yaml") + 6.0 * 4 * 3 * 32 * 32);
}

TEST(Bench, PrefillReportsTheSpeedUpOfEachLength) {
  test::TempDir dir;
  const auto json = dir.path() / "prefill.json";
  const auto r = run_command(gqe("bench prefill " + config("bench/prefill-cpu.yaml") +
                                 " --seq-lens 16,48 --repeats 1 --json " + json.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = nlohmann::json::parse(read_file(json))["prefill"];
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["tokens"], 16);
  EXPECT_EQ(rows[1]["tokens"], 48);
  for (const auto& row : rows)
    EXPECT_DOUBLE_EQ(row["speedup"].get<double>(), row["gqa_s"].get<double>() / row["gqe_s"].get<double>());
}

// On a CPU --profile lists ATen ops by self time: every matmul is one aten::mm (7 per GQA layer and
// the output projection; GQE adds the router and the shared head's query), and nested ops are not
// counted twice (linear > matmul > mm would put the busy time near 300% of the run's).
TEST(Bench, CpuProfileListsAtenOpsBySelfTime) {
  const auto r = run_command(gqe("bench prefill " + config("bench/prefill-cpu.yaml") + " --seq-lens 48 --repeats 3 --profile 40"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::smatch m;
  const std::regex busy(R"((GQ[AE]) prefill of 48 tokens: CPU busy [0-9.]+ ms per run \(([0-9]+)% of it\), top ATen ops by self time)");
  std::vector<std::string> seen;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), busy); it != std::sregex_iterator(); ++it) {
    seen.push_back((*it)[1]);
    EXPECT_LT(std::stoi((*it)[2]), 200) << r.out;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"GQA", "GQE"})) << r.out;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(GQA prefill[^]*?\s(\d+)  aten::mm\n[^]*GQE prefill[^]*?\s(\d+)  aten::mm\n)"))) << r.out;
  EXPECT_EQ(m[1], "15");
  EXPECT_EQ(m[2], "19");
}

TEST(Bench, BadInputIsOneLineAndExitStatus2) {
  const auto length = run_command(gqe("bench prefill " + config("bench/prefill-cpu.yaml") + " --seq-lens 64,x"));
  EXPECT_EQ(length.status, 2);
  EXPECT_EQ(length.err, "gqe: --seq-lens: 'x' is not a length\n");
  for (const std::string& count : {"prefill " + config("bench/prefill-cpu.yaml") + " --repeats 0",
                                   "train " + config("tiny/gqe.yaml") + " --steps 0",
                                   "train " + config("tiny/gqe.yaml") + " --warmup -1",
                                   "loader " + config("tiny/gqe.yaml") + " --micro-batches 0"}) {
    const auto r = run_command(gqe("bench " + count));
    EXPECT_EQ(r.status, 2) << count;
    EXPECT_NE(r.err.find("not in range"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  }
}

}  // namespace
}  // namespace gqe
