#include "data/text_input.h"

#include <glob.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/parquet_input.h"

namespace fs = std::filesystem;

namespace gqe {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_jsonl_name(std::string name) {
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  if (ends_with(name, ".zst")) name.resize(name.size() - 4);
  return ends_with(name, ".jsonl") || ends_with(name, ".ndjson") || ends_with(name, ".json");
}

bool is_parquet_name(std::string_view name) { return ends_with(name, ".parquet"); }

bool blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  for (const std::string& arg : args) {
    std::vector<std::string> found;
    if (arg.find_first_of("*?[") != std::string::npos && !fs::exists(arg)) {
      glob_t g{};
      const int rc = ::glob(arg.c_str(), 0, nullptr, &g);
      for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i)
        if (fs::is_regular_file(g.gl_pathv[i])) found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
      if (found.empty()) throw UserError(fmt::format("{}: no file matches this pattern", arg));
    } else if (fs::is_directory(arg)) {
      // Hidden files and directories are skipped: .git, or the .cache/ that `hf download` leaves.
      for (auto it = fs::recursive_directory_iterator(arg); it != fs::recursive_directory_iterator(); ++it) {
        const bool hidden = it->path().filename().string()[0] == '.';
        if (hidden && it->is_directory()) it.disable_recursion_pending();
        else if (!hidden && it->is_regular_file()) found.push_back(it->path().string());
      }
      if (found.empty()) throw UserError(fmt::format("{}: directory holds no files", arg));
    } else if (fs::exists(arg)) {
      found.push_back(arg);
    } else {
      throw UserError(fmt::format("{}: no such file or directory", arg));
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  if (files.empty()) throw UserError("no input files given");
  return files;
}

DocumentReader::DocumentReader(std::vector<std::string> files, InputOptions options)
    : files_(std::move(files)), options_(std::move(options)) {
  for (const auto& f : files_) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    total_bytes_ += ec ? 0 : size;
  }
}

DocumentReader::~DocumentReader() { close_file(); }

void DocumentReader::close_file() {
  parquet_.reset();
  if (gz_) gzclose(static_cast<gzFile>(gz_));
  gz_ = nullptr;
  if (zst_) ZSTD_freeDStream(static_cast<ZSTD_DStream*>(zst_));
  zst_ = nullptr;
  if (zst_file_) std::fclose(zst_file_);
  zst_file_ = nullptr;
}

bool DocumentReader::open_next_file() {
  close_file();
  bytes_done_ += bytes_current_;
  bytes_current_ = 0;
  if (next_file_ >= files_.size()) return false;
  current_ = static_cast<uint32_t>(next_file_++);
  const std::string& name = files_[current_];
  if (options_.format == InputFormat::parquet || (options_.format == InputFormat::auto_ && is_parquet_name(name))) {
    parquet_ = std::make_unique<ParquetColumnReader>(name, options_.text_field);
    std::error_code ec;
    parquet_size_ = fs::file_size(name, ec);
    return true;
  }
  if (ends_with(name, ".zst")) {
    zst_file_ = std::fopen(name.c_str(), "rb");
    if (!zst_file_) throw UserError(fmt::format("{}: cannot read ({})", name, std::strerror(errno ? errno : EIO)));
    zst_ = ZSTD_createDStream();
    ZSTD_initDStream(static_cast<ZSTD_DStream*>(zst_));
    zst_in_.assign(ZSTD_DStreamInSize(), '\0');
    zst_in_.resize(0);
    zst_in_pos_ = 0;
    zst_pending_ = 0;
  } else {
    gz_ = gzopen(name.c_str(), "rb");  // reads plain files as they are
    if (!gz_) throw UserError(fmt::format("{}: cannot read ({})", name, std::strerror(errno ? errno : EIO)));
    gzbuffer(static_cast<gzFile>(gz_), 1 << 18);
  }
  json_ = options_.format == InputFormat::jsonl || (options_.format == InputFormat::auto_ && is_jsonl_name(name));
  line_ = 0;
  buffer_.clear();
  buffer_pos_ = 0;
  eof_ = false;
  return true;
}

bool DocumentReader::read_line(std::string& line) {
  line.clear();
  for (;;) {
    const auto nl = buffer_.find('\n', buffer_pos_);
    if (nl != std::string::npos) {
      line.append(buffer_, buffer_pos_, nl - buffer_pos_);
      buffer_pos_ = nl + 1;
      ++line_;
      return true;
    }
    line.append(buffer_, buffer_pos_, std::string::npos);
    buffer_.clear();
    buffer_pos_ = 0;
    if (eof_) {
      if (line.empty()) return false;
      ++line_;  // last line without a newline
      return true;
    }
    buffer_.resize(1 << 20);
    const size_t n = read_chunk(buffer_.data(), buffer_.size());
    buffer_.resize(n);
    if (n == 0) eof_ = true;
  }
}

