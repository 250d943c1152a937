// Reading documents: input expansion, the text, JSON Lines and Parquet formats, gzip and zstd,
// UTF-8, and errors that name the file and line (or row).
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>


#include "common/error.h"
#include "common/files.h"
#include "data/text_input.h"
#include "parquet_writer.h"
#include "test_util.h"

namespace gqe {
namespace {

using test::TempDir;

std::string write_gz(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = (dir.path() / name).string();
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
  gzclose(f);
  return path;
}

// zstd with content checksums, as several frames (what concatenated .zst files and multi-threaded
// zstd write).
std::string write_zst(const TempDir& dir, const std::string& name, const std::string& text, size_t frames = 3) {
  std::string out;
  for (size_t f = 0; f < frames; ++f) {
    const std::string part = text.substr(text.size() * f / frames, text.size() * (f + 1) / frames - text.size() * f / frames);
    std::string frame(ZSTD_compressBound(part.size()), '\0');
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);  // as the zstd tool writes: corruption is detectable
    frame.resize(ZSTD_compress2(cctx, frame.data(), frame.size(), part.data(), part.size()));
    ZSTD_freeCCtx(cctx);
    out += frame;
  }
  const std::string path = (dir.path() / name).string();
  write_file_atomic(path, out);
  return path;
}

// Every document's text and starting line.
std::vector<std::pair<std::string, uint64_t>> read_all(const std::vector<std::string>& files, InputOptions options) {
  DocumentReader reader(files, options);
  std::vector<std::pair<std::string, uint64_t>> docs;
  while (auto doc = reader.next()) docs.emplace_back(document_text(*doc, options, reader.files()), doc->line);
  return docs;
}

TEST(TextInput, InputsExpandFilesDirectoriesAndGlobsInOrder) {
  TempDir dir;
  const std::string b = dir.write("b.txt", "b"), a = dir.write("a.txt", "a");
  const std::string d2 = dir.write("d/z/2.txt", "2"), d1 = dir.write("d/1.txt", "1");
  dir.write("d/.hidden", "x");
  dir.write("d/.cache/huggingface/download/x.parquet.metadata", "x");  // what `hf download` leaves
  const auto files = expand_inputs({b, (dir.path() / "d").string(), (dir.path() / "*.txt").string()});
  EXPECT_EQ(files, (std::vector<std::string>{b, d1, d2, a, b}));
  EXPECT_EQ(test::user_error_of([&] { expand_inputs({(dir.path() / "nope.txt").string()}); }),
            (dir.path() / "nope.txt").string() + ": no such file or directory");
  EXPECT_EQ(test::user_error_of([&] { expand_inputs({(dir.path() / "*.json").string()}); }),
            (dir.path() / "*.json").string() + ": no file matches this pattern");
}

TEST(TextInput, PlainTextIsOneDocumentPerFileOrPerBlankLineBlock) {
  TempDir dir;
  const std::string f = dir.write("t.txt", "First para\nstill first.\n\n\n  \nSecond para.\r\n\r\nThird\n");
  InputOptions per_file;
  EXPECT_EQ(read_all({f}, per_file),
            (std::vector<std::pair<std::string, uint64_t>>{{"First para\nstill first.\n\n\n  \nSecond para.\r\n\r\nThird", 1}}));
  InputOptions blocks;
  blocks.boundary = DocBoundary::blank_line;
  EXPECT_EQ(read_all({f}, blocks), (std::vector<std::pair<std::string, uint64_t>>{
                                       {"First para\nstill first.", 1}, {"Second para.\r", 6}, {"Third", 8}}));
  // gzip is read transparently, and an empty file gives no document.
  const std::string gz = write_gz(dir, "t.txt.gz", "zipped\n\nparts");
  dir.write("empty.txt", "");
  EXPECT_EQ(read_all({gz, (dir.path() / "empty.txt").string()}, blocks),
            (std::vector<std::pair<std::string, uint64_t>>{{"zipped", 1}, {"parts", 3}}));
}

TEST(TextInput, JsonLinesTakeTheNamedField) {
  TempDir dir;
  const std::string f = dir.write("r.jsonl", "{\"text\": \"a\\nb\", \"id\": 1}\n\n{\"body\": \"x\", \"text\": \"ü ✓\"}\n");
  EXPECT_EQ(read_all({f}, {}), (std::vector<std::pair<std::string, uint64_t>>{{"a\nb", 1}, {"ü ✓", 3}}));
  InputOptions body;
  body.text_field = "body";
  const std::string g = write_gz(dir, "r.json.gz", "{\"body\": \"zipped json\"}");
  EXPECT_EQ(read_all({g}, body), (std::vector<std::pair<std::string, uint64_t>>{{"zipped json", 1}}));
  // --format overrides the file name.
  const std::string t = dir.write("r.txt", "{\"text\": \"forced\"}\n");
  InputOptions forced;
  forced.format = InputFormat::jsonl;
  EXPECT_EQ(read_all({t}, forced), (std::vector<std::pair<std::string, uint64_t>>{{"forced", 1}}));
}

TEST(TextInput, BadRecordsNameFileAndLine) {
  TempDir dir;
  auto error_reading = [&](const std::string& name, const std::string& text, InputOptions o = {}) {
    const std::string f = dir.write(name, text);
    return test::user_error_of([&] { read_all({f}, o); });
  };
  const std::string p = dir.path().string() + "/";
  EXPECT_EQ(error_reading("a.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n"),
            p + "a.jsonl:2: no \"text\" field (choose the field with --text-field)");
  EXPECT_EQ(error_reading("b.jsonl", "{\"text\": 5}\n"), p + "b.jsonl:1: \"text\" is not a string");
  EXPECT_EQ(error_reading("c.jsonl", "[1, 2]\n"), p + "c.jsonl:1: expected a JSON object");
  EXPECT_EQ(error_reading("d.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n"), p + "d.jsonl:2: invalid JSON at byte 13 of the line");
  EXPECT_EQ(error_reading("e.txt", "fine\nbad \xff byte\n"), p + "e.txt:2: invalid UTF-8 at byte 5 of the line");
  EXPECT_EQ(error_reading("f.jsonl", "{\"text\": \"\xc3\x28\"}\n"), p + "f.jsonl:1: invalid UTF-8 at byte 11 of the line");
}

TEST(TextInput, TruncatedGzipIsReportedNotSilentlyShortened) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "line " + std::to_string(i) + " of some text that compresses\n";
  const std::string gz = write_gz(dir, "big.txt.gz", text);
  std::filesystem::resize_file(gz, std::filesystem::file_size(gz) / 2);
  EXPECT_NE(test::user_error_of([&] { read_all({gz}, {}); }).find(gz + ": corrupt or truncated gzip data near line"),
            std::string::npos);
}

