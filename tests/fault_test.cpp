// Faults without silent loss: every kind of file gqe writes, on a full disk (ENOSPC) and a failing
// one (EIO), injected into the real binaries by tests/fault_inject.c. The command stops with exit
// status 1 and one line naming the file; nothing it wrote is torn or left half there; what was
// written before stays valid; and a run continued once the disk takes writes again is exactly the
// run that never failed.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "test_util.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::gqe;
using test::run_command;

// Where and how writes fail (tests/fault_inject.c).
struct Fault {
  std::string name;          // the test's
  std::string path;          // writes to files whose path holds this fail
  std::string error = "ENOSPC";
  int64_t after = 0;         // bytes such files still take, in total
  bool at_fsync = false;     // EIO at fsync rather than at write
};

std::string with(const Fault& f, const std::string& command) {
  return fmt::format("LD_PRELOAD={} GQE_FAULT_PATH='{}' GQE_FAULT_ERRNO={} GQE_FAULT_AFTER={} GQE_FAULT_ON={} {}",
                     GQE_FAULT_LIBRARY, f.path, f.error, f.after, f.at_fsync ? "fsync" : "write", command);
}

std::string strerror_of(const Fault& f) { return f.error == "EIO" ? "Input/output error" : "No space left on device"; }

// The one line a failed command prints: "PROGRAM: error: FILE: cannot ACTION (why)..."
void expect_failure_line(const test::RunResult& r, const Fault& f, const std::string& program = "gqe") {
  EXPECT_EQ(r.status, 1) << r.err << r.out;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind(program + ": error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(": cannot "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(" + strerror_of(f) + ")"), std::string::npos) << r.err;
}

// Whatever a failed write could leave behind: temporary names, staged directories.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> found;
  if (!fs::exists(dir)) return found;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".tmp") || name.ends_with(".partial") || name.ends_with(".old")) found.push_back(e.path().string());
  }
  return found;
}

// Every line of metrics.jsonl is a whole JSON object.
void expect_whole_lines(const fs::path& file) {
  if (!fs::exists(file)) return;
  std::istringstream in(read_file(file));
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    EXPECT_FALSE(nlohmann::json::parse(line, nullptr, false).is_discarded()) << file << ":" << n << ": " << line;
  }
  const std::string text = read_file(file);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << file << " ends in a torn line";
}

// The small config's model on the fixture dataset, and one run that never failed: 20 steps, a
// checkpoint and an evaluation every 5.
class Faults : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    test::make_fixture_dataset(dir_->path());
    config_ = test::write_small_config(*dir_, "log: {every_steps: 2}\n");
    const auto r = run_command(train(straight()));
    ASSERT_EQ(r.status, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }

  std::string path(const std::string& name) const { return (runs_.path() / name).string(); }

 public:
  static std::string train(const std::string& run) { return gqe("train " + config_ + " --run-dir " + run); }
  static std::string straight() { return (dir_->path() / "straight").string(); }

 protected:

  static inline test::TempDir* dir_ = nullptr;
  static inline std::string config_;
  test::TempDir runs_;
};

// Half of what the run that never failed wrote to `file`.
int64_t half_of(const std::string& file) {
  return static_cast<int64_t>(fs::file_size(fs::path(Faults::straight()) / file) / 2);
}

// A case of TrainFault: its name, and the fault (made once the run that never failed exists).
struct TrainCase {
  std::string name;
  std::function<Fault()> fault;
};

void PrintTo(const TrainCase& c, std::ostream* os) { *os << c.name; }

class TrainFault : public Faults, public testing::WithParamInterface<TrainCase> {};