size_t DocumentReader::read_chunk(char* out, size_t capacity) {
  if (gz_) {
    const auto gz = static_cast<gzFile>(gz_);
    const int n = gzread(gz, out, static_cast<unsigned>(capacity));
    int err = Z_OK;
    const char* msg = gzerror(gz, &err);
    if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
      throw UserError(fmt::format("{}: corrupt or truncated gzip data near line {} ({})", files_[current_], line_ + 1,
                                  err == Z_ERRNO ? std::strerror(errno) : msg));
    bytes_current_ = static_cast<uint64_t>(gzoffset(gz));
    return static_cast<size_t>(n);
  }
  // zstd: refill the compressed input as it is consumed; every frame must end where the file does.
  const auto stream = static_cast<ZSTD_DStream*>(zst_);
  ZSTD_outBuffer output{out, capacity, 0};
  while (output.pos == 0) {
    if (zst_in_pos_ == zst_in_.size()) {
      zst_in_.resize(ZSTD_DStreamInSize());
      const size_t got = std::fread(zst_in_.data(), 1, zst_in_.size(), zst_file_);
      if (std::ferror(zst_file_))
        throw UserError(fmt::format("{}: cannot read ({})", files_[current_], std::strerror(errno ? errno : EIO)));
      zst_in_.resize(got);
      zst_in_pos_ = 0;
      bytes_current_ += got;
      if (got == 0) {
        if (zst_pending_ != 0)
          throw UserError(fmt::format("{}: truncated zstd data near line {} (the file ends inside a frame)", files_[current_],
                                      line_ + 1));
        return 0;
      }
    }
    ZSTD_inBuffer input{zst_in_.data(), zst_in_.size(), zst_in_pos_};
    zst_pending_ = ZSTD_decompressStream(stream, &output, &input);
    zst_in_pos_ = input.pos;
    if (ZSTD_isError(zst_pending_))
      throw UserError(fmt::format("{}: corrupt zstd data near line {} ({})", files_[current_], line_ + 1,
                                  ZSTD_getErrorName(zst_pending_)));
  }
  return output.pos;
}

std::optional<RawDocument> DocumentReader::next() {
  std::string line;
  for (;;) {
    if (!gz_ && !zst_ && !parquet_ && !open_next_file()) return std::nullopt;
    RawDocument doc;
    doc.file = current_;
    if (parquet_) {
      std::optional<std::string> text;
      if (parquet_->next(text)) {
        doc.data = text ? std::move(*text) : std::string();
        doc.line = parquet_->row();
        doc.source = RawDocument::Source::parquet;
        bytes_current_ = parquet_->rows() ? parquet_size_ * doc.line / parquet_->rows() : 0;
        return doc;
      }
      bytes_current_ = parquet_size_;
    } else if (json_) {
      while (read_line(line)) {
        if (blank(line)) continue;  // blank lines between records are allowed
        doc.data = std::move(line);
        doc.line = line_;
        doc.source = RawDocument::Source::json;
        return doc;
      }
    } else if (options_.boundary == DocBoundary::file) {
      bool any = false;
      doc.line = 1;
      while (read_line(line)) {
        if (any) doc.data += '\n';
        doc.data += line;
        any = true;
      }
      close_file();
      if (any) return doc;
      continue;
    } else {
      bool any = false;
      while (read_line(line)) {
        if (blank(line)) {
          if (any) return doc;
          continue;
        }
        if (!any) doc.line = line_;
        else doc.data += '\n';
        doc.data += line;
        any = true;
      }
      if (any) return doc;
    }
    close_file();
  }
}

std::optional<size_t> invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;  // overlong, too big, surrogate
    i += len;
  }
  return std::nullopt;
}

std::string document_text(const RawDocument& doc, const InputOptions& options, const std::vector<std::string>& files) {
  const std::string& file = files[doc.file];
  if (doc.source == RawDocument::Source::parquet) {
    if (auto bad = invalid_utf8_at(doc.data))
      throw UserError(fmt::format("{}: row {}: invalid UTF-8 at byte {} of the text", file, doc.line, *bad + 1));
    return doc.data;
  }
  if (auto bad = invalid_utf8_at(doc.data)) {
    const uint64_t line = doc.line + static_cast<uint64_t>(std::count(doc.data.begin(), doc.data.begin() + *bad, '\n'));
    const size_t newline = *bad == 0 ? std::string::npos : doc.data.rfind('\n', *bad - 1);
    const size_t column = newline == std::string::npos ? *bad : *bad - newline - 1;
    throw UserError(fmt::format("{}:{}: invalid UTF-8 at byte {} of the line", file, line, column + 1));
  }
  if (doc.source == RawDocument::Source::text) return doc.data;
  // A .json file holding one JSON array (a common export) is not JSON Lines: say how to convert it.
  const size_t first = doc.data.find_first_not_of(" \t\r");
  const bool json_name = file.ends_with(".json") || file.ends_with(".json.gz") || file.ends_with(".json.zst");
  if (json_name && first != std::string::npos && doc.data[first] == '[')
    throw UserError(fmt::format("{}:{}: a JSON array, but .json files are read as JSON Lines: one object per line (e.g. "
                                "jq -c '.[]' {} > out.jsonl)",
                                file, doc.line, file));
  nlohmann::json record;
  try {
    record = nlohmann::json::parse(doc.data);
  } catch (const nlohmann::json::parse_error& e) {
    throw UserError(fmt::format("{}:{}: invalid JSON at byte {} of the line", file, doc.line, e.byte));
  }
  if (!record.is_object()) throw UserError(fmt::format("{}:{}: expected a JSON object", file, doc.line));
  const auto it = record.find(options.text_field);
  if (it == record.end())
    throw UserError(fmt::format("{}:{}: no \"{}\" field (choose the field with --text-field)", file, doc.line,
                                options.text_field));
  if (!it->is_string()) throw UserError(fmt::format("{}:{}: \"{}\" is not a string", file, doc.line, options.text_field));
  return it->get<std::string>();
}

}  // namespace gqe