// zstd beside gzip: the same documents as the plain file (JSON Lines and text); a truncated or
// corrupt file is one error naming it, never a shorter input.
TEST(TextInput, ZstdReadsAsThePlainFileAndBadDataIsAnError) {
  TempDir dir;
  std::string jsonl, text;
  for (int i = 0; i < 3000; ++i) jsonl += "{\"text\": \"document " + std::to_string(i) + " \u00e9t\u00e9 \\u00fc\"}\n";
  for (int i = 0; i < 3000; ++i) text += "paragraph " + std::to_string(i) + (i % 7 == 0 ? "\n\n" : "\n");
  InputOptions blocks;
  blocks.boundary = DocBoundary::blank_line;
  const std::string plain_json = dir.write("a.jsonl", jsonl), plain_text = dir.write("b.txt", text);
  EXPECT_EQ(read_all({write_zst(dir, "a.jsonl.zst", jsonl)}, {}), read_all({plain_json}, {}));
  EXPECT_EQ(read_all({write_zst(dir, "b.txt.zst", text)}, blocks), read_all({plain_text}, blocks));

  const std::string truncated = write_zst(dir, "t.jsonl.zst", jsonl, 1);
  std::filesystem::resize_file(truncated, std::filesystem::file_size(truncated) - 10);
  EXPECT_NE(test::user_error_of([&] { read_all({truncated}, {}); }).find(truncated + ": truncated zstd data near line "),
            std::string::npos);
  std::string bytes = read_file(write_zst(dir, "c.jsonl.zst", jsonl, 1));
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 8; ++i) bytes[i] = static_cast<char>(~bytes[i]);
  const std::string corrupt = dir.write("c.jsonl.zst", bytes);
  EXPECT_NE(test::user_error_of([&] { read_all({corrupt}, {}); }).find(corrupt + ": corrupt zstd data near line "),
            std::string::npos);
}