TEST_P(TrainFault, StopsWithOneLineLeavesEveryFileWholeAndResumesExactly) {
  Fault f = GetParam().fault();
  const std::string run = path("run");
  f.path = std::regex_replace(f.path, std::regex("RUN"), run);
  const auto failed = run_command(with(f, train(run)));
  expect_failure_line(failed, f);
  EXPECT_NE(failed.err.find("; the run stopped: once the file system takes writes again, gqe train " + config_ +
                            " --run-dir " + run + " continues from "),
            std::string::npos) << failed.err;

  expect_whole_lines(fs::path(run) / "metrics.jsonl");
  EXPECT_EQ(leftovers(run), std::vector<std::string>{});
  // `latest` names the newest checkpoint, and it is whole; the message says the run continues from it.
  const auto latest = peek_latest_state(run);
  if (latest) {
    EXPECT_NO_THROW(load_checkpoint(fs::path(run) / "checkpoints" / checkpoint_name(latest->step)));
    for (const auto& e : fs::directory_iterator(fs::path(run) / "checkpoints")) {
      if (e.path().filename() != "latest") {
        EXPECT_LE(e.path().filename().string(), checkpoint_name(latest->step));
      }
    }
    EXPECT_NE(failed.err.find(fmt::format("continues from step {} (its newest checkpoint)", latest->step)), std::string::npos)
        << failed.err;
  } else {
    EXPECT_NE(failed.err.find("continues from the start"), std::string::npos) << failed.err;
  }

  const auto resumed = run_command(train(run));  // the disk takes writes again
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_EQ(test::deterministic_metrics(run), test::deterministic_metrics(straight()));
  EXPECT_EQ(leftovers(run), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(
    EveryFileOfARun, TrainFault,
    testing::Values(
        TrainCase{"metrics_full", [] { return Fault{"", "RUN/metrics.jsonl", "ENOSPC", half_of("metrics.jsonl")}; }},
        TrainCase{"metrics_eio_at_fsync", [] { return Fault{"", "RUN/metrics.jsonl", "EIO", half_of("metrics.jsonl"), true}; }},
        TrainCase{"train_log_full", [] { return Fault{"", "RUN/train.log", "ENOSPC", half_of("train.log")}; }},
        TrainCase{"model_eio", [] { return Fault{"", "RUN/checkpoints/.step_00000010.tmp/model", "EIO", 1000}; }},
        TrainCase{"optimizer_eio_at_fsync", [] { return Fault{"", "RUN/checkpoints/.step_00000015.tmp/optimizer", "EIO", 0, true}; }},
        TrainCase{"state_full", [] { return Fault{"", "RUN/checkpoints/.step_00000010.tmp/state.json", "ENOSPC", 100}; }},
        TrainCase{"latest_full", [] { return Fault{"", "RUN/checkpoints/latest", "ENOSPC", 2 * 14}; }},  // the third save's
        TrainCase{"config_full", [] { return Fault{"", "RUN/config.yaml", "ENOSPC", 0}; }},
        TrainCase{"disk_full", [] { return Fault{"", "RUN/", "ENOSPC", half_of("metrics.jsonl")}; }}),
    [](const testing::TestParamInfo<TrainCase>& p) { return p.param.name; });

// An evaluation's eval.json and its line in evals.jsonl.
TEST_F(Faults, EvalWritesWholeFilesOrFails) {
  const fs::path run = straight();
  const std::string metrics = read_file(run / "metrics.jsonl");
  const std::string evals = fs::exists(run / "evals.jsonl") ? read_file(run / "evals.jsonl") : "";
  for (const Fault& f : {Fault{"eval_json", run.string() + "/eval.json", "ENOSPC", 10},
                         Fault{"evals_line", run.string() + "/evals.jsonl", "EIO", 10}}) {
    SCOPED_TRACE(f.name);
    const auto r = run_command(with(f, gqe("eval " + run.string() + " --val")));
    expect_failure_line(r, f);
    EXPECT_EQ(read_file(run / "metrics.jsonl"), metrics);
    EXPECT_EQ(fs::exists(run / "evals.jsonl") ? read_file(run / "evals.jsonl") : "", evals);  // not a byte more
    EXPECT_FALSE(fs::exists(run / "eval.json.tmp"));
    if (f.name == "eval_json") {
      EXPECT_FALSE(fs::exists(run / "eval.json"));
    }
  }
}

TEST_F(Faults, ExportLeavesNoDirectoryBehind) {
  const std::string out = path("hf");
  for (const Fault& f : {Fault{"weights", out, "ENOSPC", 4000}, Fault{"weights_at_fsync", out, "EIO", 0, true},
                         Fault{"config", out + ".partial/config.json", "ENOSPC", 0}}) {
    SCOPED_TRACE(f.name);
    const auto r = run_command(with(f, gqe("export " + straight() + "/checkpoints/step_00000020 --out " + out)));
    expect_failure_line(r, f);
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(leftovers(runs_.path()), std::vector<std::string>{});
  }
  ASSERT_EQ(run_command(gqe("export " + straight() + "/checkpoints/step_00000020 --out " + out)).status, 0);
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
}

// Tables and plots: each file whole or absent (the plots are drawn by Python, through the same shim).
TEST_F(Faults, CompareWritesWholeFilesOrFails) {
  const std::string out = path("cmp");
  for (const Fault& f : {Fault{"table", out + "/comparison.csv", "ENOSPC", 10}, Fault{"plot", out + "/loss.png", "ENOSPC", 1000}}) {
    SCOPED_TRACE(f.name);
    const auto r = run_command(with(f, gqe("compare " + straight() + " --out " + out)));
    expect_failure_line(r, f);
    EXPECT_EQ(leftovers(out), std::vector<std::string>{});
    EXPECT_FALSE(fs::exists(out + "/loss.png"));  // never a partial PNG
  }
}

TEST_F(Faults, BenchReportIsWholeOrAbsent) {
  const std::string json = path("bench.json");
  const Fault f{"json", json, "ENOSPC", 10};
  const auto r = run_command(with(f, gqe("bench prefill " + config_ + " --seq-lens 64 --repeats 1 --json " + json)));
  expect_failure_line(r, f);
  EXPECT_FALSE(fs::exists(json));
  EXPECT_FALSE(fs::exists(json + ".tmp"));
}

// Datasets, tokenizers and eval sets (gqe-data): a failed encode leaves no dataset and keeps the
// one it was to replace.
TEST_F(Faults, DataToolsWriteWholeOutputsOrNone) {
  const std::string tool = GQE_DATA_BINARY, prose = std::string(GQE_SOURCE_DIR) + "/tests/data/prose.txt";
  const std::string tok = (dir_->path() / "tok.model").string(), out = path("ds");
  const std::string encode = tool + " encode " + prose + " --doc-boundary blank-line --quiet --tokenizer " + tok + " --out " + out;
  ASSERT_EQ(run_command(encode).status, 0);
  const std::string manifest = read_file(out + "/manifest.json");
  for (const Fault& f : {Fault{"shard", out + ".partial/train_", "ENOSPC", 2000}, Fault{"manifest", out + ".partial/manifest", "EIO", 0},
                         Fault{"shard_at_fsync", out + ".partial/train_", "EIO", 0, true}}) {
    SCOPED_TRACE(f.name);
    const auto r = run_command(with(f, encode + " --overwrite --seed 7"));
    expect_failure_line(r, f, "gqe-data");
    EXPECT_EQ(read_file(out + "/manifest.json"), manifest);  // the dataset it was to replace
    EXPECT_EQ(leftovers(runs_.path()), std::vector<std::string>{});
  }

  const Fault model{"tokenizer", path("t.model"), "ENOSPC", 100};
  const auto t = run_command(with(model, tool + " train-tokenizer " + prose + " --doc-boundary blank-line --vocab-size 400 --out " +
                                             path("t")));
  expect_failure_line(t, model, "gqe-data");
  EXPECT_FALSE(fs::exists(path("t.model")));
  EXPECT_FALSE(fs::exists(path("t.model.tmp")));

  const Fault set{"eval_set", path("piqa.jsonl"), "ENOSPC", 100};
  const std::string eval = std::string(GQE_SOURCE_DIR) + "/tests/data/eval/";
  const auto e = run_command(with(set, tool + " encode-eval --task piqa --input " + eval + "piqa.jsonl --labels " + eval +
                                           "piqa-labels.lst --tokenizer " + tok + " --out " + path("piqa.jsonl")));
  expect_failure_line(e, set, "gqe-data");
  EXPECT_FALSE(fs::exists(path("piqa.jsonl")));
  EXPECT_FALSE(fs::exists(path("piqa.jsonl.tmp")));
}

}  // namespace
}  // namespace gqe
