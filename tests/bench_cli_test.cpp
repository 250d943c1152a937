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

TEST(Bench, BadInputIsOneLineAndExitStatus2) {
  const auto length = run_command(gqe("bench prefill " + config("bench/prefill-cpu.yaml") + " --seq-lens 64,x"));
  EXPECT_EQ(length.status, 2);
  EXPECT_EQ(length.err, "gqe: --seq-lens: 'x' is not a length\n");
  const auto profile = run_command(gqe("bench train " + config("tiny/gqe.yaml") + " --profile 5"));
  EXPECT_EQ(profile.status, 2);
  EXPECT_EQ(profile.err, "gqe: --profile lists GPU kernels; " + config("tiny/gqe.yaml") + " runs on cpu\n");
}

}  // namespace
}  // namespace gqe
