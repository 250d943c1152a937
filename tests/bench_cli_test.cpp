// `gqe bench train|prefill|encode` as a user runs them: both attention kinds side by side, the numbers
// consistent with each other and with `gqe info`, no MFU where no peak is known, and bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <regex>

#include "bench/benchmarks.h"
#include "common/files.h"
#include "dist/launcher.h"
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
  EXPECT_EQ(report["overrides"], nlohmann::json({"train.micro_batch_size=2", "data.seq_len=32"}));
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

// Data parallel: tokens/s count the group, and the share of the step spent waiting on the
// collectives is reported (sharded: the parameters' all-gather too).
TEST(Bench, TrainOnRanksReportsTheCommunicationShare) {
  test::TempDir dir;
  const auto json = dir.path() / "train.json";
  const auto r = run_command(gqe("bench train " + config("tiny/gqe.yaml") +
                                 " --nproc 2 --steps 2 --warmup 1 --set train.micro_batch_size=2 --set data.seq_len=32 "
                                 "--set dist.shard_optimizer=true --json " + json.string()));
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("data parallel: 2 ranks over gloo, sharded optimizer; comm: the share of the step spent waiting on "
                       "gradient collectives after the backward pass and on the parameters' all-gather where the "
                       "forward pass waits for it"), std::string::npos) << r.out;
  const auto rows = nlohmann::json::parse(read_file(json))["train"];
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    EXPECT_EQ(row["ranks"], 2);
    EXPECT_NEAR(row["tokens_per_s"].get<double>() * row["step_s"].get<double>(), 2 * 2 * 32, 1e-6);
    EXPECT_GT(row["comm_share"].get<double>(), 0.0);
    EXPECT_LT(row["comm_share"].get<double>(), 1.0);
  }

  // On two nodes only rank 0's writes the report: another node's --json path need not be usable.
  const std::string port = std::to_string(free_port()), nodes = dir.path() / "nodes.json";
  auto node = [&](int i, const std::string& report) {
    return "NNODES=2 NODE_RANK=" + std::to_string(i) + " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " " +
           gqe("bench train " + config("tiny/gqe.yaml") + " --steps 2 --warmup 1 --set train.micro_batch_size=2 --set data.seq_len=32 "
               "--set dist.timeout_s=30 --json " + report);
  };
  test::Background second("exec env " + node(1, json.string() + "/not-a-directory.json") + " >" + (dir.path() / "1.out").string() + " 2>&1");
  const auto first = run_command(node(0, nodes));
  ASSERT_EQ(first.status, 0) << first.err;
  ASSERT_EQ(second.wait(), 0) << read_file(dir.path() / "1.out");
  EXPECT_EQ(nlohmann::json::parse(read_file(nodes))["train"][0]["ranks"], 2);
}

TEST(Bench, PrefillReportsTheSpeedUpOfEachLength) {
  test::TempDir dir;
  const auto json = dir.path() / "prefill.json";
  // --config as the issue spells it; the positional form works as well (the other tests).
  const auto r = run_command(gqe("bench prefill --config " + config("bench/prefill-cpu.yaml") +
                                 " --seq-lens 16,48 --repeats 1 --json " + json.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = nlohmann::json::parse(read_file(json))["prefill"];
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["tokens"], 16);
  EXPECT_EQ(rows[1]["tokens"], 48);
  for (const auto& row : rows)
    EXPECT_DOUBLE_EQ(row["speedup"].get<double>(), row["gqa_s"].get<double>() / row["gqe_s"].get<double>());
}

// CPU ops nest (linear > matmul > mm) and must not be counted twice: each gets its self time. A span
// that starts where another ends is not inside it, nor is one on another thread.
TEST(Bench, ProfileTotalsAreSelfTimesForNestedSpans) {
  const std::vector<ProfiledSpan> spans = {{0, 100, 1, "linear"}, {10, 90, 1, "matmul"}, {20, 80, 1, "mm"},
                                           {100, 130, 1, "mul"},  {50, 70, 2, "mm"}};
  std::map<std::string, std::pair<double, int64_t>> got;
  for (const KernelTime& k : total_by_name(spans, /*nested=*/true)) got[k.name] = {k.seconds * 1e9, k.calls};
  EXPECT_NEAR(got["linear"].first, 20, 1e-6);
  EXPECT_NEAR(got["matmul"].first, 20, 1e-6);
  EXPECT_NEAR(got["mm"].first, 80, 1e-6);
  EXPECT_EQ(got["mm"].second, 2);
  EXPECT_NEAR(got["mul"].first, 30, 1e-6);
  const std::vector<KernelTime> flat = total_by_name(spans, /*nested=*/false);  // GPU kernels
  EXPECT_EQ(flat[0].name, "linear");
  EXPECT_NEAR(flat[0].seconds * 1e9, 100, 1e-6);
  EXPECT_NEAR(flat[1].seconds * 1e9, 80, 1e-6);  // mm: 60 + 20
}

// On a CPU, --profile lists ATen ops: every matmul is one aten::mm (7 per GQA layer and the output
// projection; GQE adds the router, its shared query shares the experts' matmul).
TEST(Bench, CpuProfileListsAtenOps) {
  const auto r = run_command(gqe("bench prefill " + config("bench/prefill-cpu.yaml") + " --seq-lens 48 --repeats 1 --profile 40"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(GQA prefill of 48 tokens: CPU busy .* top ATen ops by self time\n[^]*?\s(\d+)  aten::mm\n)"
                                                     R"([^]*GQE prefill of 48 tokens: CPU busy .* top ATen ops by self time\n[^]*?\s(\d+)  aten::mm\n)")))
      << r.out;
  EXPECT_EQ(m[1], "15");
  EXPECT_EQ(m[2], "17");
}

