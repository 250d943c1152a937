// Tokenizer training and the parallel encoder, with a real sentencepiece model trained on a small
// hand-written fixture: exact tokens per document, round trips, thread-count independence, the
// train/val split, and failures that leave nothing behind.
#include <gtest/gtest.h>

#include <zstd.h>

#include <filesystem>

#include "common/error.h"
#include "common/files.h"
#include "data/dataset.h"
#include "data/encode.h"
#include "data/tokenizer.h"
#include "parquet_writer.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::string fixture() { return std::string(GQE_SOURCE_DIR) + "/tests/data/prose.txt"; }

// One tokenizer for the whole suite (training takes a moment).
class Encode : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    TokenizerTraining t;
    t.files = {fixture()};
    t.input.boundary = DocBoundary::blank_line;
    t.vocab_size = 400;
    t.out_prefix = (dir_->path() / "tok").string();
    train_tokenizer(t);
    model_ = t.out_prefix + ".model";
  }
  static void TearDownTestSuite() { delete dir_; }

  // A corpus in three files and two formats: the fixture's paragraphs, a JSON Lines file with
  // many short documents (so that a small chunk size gives many work items), and a gzip of it.
  std::vector<std::string> corpus(const TempDir& dir) const {
    std::string jsonl;
    for (int i = 0; i < 300; ++i)
      jsonl += "{\"text\": \"record " + std::to_string(i) + ": the keeper counted " + std::to_string(i * 7) +
               " steps\\n\\tand slept.\"}\n";
    jsonl += "{\"text\": \"\"}\n";  // empty: skipped and counted
    return {fixture(), dir.write("records.jsonl", jsonl), dir.write("more.jsonl", "{\"text\": \"ünïcödé 🙂 灯台\"}\n")};
  }

  EncodeOptions options(const TempDir& dir, const std::string& out = "ds") const {
    EncodeOptions o;
    o.inputs = corpus(dir);
    o.input.boundary = DocBoundary::blank_line;
    o.tokenizer = model_;
    o.out_dir = (dir.path() / out).string();
    o.val_fraction = 0.2;
    o.threads = 3;
    o.progress = false;
    o.chunk_documents = 7;
    o.command = "test";
    return o;
  }

  // The documents' texts in input order.
  static std::vector<std::string> texts(const EncodeOptions& o) {
    DocumentReader reader(expand_inputs(o.inputs), o.input);
    std::vector<std::string> out;
    while (auto doc = reader.next()) {
      std::string text = document_text(*doc, o.input, reader.files());
      if (!text.empty()) out.push_back(text);
    }
    return out;
  }

  static std::vector<int32_t> stream_of(const fs::path& dir, Split split) {
    const TokenStream s(dir, read_manifest(dir), split);
    std::vector<int64_t> all(s.size());
    if (!all.empty()) s.copy(0, all.size(), all.data());
    return {all.begin(), all.end()};
  }

  static inline TempDir* dir_ = nullptr;
  static inline std::string model_;
};

TEST_F(Encode, TokenizerHasTheSpecialIdsAndRoundTripsText) {
  const Tokenizer tok(model_);
  EXPECT_EQ(tok.vocab_size(), 400u);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), 3);
  for (const std::string text : {"The lighthouse keeper wrote the same line.", "  two leading spaces",
                                 "tabs\tand\nnew lines\n\n", "Mme Léonie Dupré — “quoted”", "灯台守へ 🙂 never seen: ж",
                                 "trailing space ", "1891, 7.5 and 0x1F"}) {
    const auto ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text);
    for (int32_t id : ids) EXPECT_NE(id, tok.unk_id()) << text;  // byte fallback: nothing is unknown
  }
  EXPECT_NE(test::user_error_of([&] { tok.decode(std::vector<int32_t>{5, 400}); }).find("token id 400 (position 1) is outside the vocabulary of 400"),
            std::string::npos);
  EXPECT_LT(tok.encode("The lighthouse keeper").size(), std::string("The lighthouse keeper").size() / 2);  // it learned merges
}

