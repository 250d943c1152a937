// gqe-data as a user runs it, and `gqe data ...` forwarding to it.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/files.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::run_command;

using test::data_tool;
std::string fixture() { return std::string(GQE_SOURCE_DIR) + "/tests/data/prose.txt"; }

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

class DataCli : public testing::Test {
 protected:
  void SetUp() override {
    const auto trained = run_command(data_tool("train-tokenizer " + fixture() + " --doc-boundary blank-line --vocab-size 400 --out " +
                                               path("tok")));
    ASSERT_EQ(trained.status, 0) << trained.err;
    const auto encoded = run_command(data_tool("encode " + fixture() + " --doc-boundary blank-line --tokenizer " +
                                               path("tok.model") + " --out " + path("ds") + " --val-fraction 0.25 --quiet"));
    ASSERT_EQ(encoded.status, 0) << encoded.err;
    ASSERT_EQ(encoded.out + encoded.err, "");  // --quiet: nothing but errors
  }
  std::string path(const std::string& name) const { return (dir_.path() / name).string(); }
  test::TempDir dir_;
};

TEST_F(DataCli, InspectPrintsHeadersAndManifestsAsJson) {
  const auto shard = run_command(data_tool("inspect " + path("ds/train_000000.bin") + " --verify"));
  ASSERT_EQ(shard.status, 0) << shard.err;
  EXPECT_NE(shard.out.find("\"magic\": \"GQESHARD\""), std::string::npos);
  EXPECT_NE(shard.out.find("\"vocab_size\": 400"), std::string::npos);
  EXPECT_NE(shard.out.find("\"verified\": true"), std::string::npos);
  const auto dataset = run_command(data_tool("inspect " + path("ds") + " --verify"));
  ASSERT_EQ(dataset.status, 0) << dataset.err;
  EXPECT_NE(dataset.out.find("\"format\": \"gqe-dataset\""), std::string::npos);
  EXPECT_NE(dataset.out.find("\"train\": {"), std::string::npos);
  // gqe data forwards to gqe-data: same answer.
  const auto forwarded = run_command(test::gqe("data inspect " + path("ds") + " --verify"));
  EXPECT_EQ(forwarded.status, 0) << forwarded.err;
  EXPECT_EQ(forwarded.out, dataset.out);
}

TEST_F(DataCli, DecodeGivesTheTextBack) {
  const auto decoded = run_command(data_tool("decode --shard " + path("ds/val_000000.bin")));
  ASSERT_EQ(decoded.status, 0) << decoded.err;
  EXPECT_NE(decoded.out.find("</s>"), std::string::npos);
  const std::string first = decoded.out.substr(0, decoded.out.find("\n</s>"));
  std::ifstream in(fixture());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(first), std::string::npos) << first;  // a whole paragraph of the input
  // ids on the command line or stdin, with the dataset's tokenizer
  const auto ids = run_command("echo '2, 2' | " + data_tool("decode --dataset " + path("ds")));
  EXPECT_EQ(ids.status, 0) << ids.err;
  EXPECT_EQ(ids.out, "\n");  // EOS decodes to nothing
  const auto bad = run_command(data_tool("decode --dataset " + path("ds") + " 5 400"));
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("token id 400 (position 1) is outside the vocabulary of 400"), std::string::npos) << bad.err;
}

TEST_F(DataCli, DamageIsFoundByVerifyWithExitStatus2) {
  test::flip_byte(path("ds/train_000000.bin"), 300);
  const auto shallow = run_command(data_tool("inspect " + path("ds")));
  EXPECT_EQ(shallow.status, 0);  // headers are intact
  const auto deep = run_command(data_tool("inspect " + path("ds") + " --verify"));
  EXPECT_EQ(deep.status, 2);
  EXPECT_EQ(deep.err, "gqe-data: " + path("ds/train_000000.bin") +
                          ": payload checksum mismatch (the tokens were changed or damaged)\n");
  EXPECT_EQ(deep.out, "");
}

