// The shard format, the manifest, and the checks that keep damaged or mismatched data out.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/files.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "data_util.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

void patch(const fs::path& file, size_t offset, const std::string& bytes) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(Shard, HeaderRoundTripsAndEveryFieldIsWhereTheDocsSay) {
  ShardHeader h;
  h.bytes_per_token = 4;
  h.vocab_size = 50304;
  h.eos_id = 2;
  h.token_count = 0x0102030405060708ULL;
  h.document_count = 77;
  h.payload_checksum = 0xdeadbeefcafef00dULL;
  h.tokenizer_fingerprint = 0x1122334455667788ULL;
  const std::string bytes = encode_header(h);
  ASSERT_EQ(bytes.size(), 256u);
  EXPECT_EQ(bytes.substr(0, 8), "GQESHARD");
  auto u32 = [&](size_t at) { uint32_t v; std::memcpy(&v, bytes.data() + at, 4); return v; };
  auto u64 = [&](size_t at) { uint64_t v; std::memcpy(&v, bytes.data() + at, 8); return v; };
  EXPECT_EQ(u32(8), 1u);       // version
  EXPECT_EQ(u32(12), 4u);      // bytes per token
  EXPECT_EQ(u32(16), 50304u);  // vocab size
  EXPECT_EQ(u32(20), 2u);      // EOS id
  EXPECT_EQ(u64(24), h.token_count);
  EXPECT_EQ(u64(32), 77u);
  EXPECT_EQ(u64(40), h.payload_checksum);
  EXPECT_EQ(u64(48), h.tokenizer_fingerprint);
  EXPECT_EQ(bytes.substr(56, 192), std::string(192, '\0'));  // reserved
  EXPECT_EQ(u64(248), checksum64(bytes.data(), 248));
  const ShardHeader back = decode_header(bytes.data(), bytes.size(), "x");
  EXPECT_EQ(back.token_count, h.token_count);
  EXPECT_EQ(back.tokenizer_fingerprint, h.tokenizer_fingerprint);
}

TEST(Shard, WriterAndReaderAgreeForTwoAndFourByteTokens) {
  TempDir dir;
  for (uint32_t vocab : {65536u, 65537u}) {
    ShardHeader proto;
    proto.bytes_per_token = bytes_per_token_for(vocab);
    proto.vocab_size = vocab;
    proto.eos_id = 7;
    const std::string path = (dir.path() / ("s" + std::to_string(vocab))).string();
    ShardWriter w(path, proto);
    w.add_document(std::vector<int32_t>{1, static_cast<int32_t>(vocab - 1), 3});
    w.add_document(std::vector<int32_t>{});
    w.add_document(std::vector<int32_t>{9});
    const ShardHeader written = w.finish();
    EXPECT_EQ(written.token_count, 7u);
    EXPECT_EQ(written.document_count, 3u);
    EXPECT_EQ(fs::file_size(path), 256 + 7 * proto.bytes_per_token);
    const MappedShard shard(path);
    std::vector<int64_t> tokens(7);
    shard.copy(0, 7, tokens.data());
    EXPECT_EQ(tokens, (std::vector<int64_t>{1, vocab - 1, 3, 7, 7, 9, 7}));
    EXPECT_NO_THROW(shard.verify());
  }
}

class DamagedShard : public testing::Test {
 protected:
  void SetUp() override {
    ShardHeader proto;
    proto.vocab_size = 100;
    proto.eos_id = 0;
    path_ = (dir_.path() / "train_0.bin").string();
    ShardWriter w(path_, proto);
    w.add_document(std::vector<int32_t>{5, 6, 7, 8});
    w.finish();
  }
  TempDir dir_;
  std::string path_;
};

TEST_F(DamagedShard, BadMagicIsRefused) {
  patch(path_, 0, "XQESHARD");
  EXPECT_EQ(test::user_error_of([&] { MappedShard s(path_); }), path_ + ": not a gqe token shard (bad magic)");
}

TEST_F(DamagedShard, UnknownVersionIsRefused) {
  patch(path_, 8, std::string("\x02\x00\x00\x00", 4));
  EXPECT_EQ(test::user_error_of([&] { MappedShard s(path_); }),
            path_ + ": shard format version 2 is not supported (this gqe reads version 1)");
}

TEST_F(DamagedShard, CorruptHeaderIsRefused) {
  patch(path_, 16, "\x07");  // vocab size, under the header checksum
  EXPECT_EQ(test::user_error_of([&] { MappedShard s(path_); }), path_ + ": shard header checksum mismatch (corrupt header)");
}

TEST_F(DamagedShard, TruncatedPayloadIsRefused) {
  fs::resize_file(path_, 256 + 6);
  EXPECT_EQ(test::user_error_of([&] { MappedShard s(path_); }),
            path_ + ": truncated payload (262 bytes, the header promises 5 tokens = 266 bytes)");
  fs::resize_file(path_, 100);
  EXPECT_NE(test::user_error_of([&] { MappedShard s(path_); }).find("not a gqe token shard (only 100 bytes"), std::string::npos);
}

TEST_F(DamagedShard, ChangedTokensFailTheChecksum) {
  patch(path_, 256 + 2, "\x09");
  const MappedShard s(path_);  // the header alone is fine
  EXPECT_EQ(test::user_error_of([&] { s.verify(); }), path_ + ": payload checksum mismatch (the tokens were changed or damaged)");
}