// A long text is encoded in pieces (sentencepiece's cost grows faster than the input): the ids
// must be those of sentencepiece on the whole text, here its own spm_encode on one long line with
// runs of spaces, tabs, digits, punctuation and non-ASCII text around the cuts.
TEST_F(Encode, ALongTextEncodesAsOneWhole) {
  const std::string spm = "/usr/bin/spm_encode";
  if (!fs::exists(spm)) GTEST_SKIP() << "spm_encode (Debian's sentencepiece) is not installed";
  // The sample corpus's 4096-piece tokenizer (scripts/test.sh prepares it) has whole words, so a cut
  // inside one would show; the fixture's 400 pieces would hide most.
  const std::string sample = std::string(GQE_SOURCE_DIR) + "/data/sample/tokenizer.model";
  const std::string model = fs::exists(sample) ? sample : model_;
  const std::vector<std::string> words = {"the", "  keeper", "\t", "1891,", "Léonie", "   ", "灯台守", "🙂", "x", "—", "wrote.",
                                          "lighthouse", "understanding", "commandments", "Jerusalem"};
  std::string text;
  for (size_t i = 0; text.size() < 200000; ++i) text += words[(i * 7 + i / 3) % words.size()] + (i % 5 == 0 ? "  " : " ");
  TempDir dir;
  const std::string input = dir.write("long.txt", text + "\n");
  const auto r = test::run_command(spm + " --model " + model + " --output_format=id < " + input);
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<int32_t> expected;
  std::istringstream in(r.out);
  for (int32_t id; in >> id;) expected.push_back(id);
  const Tokenizer tokenizer(model);
  const auto ids = tokenizer.encode(text);
  ASSERT_EQ(ids.size(), expected.size());
  EXPECT_EQ(ids, expected);
  // Word by word through the cache (as encode's workers do), cold and then warm, with a cache so
  // small that it starts over many times: the same ids.
  WordCache cache(50);
  EXPECT_EQ(tokenizer.encode(text, &cache), expected);
  EXPECT_EQ(tokenizer.encode(text, &cache), expected);
}

// A model that does look across spaces (here a dummy prefix in front of the text with runs of
// spaces kept: a cut piece would get one too) is never cut: its ids stay those of the whole text,
// with or without a cache.
TEST_F(Encode, AModelThatLooksAcrossSpacesEncodesWholeTexts) {
  const std::string spm_train = "/usr/bin/spm_train", spm = "/usr/bin/spm_encode";
  if (!fs::exists(spm_train) || !fs::exists(spm)) GTEST_SKIP() << "Debian's sentencepiece tools are not installed";
  TempDir dir;
  const auto trained = test::run_command(spm_train + " --input " + fixture() + " --model_prefix " + (dir.path() / "d").string() +
                                         " --vocab_size 600 --model_type bpe --byte_fallback --normalization_rule_name identity"
                                         " --remove_extra_whitespaces false --add_dummy_prefix true");
  ASSERT_EQ(trained.status, 0) << trained.err;
  std::string text;
  for (int i = 0; text.size() < 70000; ++i) text += "the keeper  counted " + std::to_string(i) + " steps,  and slept. ";
  const std::string input = dir.write("long.txt", text + "\n");
  const auto r = test::run_command(spm + " --model " + (dir.path() / "d.model").string() + " --output_format=id < " + input);
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<int32_t> expected;
  std::istringstream in(r.out);
  for (int32_t id; in >> id;) expected.push_back(id);
  const Tokenizer tokenizer((dir.path() / "d.model").string());
  WordCache cache;
  EXPECT_EQ(tokenizer.encode(text), expected);
  EXPECT_EQ(tokenizer.encode(text, &cache), expected);
}

TEST_F(Encode, ShardsHoldSentencepiecesTokensOfEveryDocumentInOrder) {
  TempDir dir;
  const EncodeOptions o = options(dir);
  const EncodeSummary s = encode_dataset(o);
  const Tokenizer tok(model_);
  const std::vector<std::string> docs = texts(o);
  ASSERT_EQ(docs.size(), 12u + 300u + 1u);
  EXPECT_EQ(s.documents, docs.size());
  EXPECT_EQ(s.empty_documents, 1u);
  EXPECT_GT(s.val_documents, 30u);
  EXPECT_GT(s.train_documents, 200u);
  // Each document, in input order, is next in the train stream or next in the val stream.
  const auto train = stream_of(o.out_dir, Split::train), val = stream_of(o.out_dir, Split::val);
  size_t t = 0, v = 0;
  for (const std::string& text : docs) {
    std::vector<int32_t> expected = tok.encode(text);
    expected.push_back(tok.eos_id());
    auto matches = [&](const std::vector<int32_t>& stream, size_t at) {
      return at + expected.size() <= stream.size() && std::equal(expected.begin(), expected.end(), stream.begin() + static_cast<long>(at));
    };
    if (matches(train, t)) t += expected.size();
    else if (matches(val, v)) v += expected.size();
    else FAIL() << "document not found next in either split: " << text;
    // Round trip: text -> shards -> decode.
    EXPECT_EQ(tok.decode(std::span(expected).first(expected.size() - 1)), text);
  }
  EXPECT_EQ(t, train.size());
  EXPECT_EQ(v, val.size());
  const Manifest m = read_manifest(o.out_dir);
  EXPECT_EQ(m.tokenizer.fingerprint, tok.fingerprint());
  EXPECT_EQ(read_file(fs::path(o.out_dir) / "tokenizer.model"), tok.model_bytes());
  EXPECT_EQ(m.train.tokens, train.size());
  EXPECT_FALSE(fs::exists(o.out_dir + ".partial"));
}