TEST_F(DataCli, BadUsageAndBadInputAreOneLineWithExitStatus2) {
  for (const std::string& args :
       {std::string("encode"), "encode " + fixture() + " --out " + path("x"),
        "encode " + path("nope.txt") + " --tokenizer " + path("tok.model") + " --out " + path("x"),
        "encode " + fixture() + " --tokenizer " + path("tok.model") + " --out " + path("x") + " --shard-tokens lots",
        "train-tokenizer " + fixture() + " --out " + path("t2"), "inspect " + path("nope"), std::string("frobnicate"),
        "encode " + dir_.write("bad.parquet", "PAR1 not really") + " --tokenizer " + path("tok.model") + " --out " + path("x"),
        "train-tokenizer " + path("bad.parquet") + " --vocab-size 300 --out " + path("x/tok")}) {
    const auto r = run_command(data_tool(args));
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_EQ(lines(r.err), 1) << args << "\n" << r.err;
  }
  EXPECT_FALSE(fs::exists(path("x")));
  EXPECT_FALSE(fs::exists(path("x.partial")));
}

// The traps of a dataset on disk and of surprising inputs: one line and exit 2, never a hang (a
// FIFO where a shard should be), or a warning where the input is legitimate (no val documents).
TEST_F(DataCli, TrapsAreOneLineNotHangsAndSurprisesAreWarnings) {
  namespace fs = std::filesystem;
  const std::string shard = path("ds/train_000000.bin"), manifest = path("ds/manifest.json");
  const std::string kept = read_file(shard), kept_manifest = read_file(manifest);
  fs::remove(shard);
  ASSERT_EQ(::mkfifo(shard.c_str(), 0600), 0);
  auto r = run_command("timeout 20 " + data_tool("inspect " + path("ds")));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe-data: " + shard + ": not a shard (not a regular file)\n");
  fs::remove(shard);
  fs::create_directory(shard);
  r = run_command(data_tool("inspect " + path("ds") + " --verify"));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe-data: " + shard + ": not a shard (not a regular file)\n");
  fs::remove(shard);
  write_file_atomic(shard, kept);
  fs::remove(manifest);
  fs::create_directory(manifest);
  r = run_command(data_tool("inspect " + path("ds")));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe-data: " + manifest + ": not a file\n");
  fs::remove(manifest);
  write_file_atomic(manifest, kept_manifest);
  EXPECT_EQ(run_command(data_tool("inspect " + path("ds") + " --verify")).status, 0);
  write_file_atomic(path("ds/train_000099.bin"), kept);  // a shard the manifest does not name
  r = run_command(data_tool("inspect " + path("ds")));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe-data: " + path("ds/train_000099.bin") + ": a shard the manifest does not list (a dataset holds the "
                   "shards its manifest names, and only those)\n");
  fs::remove(path("ds/train_000099.bin"));

  const std::string array = dir_.write("records.json", "[{\"text\": \"a\"},\n {\"text\": \"b\"}]\n");
  r = run_command(data_tool("encode " + array + " --tokenizer " + path("tok.model") + " --out " + path("arr")));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "gqe-data: " + array + ":1: a JSON array, but .json files are read as JSON Lines: one object per line (e.g. "
                   "jq -c '.[]' " + array + " > out.jsonl)\n");
  EXPECT_FALSE(fs::exists(path("arr")));
  r = run_command(data_tool("encode " + fixture() + " --tokenizer " + path("tok.model") + " --out " + path("one") + " --quiet"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "gqe-data: warning: the val split is empty (1 document(s) in all; plain text is one document per file "
                   "unless --doc-boundary blank-line): training's evaluations will have nothing to score\n");
}

TEST_F(DataCli, VocabularySizeCanComeFromAConfig) {
  const std::string config = dir_.write("c.yaml", "inherit: " + std::string(GQE_SOURCE_DIR) +
                                                      "/configs/tiny/gqe.yaml\nmodel:\n  vocab_size: 420\n");
  const auto r = run_command(data_tool("train-tokenizer " + fixture() + " --config " + config + " --out " + path("t3")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("vocabulary 420"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace gqe