// gqe bench encode runs gqe-data and the Python baseline (pool and threads) on the same documents,
// JSON Lines and Parquet alike: every run counts the same tokens, and the table and --json agree.
TEST(Bench, EncodeComparesGqeDataWithThePythonBaselineOnTheSameDocuments) {
  const std::string python = GQE_PYTHON;
  if (python.empty() || run_command(python + " -c 'import sentencepiece, pyarrow'").status != 0)
    GTEST_SKIP() << "sentencepiece or pyarrow is not installed in the build's Python (scripts/setup.sh installs them)";
  test::TempDir dir;
  test::make_fixture_dataset(dir.path());
  std::string jsonl;
  for (int i = 0; i < 200; ++i) jsonl += "{\"text\": \"record " + std::to_string(i) + ": \\u00fcber den Leuchtturm\"}\n";
  jsonl += "{\"text\": \"\"}\n";  // empty: skipped by both
  const std::string input = dir.write("records.jsonl", jsonl), parquet = (dir.path() / "pq" / "records.parquet").string();
  std::filesystem::create_directories(dir.path() / "pq");
  ASSERT_EQ(run_command(python + " -c \"import json, pyarrow as pa, pyarrow.parquet as pq; pq.write_table(pa.table({'body': "
                                 "[json.loads(l)['text'] for l in open('" + input + "')]}), '" + parquet + "', row_group_size=64)\"")
                .status,
            0);
  // A file, and a directory (both tools get the files gqe-data would read).
  for (const std::string& args : {input, (dir.path() / "pq").string() + " --text-field body"}) {
    const auto json = dir.path() / "encode.json";
    const auto r = run_command(gqe("bench encode " + args + " --tokenizer " + (dir.path() / "tok.model").string() +
                                   " --threads 2 --repeats 1 --json " + json.string()));
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_EQ(r.err, "");  // no "did not encode the same documents" warning
    EXPECT_NE(r.out.find("gqe-data / Python pool "), std::string::npos) << r.out;
    const auto report = nlohmann::json::parse(read_file(json));
    ASSERT_EQ(report["runs"].size(), 3u);
    std::vector<std::string> tools;
    for (const auto& run : report["runs"]) {
      tools.push_back(run["tool"]);
      EXPECT_EQ(run["tokens"], report["runs"][0]["tokens"]) << run;
      EXPECT_GT(run["seconds"].get<double>(), 0);
    }
    EXPECT_EQ(tools, (std::vector<std::string>{"gqe-data", "python-pool", "python-threads"}));
    EXPECT_GT(report["runs"][0]["tokens"].get<uint64_t>(), 200u * 5);
  }
  // A tool that fails stops the benchmark with one line: what failed, and its last words.
  const auto r = run_command(gqe("bench encode " + input + " --text-field body --tokenizer " +
                                 (dir.path() / "tok.model").string() + " --repeats 1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("gqe-data encode failed: gqe-data: " + input + ":1: no \"body\" field"), std::string::npos) << r.err;
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
  // A model that cannot fit: one line for the job, not one per rank.
  const auto huge = run_command(gqe("bench train " + config("tiny/gqe.yaml") + " --nproc 2 --set model.n_layers=4000 --set "
                                    "model.d_model=4096 --set model.head_dim=1024 --set model.ffn_hidden=16384"));
  EXPECT_EQ(huge.status, 2);
  EXPECT_EQ(huge.err.rfind("gqe: " + config("tiny/gqe.yaml") + ": gqa cannot train here: memory on cpu: ", 0), 0u) << huge.err;
  EXPECT_EQ(huge.err.find('\n'), huge.err.size() - 1) << huge.err;
}

}  // namespace
}  // namespace gqe

namespace gqe {
namespace {

// The collectives' results are checked inside the benchmark (a wrong sum fails it): 3 ranks make
// the shard arithmetic non-trivial. Sizes are rounded down to whole fp32 shards.
TEST(BenchComm, CollectivesAreCheckedAndReportedByNcclTestsConvention) {
  test::TempDir dir;
  const std::string json = (dir.path() / "comm.json").string();
  const auto r = run_command(gqe("bench comm " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqa.yaml --nproc 3 --sizes 1000,64K " +
                                 "--repeats 2 --json " + json));
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("collectives: 3 ranks (3 per node) over gloo"), std::string::npos) << r.out;
  const auto rows = nlohmann::json::parse(read_file(json))["comm"];
  ASSERT_EQ(rows.size(), 6u);
  const char* ops[] = {"all-reduce", "reduce-scatter", "all-gather"};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["collective"], ops[i % 3]);
    EXPECT_EQ(rows[i]["bytes"], i < 3 ? 249 * 4 : 15999 * 4);  // 1000 B: 249 floats = 3 x 83; 64K = 64000 B: 3 x 5333
    const double algbw = rows[i]["algbw"], busbw = rows[i]["busbw"];
    EXPECT_NEAR(algbw, rows[i]["bytes"].get<double>() / rows[i]["seconds"].get<double>(), 1e-6 * algbw);
    EXPECT_NEAR(busbw, algbw * (i % 3 == 0 ? 4.0 / 3 : 2.0 / 3), 1e-9 * algbw);
  }
  const auto bad = run_command(gqe("bench comm " + std::string(GQE_SOURCE_DIR) + "/configs/tiny/gqa.yaml --sizes 2"));
  EXPECT_EQ(bad.status, 2);
  EXPECT_EQ(bad.err, "gqe: --sizes: '2' is not a size in bytes from 4 to 64 GiB (e.g. 25M, 1G)\n");
}

}  // namespace
}  // namespace gqe