TEST_F(Encode, OutputIsIdenticalForAnyThreadCount) {
  TempDir dir;
  EncodeOptions one = options(dir, "one"), many = options(dir, "many");
  one.threads = 1;
  many.threads = 5;
  one.shard_tokens = many.shard_tokens = 500;
  encode_dataset(one);
  encode_dataset(many);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(one.out_dir)) names.push_back(e.path().filename().string());
  EXPECT_GT(names.size(), 6u);
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    EXPECT_EQ(read_file(fs::path(one.out_dir) / name), read_file(fs::path(many.out_dir) / name));
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(many.out_dir), fs::directory_iterator()), static_cast<long>(names.size()));
}

TEST_F(Encode, ShardsCloseAtDocumentBoundaries) {
  TempDir dir;
  EncodeOptions o = options(dir);
  o.shard_tokens = 300;
  encode_dataset(o);
  const Manifest m = read_manifest(o.out_dir);
  ASSERT_GT(m.train.shards.size(), 3u);
  uint64_t documents = 0;
  for (const ShardEntry& e : m.train.shards) {
    const MappedShard shard((fs::path(o.out_dir) / e.file).string());
    EXPECT_EQ(shard.token(shard.size() - 1), 2u) << e.file << " ends inside a document";
    EXPECT_TRUE(e.tokens <= 300 || e.documents == 1) << e.file;
    documents += e.documents;
  }
  EXPECT_EQ(documents, m.train.documents);
}

TEST_F(Encode, TheSplitIsSeeded) {
  TempDir dir;
  EncodeOptions a = options(dir, "a"), b = options(dir, "b"), c = options(dir, "c"), none = options(dir, "none");
  c.seed = 7;
  none.val_fraction = 0;
  encode_dataset(a);
  encode_dataset(b);
  encode_dataset(c);
  encode_dataset(none);
  EXPECT_EQ(read_file(fs::path(a.out_dir) / "manifest.json"), read_file(fs::path(b.out_dir) / "manifest.json"));
  EXPECT_NE(stream_of(a.out_dir, Split::val), stream_of(c.out_dir, Split::val));
  const Manifest m = read_manifest(none.out_dir);
  EXPECT_EQ(m.val.tokens, 0u);
  EXPECT_TRUE(m.val.shards.empty());
}