TEST(Shard, TokenIdsOutsideTheVocabularyAreFound) {
  TempDir dir;
  ShardHeader proto;
  proto.vocab_size = 10;
  const std::string path = (dir.path() / "s.bin").string();
  ShardWriter w(path, proto);
  w.add_document(std::vector<int32_t>{1, 2, 12});  // a writer bug or a wrong vocab size
  w.finish();
  EXPECT_EQ(test::user_error_of([&] { MappedShard(path).verify(); }),
            path + ": token id 12 >= vocab size 10 at token 2 (byte offset 260)");
}

TEST(Dataset, StreamConcatenatesShardsInManifestOrder) {
  TempDir dir;
  test::write_counting_dataset(dir.path(), 1000, 50, 3);
  const Manifest m = read_manifest(dir.path());
  ASSERT_EQ(m.train.shards.size(), 7u);  // 20 documents, 3 per shard
  const TokenStream stream(dir.path(), m, Split::train);
  ASSERT_EQ(stream.size(), 1000u);
  std::vector<int64_t> all(1000);
  stream.copy(0, 1000, all.data());
  for (uint64_t p = 0; p < 1000; ++p) ASSERT_EQ(all[p], test::counting_token(p)) << p;
  std::vector<int64_t> across(200);  // spans shard boundaries at 150, 300
  stream.copy(120, 200, across.data());
  EXPECT_TRUE(std::equal(across.begin(), across.end(), all.begin() + 120));
  EXPECT_NO_THROW(stream.verify(2));
}

TEST(Dataset, ManifestRoundTrips) {
  TempDir dir;
  const Manifest written = test::write_counting_dataset(dir.path(), 500, 50, 2, 100);
  const Manifest read = read_manifest(dir.path());
  EXPECT_EQ(manifest_json(read), manifest_json(written));
  EXPECT_EQ(read.val.tokens, 100u);
}

TEST(Dataset, ShardsThatDoNotMatchTheManifestAreRefused) {
  TempDir dir;
  Manifest m = test::write_counting_dataset(dir.path(), 300, 50, 3);
  const std::string shard1 = (dir.path() / "train_1.bin").string();
  {  // a shard made with another tokenizer
    Manifest other = m;
    other.tokenizer.fingerprint ^= 1;
    EXPECT_EQ(test::user_error_of([&] { TokenStream(dir.path(), other, Split::train); }),
              (dir.path() / "train_0.bin").string() +
                  ": made with another tokenizer: fingerprint 1234abcd5678ef00 does not match the manifest's "
                  "1234abcd5678ef01");
  }
  {
    Manifest other = m;
    other.train.shards[1].tokens = 149;
    EXPECT_EQ(test::user_error_of([&] { TokenStream(dir.path(), other, Split::train); }),
              shard1 + ": token count 150 does not match the manifest's 149");
  }
  fs::remove(shard1);
  EXPECT_NE(test::user_error_of([&] { TokenStream(dir.path(), m, Split::train); }).find(shard1 + ": cannot open shard"),
            std::string::npos);
}

TEST(Dataset, BadManifestsNameTheFieldAtFault) {
  TempDir dir;
  test::write_counting_dataset(dir.path(), 300);
  const std::string file = (dir.path() / "manifest.json").string();
  const std::string good = read_file(file);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    text.replace(text.find(from), from.size(), to);
    write_file_atomic(file, text);
    return test::user_error_of([&] { read_manifest(dir.path()); });
  };
  EXPECT_EQ(with("\"tokens\": 300", "\"tokens\": \"many\""), file + ": train.tokens: expected a non-negative integer");
  EXPECT_EQ(with("\"vocab_size\"", "\"vocab\""), file + ": tokenizer.vocab_size: missing");
  EXPECT_EQ(with("\"version\": 1", "\"version\": 9"), file + ": version: 9 is not supported (this gqe reads version 1)");
  EXPECT_EQ(with("{", "{{"), file + ": invalid JSON at byte 2");
  fs::remove(file);
  EXPECT_NE(test::user_error_of([&] { read_manifest(dir.path()); }).find("no manifest.json"), std::string::npos);
  EXPECT_NE(test::user_error_of([&] { read_manifest(dir.path() / "nope"); }).find("dataset directory not found"), std::string::npos);
}

}  // namespace
}  // namespace gqe

namespace gqe {
namespace {

TEST(Files, RemoveTreeRemovesEverythingButFollowsNoLink) {
  test::TempDir dir;
  const auto outside = dir.path() / "outside";
  std::filesystem::create_directories(outside);
  dir.write("outside/keep.txt", "kept");
  const auto tree = dir.path() / "tree";
  std::filesystem::create_directories(tree / "a" / "b");
  dir.write("tree/a/b/deep.bin", "x");
  dir.write("tree/top.txt", "y");
  std::filesystem::create_directory_symlink(outside, tree / "a" / "link");
  remove_tree(tree);
  EXPECT_FALSE(std::filesystem::exists(tree));
  EXPECT_EQ(read_file(outside / "keep.txt"), "kept");
  remove_tree(tree);  // already gone: nothing to do
}

}  // namespace
}  // namespace gqe
