// The `gqe` binary as a user runs it: output, exit status, one-line errors.
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "test_util.h"

namespace gqe {
namespace {

using test::run_command;

using test::gqe;
std::string config(const std::string& name) { return std::string(GQE_SOURCE_DIR) + "/configs/" + name; }

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Cli, InfoPrintsThePaperParameterCounts) {
  const auto gqa = run_command(gqe("info " + config("gqa-250m.yaml")));
  ASSERT_EQ(gqa.status, 0) << gqa.err;
  EXPECT_NE(gqa.out.find("total                                 252,871,680"), std::string::npos) << gqa.out;
  EXPECT_NE(gqa.out.find("active query heads per token: 16 / 16"), std::string::npos);

  const auto gqe_run = run_command(gqe("info " + config("gqe-250m.yaml")));
  ASSERT_EQ(gqe_run.status, 0) << gqe_run.err;
  EXPECT_NE(gqe_run.out.find("total                                 247,890,944"), std::string::npos) << gqe_run.out;
  EXPECT_NE(gqe_run.out.find("active query heads per token: 9 / 16"), std::string::npos);
  EXPECT_NE(gqe_run.out.find("convention:"), std::string::npos);  // the FLOPs formula is stated
}

// gqe info ends with the verdict gqe train would reach on this machine.
TEST(Cli, InfoSaysWhetherTheModelFitsHere) {
  const auto fits = run_command(gqe("info " + config("tiny/gqe.yaml")));
  ASSERT_EQ(fits.status, 0) << fits.err;
  EXPECT_NE(fits.out.find("  memory on cpu: "), std::string::npos) << fits.out;
  EXPECT_NE(fits.out.find(" GiB available: fits (estimate 0.33 GiB)\n"), std::string::npos) << fits.out;
  const auto huge = run_command(gqe("info " + config("tiny/gqe.yaml") + " --set model.d_model=100000 --set model.n_layers=100000"));
  ASSERT_EQ(huge.status, 0) << huge.err;
  EXPECT_NE(huge.out.find(" GiB available: does not fit: the weights, gradients, AdamW moments, logits and layer inputs alone "
                          "need "), std::string::npos) << huge.out;
}

// Per-rank memory of N data-parallel ranks: ZeRO-1 keeps 1/N of the moments (8 bytes x 247.9M
// parameters = 1.85 GiB, 0.46 GiB on each of 4) and receives 1/N of the reduced gradient.
TEST(Cli, InfoShowsPerRankMemoryWithAndWithoutTheShardedOptimizer) {
  const auto r = run_command(gqe("info " + config("gqe-250m.yaml") + " --nproc 4"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("per rank of 4 data-parallel ranks (estimate)\n"
                       "  dist.shard_optimizer: false  AdamW moments 1.85 GiB, with weights and gradients 3.69 GiB, total ~"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  dist.shard_optimizer: true   AdamW moments 0.46 GiB, with weights and gradients 2.54 GiB, total ~"),
            std::string::npos) << r.out;
}

TEST(Cli, InfoTakesOverrides) {
  const auto r = run_command(gqe("info " + config("gqe-250m.yaml") + " --set model.attention.top_k=2"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("active query heads per token: 17 / 16"), std::string::npos) << r.out;
}

TEST(Cli, BadConfigIsOneLineAndExitStatus2) {
  test::TempDir dir;
  const std::string bad = dir.write("bad.yaml", "inherit: " + config("gqe-250m.yaml") + "\nmodel:\n  n_layer: 4\n");
  const auto r = run_command(gqe("info " + bad));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe: " + bad + ": unknown key 'model.n_layer' (did you mean 'model.n_layers'?)\n");
  EXPECT_EQ(r.out, "");
}

TEST(Cli, BadUsageIsExitStatus2) {
  for (const std::string args : {"", "info", "frobnicate", "info a.yaml --bogus"}) {
    const auto r = run_command(gqe(args));
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_EQ(count_lines(r.err), 1) << args << ": " << r.err;
  }
  // A command missing or mistyped names the choices, or the nearest; the help named is the command's.
  EXPECT_EQ(run_command(gqe("")).err,
            "gqe: which command? train, eval, sample, experiment, compare, ladder, info, export, data, bench (see gqe --help)\n");
  EXPECT_EQ(run_command(gqe("bench")).err, "gqe: which bench command? loader, prefill, train, comm, encode (see gqe bench --help)\n");
  EXPECT_EQ(run_command(gqe("trian x.yaml")).err, "gqe: unknown command 'trian' (did you mean 'train'?) (see gqe --help)\n");
  EXPECT_EQ(run_command(gqe("bench trian")).err, "gqe: unknown command 'bench trian' (did you mean 'bench train'?) (see gqe bench --help)\n");
  EXPECT_EQ(run_command(gqe("frobnicate")).err,
            "gqe: unknown command 'frobnicate'; the commands: train, eval, sample, experiment, compare, ladder, info, export, data, "
            "bench (see gqe --help)\n");
  EXPECT_EQ(run_command(gqe("info a.yaml --bogus")).err, "gqe: unknown option '--bogus' (see gqe info --help)\n");
  EXPECT_EQ(run_command(gqe("train --nprocs 2")).err, "gqe: unknown option '--nprocs' (did you mean '--nproc'?) (see gqe train --help)\n");
  const auto missing = run_command(gqe("info /nonexistent/x.yaml"));
  EXPECT_EQ(missing.status, 2);
  EXPECT_EQ(missing.err, "gqe: /nonexistent/x.yaml: cannot open config file (no such file)\n");
}

TEST(Cli, HelpHasExamples) {
  const auto top = run_command(gqe("--help"));
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.out.find("info"), std::string::npos);
  const auto info = run_command(gqe("info --help"));
  EXPECT_EQ(info.status, 0);
  EXPECT_NE(info.out.find("Examples:"), std::string::npos);
}

// Which gqe this is: `git describe` of the source it was built from (every run's log says it too):
// a commit of this checkout, "-dirty" if it had changes then. (The build may be older than the
// checkout's state, so the commit is checked, not compared with HEAD.)
TEST(Cli, VersionNamesTheCommitItWasBuiltFrom) {
  const std::string git = "git -C " + std::string(GQE_SOURCE_DIR) + " ";
  const auto r = run_command(gqe("--version"));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(run_command(std::string(GQE_DATA_BINARY) + " --version").out, "gqe-data " + r.out.substr(4));
  std::smatch m;
  const std::string out = r.out;
  if (run_command(git + "rev-parse --git-dir >/dev/null 2>&1").status != 0) {
    EXPECT_EQ(out, "gqe unknown\n");
  } else {
    ASSERT_TRUE(std::regex_match(out, m, std::regex("gqe (?:.*-g)?([0-9a-f]{12})(-dirty)?\n"))) << out;
    EXPECT_EQ(run_command(git + "rev-parse --verify --quiet " + m[1].str() + "^{commit}").status, 0) << out;
  }
}

}  // namespace
}  // namespace gqe