// Parquet: the text column row by row across row groups gives the documents of the same records
// as JSON Lines (a row's number is the line's); a null is an empty document; any of Arrow's string
// layouts (dictionaries too) and compressions; --format parquet for a file named otherwise.
TEST(TextInput, ParquetReadsAsTheSameDocumentsAsJsonLines) {
  TempDir dir;
  std::vector<std::optional<std::string>> texts;
  for (int i = 0; i < 2500; ++i) {
    std::optional<std::string> t;
    if (i % 97 != 5) t = "doc " + std::to_string(i) + " \u00e9t\u00e9 \U0001F642 \u706F\u53F0\nline two\t" + std::string(i % 13, ' ');
    texts.push_back(t);
  }
  const auto expected = read_all({dir.write("a.jsonl", test::jsonl_of(texts))}, {});
  ASSERT_EQ(expected.size(), 2500u);
  const std::string zstd = (dir.path() / "zstd.parquet").string(), large = (dir.path() / "large.parquet").string(),
                    plain = (dir.path() / "plain.bin").string();
  test::write_parquet(zstd, texts, {.group_rows = 700});
  test::write_parquet(large, texts, {.group_rows = 1000, .large_strings = true, .compression = parquet::Compression::SNAPPY});
  test::write_parquet(plain, texts, {.group_rows = 2500, .binary = true, .checksums = false,
                                     .compression = parquet::Compression::UNCOMPRESSED});
  EXPECT_EQ(read_all({zstd}, {}), expected);
  EXPECT_EQ(read_all({large}, {}), expected);
  const std::string categorical = (dir.path() / "categorical.parquet").string();
  test::write_parquet(categorical, texts, {.group_rows = 900, .dictionary = true});
  EXPECT_EQ(read_all({categorical}, {}), expected);
  InputOptions forced;
  forced.format = InputFormat::parquet;
  EXPECT_EQ(read_all({plain}, forced), expected);
  InputOptions body;
  body.text_field = "body";
  const std::string named = (dir.path() / "body.parquet").string();
  test::write_parquet(named, {"only row"}, {.column = "body"});
  EXPECT_EQ(read_all({named}, body), (std::vector<std::pair<std::string, uint64_t>>{{"only row", 1}}));
}

// A bad Parquet file, column or value is one error naming the file, never fewer documents.
TEST(TextInput, BadParquetIsOneErrorNamingTheFile) {
  TempDir dir;
  std::vector<std::optional<std::string>> texts;
  for (int i = 0; i < 3000; ++i) texts.push_back("row number " + std::to_string(i) + " of the file");
  const std::string pq = (dir.path() / "a.parquet").string();
  test::write_parquet(pq, texts, {.group_rows = 1000, .compression = parquet::Compression::UNCOMPRESSED});
  InputOptions body;
  body.text_field = "body";
  EXPECT_EQ(test::user_error_of([&] { read_all({pq}, body); }),
            pq + ": no column \"body\" (columns: id, text; choose one with --text-field)");
  InputOptions ids;
  ids.text_field = "id";
  EXPECT_EQ(test::user_error_of([&] { read_all({pq}, ids); }), pq + ": column \"id\" holds INT64, not text");

  std::string bytes = read_file(pq);
  const size_t at = bytes.find("row number 1500 ");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 4] = 'X';  // the page's CRC no longer matches
  const std::string damaged = dir.write("damaged.parquet", bytes);
  EXPECT_NE(test::user_error_of([&] { read_all({damaged}, {}); }).find(damaged + ": corrupt Parquet data in row group 2 of 3 ("),
            std::string::npos);
  const std::string truncated = dir.write("truncated.parquet", bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(test::user_error_of([&] { read_all({truncated}, {}); }).find(truncated + ": not a readable Parquet file ("),
            std::string::npos);
  const std::string json = dir.write("records.parquet", "{\"text\": \"JSON Lines, misnamed\"}\n");
  EXPECT_NE(test::user_error_of([&] { read_all({json}, {}); }).find(json + ": not a readable Parquet file ("), std::string::npos);

  const std::string binary = (dir.path() / "binary.parquet").string();
  test::write_parquet(binary, {"fine", std::nullopt, "fine", "bro\xffken"}, {.binary = true});
  EXPECT_EQ(test::user_error_of([&] { read_all({binary}, {}); }), binary + ": row 4: invalid UTF-8 at byte 4 of the text");
}

TEST(TextInput, Utf8ValidatorFollowsTheStandard) {
  EXPECT_FALSE(invalid_utf8_at("plain ascii"));
  EXPECT_FALSE(invalid_utf8_at("é ü 灯台 🙂"));
  EXPECT_EQ(invalid_utf8_at("ab\x80"), 2u);               // stray continuation byte
  EXPECT_EQ(invalid_utf8_at("a\xc0\xaf"), 1u);            // overlong '/'
  EXPECT_EQ(invalid_utf8_at("\xed\xa0\x80"), 0u);         // UTF-16 surrogate
  EXPECT_EQ(invalid_utf8_at("\xf4\x90\x80\x80"), 0u);     // above U+10FFFF
  EXPECT_EQ(invalid_utf8_at("ok \xe2\x82"), 3u);          // cut short
}

}  // namespace
}  // namespace gqe