// The same documents as JSON Lines, as Parquet (row groups, nulls) or as zstd-compressed JSON Lines
// make the same dataset, byte for byte, and the same tokenizer.
TEST_F(Encode, ParquetAndZstdMakeTheDatasetOfTheSameJsonLines) {
  TempDir dir;
  std::vector<std::optional<std::string>> rows;
  for (int i = 0; i < 400; ++i) {
    std::optional<std::string> t;
    if (i % 50 != 3) t = "record " + std::to_string(i) + ": the keeper counted " + std::to_string(i * 7) + " steps \u00fc\u00f1\u00ef\n\tand slept.";
    rows.push_back(t);
  }
  // Parquet's nulls are empty documents, skipped, as the JSON Lines twin's empty texts are.
  const std::string twin = test::jsonl_of(rows);
  EncodeOptions json = options(dir, "json"), parquet = options(dir, "parquet"), zstd = options(dir, "zstd");
  json.inputs = {dir.write("records.jsonl", twin)};
  const std::string pq = (dir.path() / "records.parquet").string();
  test::write_parquet(pq, rows, {.group_rows = 64});
  parquet.inputs = {pq};
  zstd.inputs = {dir.write("records.jsonl.zst", "")};
  {
    std::string frame(ZSTD_compressBound(twin.size()), '\0');
    frame.resize(ZSTD_compress(frame.data(), frame.size(), twin.data(), twin.size(), 3));
    write_file_atomic(zstd.inputs[0], frame);
  }
  const EncodeSummary a = encode_dataset(json), b = encode_dataset(parquet), c = encode_dataset(zstd);
  EXPECT_EQ(b.empty_documents, 8u);
  EXPECT_EQ(a.train_tokens + a.val_tokens, b.train_tokens + b.val_tokens);
  for (const EncodeOptions* o : {&parquet, &zstd}) {
    EXPECT_EQ(stream_of(o->out_dir, Split::train), stream_of(json.out_dir, Split::train)) << o->out_dir;
    EXPECT_EQ(stream_of(o->out_dir, Split::val), stream_of(json.out_dir, Split::val)) << o->out_dir;
  }
  EXPECT_EQ(read_manifest(zstd.out_dir).train.shards.front().checksum, read_manifest(json.out_dir).train.shards.front().checksum);
  EXPECT_EQ(c.documents, a.documents);

  TokenizerTraining from_json, from_parquet;
  from_json.files = json.inputs;
  from_parquet.files = parquet.inputs;
  from_json.vocab_size = from_parquet.vocab_size = 300;
  from_json.out_prefix = (dir.path() / "json_tok").string();
  from_parquet.out_prefix = (dir.path() / "parquet_tok").string();
  train_tokenizer(from_json);
  train_tokenizer(from_parquet);
  EXPECT_EQ(read_file(from_parquet.out_prefix + ".model"), read_file(from_json.out_prefix + ".model"));
}

TEST_F(Encode, BadInputLeavesNothingBehind) {
  TempDir dir;
  EncodeOptions o = options(dir);
  std::string records;
  for (int i = 0; i < 100; ++i) records += "{\"text\": \"fine " + std::to_string(i) + "\"}\n";
  const std::string bad = dir.write("bad.jsonl", records + "{\"text\": \"bro\xffken\"}\n" + records);
  o.inputs = {fixture(), bad};
  EXPECT_EQ(test::user_error_of([&] { encode_dataset(o); }), bad + ":101: invalid UTF-8 at byte 14 of the line");
  EXPECT_FALSE(fs::exists(o.out_dir));
  EXPECT_FALSE(fs::exists(o.out_dir + ".partial"));

  o.inputs = {fixture(), (dir.path() / "missing.txt").string()};
  EXPECT_EQ(test::user_error_of([&] { encode_dataset(o); }), (dir.path() / "missing.txt").string() + ": no such file or directory");

  o.inputs = {dir.write("empty.jsonl", "{\"text\": \"\"}\n")};
  EXPECT_EQ(test::user_error_of([&] { encode_dataset(o); }), "the inputs hold no documents (every file or record is empty)");
  EXPECT_FALSE(fs::exists(o.out_dir + ".partial"));

  o.inputs = corpus(dir);
  o.tokenizer = fixture();
  EXPECT_NE(test::user_error_of([&] { encode_dataset(o); }).find(fixture() + ": not a sentencepiece model"), std::string::npos);
}

TEST_F(Encode, AnExistingDatasetIsReplacedOnlyOnRequestAndOnlyOnSuccess) {
  TempDir dir;
  EncodeOptions o = options(dir);
  encode_dataset(o);
  const std::string before = read_file(fs::path(o.out_dir) / "manifest.json");
  EXPECT_EQ(test::user_error_of([&] { encode_dataset(o); }), o.out_dir + ": already exists (use --overwrite to replace it)");
  o.overwrite = true;
  o.inputs = {dir.write("broken.jsonl", "{\"nope\": 1}\n")};
  EXPECT_NE(test::user_error_of([&] { encode_dataset(o); }).find("no \"text\" field"), std::string::npos);
  EXPECT_EQ(read_file(fs::path(o.out_dir) / "manifest.json"), before);  // the old dataset is intact
  o.inputs = {fixture()};
  encode_dataset(o);
  EXPECT_NE(read_file(fs::path(o.out_dir) / "manifest.json"), before);
  EXPECT_FALSE(fs::exists(o.out_dir + ".old"));
}

}  // namespace
}  // namespace gqe
