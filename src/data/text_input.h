// Documents from input files for the tokenizer and the encoder: plain text (one document per file,
// or per blank-line-separated block) or JSON Lines with a named text field, each optionally gzip- or
// zstd-compressed, and Parquet with a named text column; inputs given as files, directories
// (walked recursively, sorted) or glob patterns. Errors name the file and line (or row).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gqe {

class ParquetColumnReader;

enum class InputFormat { auto_, text, jsonl, parquet };
enum class DocBoundary { file, blank_line };

struct InputOptions {
  InputFormat format = InputFormat::auto_;  // auto: .jsonl/.ndjson/.json(.gz|.zst) are JSON Lines,
                                             // .parquet is Parquet, the rest text
  DocBoundary boundary = DocBoundary::file;  // plain text only
  std::string text_field = "text";           // JSON Lines' field, Parquet's column
};

// Files named by `args` (files, directories, glob patterns), in argument order, each directory or
// pattern sorted by path. Throws UserError for a path that does not exist or a pattern that
// matches nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& args);

// A document as read: for JSON Lines, the raw line (parsed later, in parallel, by document_text).
struct RawDocument {
  enum class Source : uint8_t { text, json, parquet };
  std::string data;    // a Parquet null is an empty document
  uint32_t file = 0;   // index into the reader's file list
  uint64_t line = 0;   // 1-based line where the document starts; for Parquet, its row
  Source source = Source::text;
};

// Reads documents in input order.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, InputOptions options);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // The next document, or nothing at the end. Throws UserError for an unreadable or corrupt file.
  std::optional<RawDocument> next();
  const std::vector<std::string>& files() const { return files_; }
  uint64_t bytes_read() const { return bytes_done_ + bytes_current_; }  // of the files as stored
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  bool open_next_file();
  bool read_line(std::string& line);  // false at end of the current file
  size_t read_chunk(char* out, size_t capacity);  // decompressed bytes of the current file; 0 at its end
  void close_file();

  std::vector<std::string> files_;
  InputOptions options_;
  std::unique_ptr<ParquetColumnReader> parquet_;
  uint64_t parquet_size_ = 0;  // of the file, for bytes_read()
  size_t next_file_ = 0;
  uint32_t current_ = 0;
  void* gz_ = nullptr;        // gzFile: gzip, and plain files as they are
  std::FILE* zst_file_ = nullptr;  // .zst: the file and its decompression stream
  void* zst_ = nullptr;       // ZSTD_DStream
  std::string zst_in_;
  size_t zst_in_pos_ = 0;
  size_t zst_pending_ = 0;    // the last ZSTD_decompressStream result: 0 at a frame's end
  bool json_ = false;
  uint64_t line_ = 0;
  std::string buffer_;
  size_t buffer_pos_ = 0;
  bool eof_ = false;
  uint64_t bytes_done_ = 0, bytes_current_ = 0, total_bytes_ = 0;
};

// The text of a document: checks UTF-8, and for JSON Lines parses the line and takes the text
// field. Throws UserError "file:line: ...".
std::string document_text(const RawDocument& doc, const InputOptions& options, const std::vector<std::string>& files);

// Offset of the first byte that is not valid UTF-8, or nothing when all of it is.
std::optional<size_t> invalid_utf8_at(std::string_view text);

}  // namespace gqe
