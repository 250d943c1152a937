// Token shards (docs/data-format.md): a 256-byte little-endian header, then `token_count` tokens of
// `bytes_per_token` bytes. Documents follow each other, each ended by the EOS id. Writing streams
// tokens to disk with a running checksum; reading maps the file and checks it before use.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/checksum.h"
#include "common/files.h"

namespace gqe {

inline constexpr char kShardMagic[8] = {'G', 'Q', 'E', 'S', 'H', 'A', 'R', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 256;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t bytes_per_token = 2;
  uint32_t vocab_size = 0;
  uint32_t eos_id = 0;
  uint64_t token_count = 0;
  uint64_t document_count = 0;
  uint64_t payload_checksum = 0;       // XXH3-64 of the token bytes
  uint64_t tokenizer_fingerprint = 0;  // XXH3-64 of the tokenizer model file
};

// The 256 header bytes, with the header checksum in its last 8 bytes.
std::string encode_header(const ShardHeader& header);
// Parses and checks magic, version, header checksum and field ranges; `file` names it in errors.
ShardHeader decode_header(const void* bytes, size_t size, const std::string& file);

// 2 bytes per token while ids fit, else 4.
inline uint32_t bytes_per_token_for(uint64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// Writes one shard to `path`. Nothing at `path` is complete until finish() returns.
class ShardWriter {
 public:
  ShardWriter(std::string path, const ShardHeader& prototype);  // counts and checksum are filled in
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends the document's tokens and the EOS id.
  void add_document(std::span<const int32_t> tokens);
  uint64_t tokens() const { return header_.token_count; }
  // Writes the final header and fsyncs; returns the header written. (Shards are written inside
  // the dataset's StagedDir: an abandoned writer leaves its file to that.)
  ShardHeader finish();

 private:
  void put(uint32_t token);
  void flush_buffer();

  std::string path_;
  ShardHeader header_;
  OutFile file_;
  struct HashState;
  std::unique_ptr<HashState> hash_;
  std::string buffer_;
};

// A shard mapped read-only. The header is checked on open, the payload by verify().
class MappedShard {
 public:
  explicit MappedShard(std::string path);
  ~MappedShard();
  MappedShard(const MappedShard&) = delete;
  MappedShard& operator=(const MappedShard&) = delete;

  const ShardHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  uint64_t size() const { return header_.token_count; }
  uint32_t token(uint64_t i) const;
  // Copies tokens [start, start + count) as int64 into out.
  void copy(uint64_t start, uint64_t count, int64_t* out) const;
  // Recomputes the payload checksum and checks every id < vocab_size; throws UserError naming the
  // file and, for a bad id, its token and byte offset.
  void verify() const;

 private:
  std::string path_;
  ShardHeader header_;
  const uint8_t* data_ = nullptr;  // the whole file
  size_t file_size_ = 0;
};

}  // namespace gqe
