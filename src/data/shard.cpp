#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>
#include <xxhash.h>

#include "common/error.h"

namespace gqe {

static_assert(std::endian::native == std::endian::little, "shards are little-endian and read in place");

namespace {

// Field offsets in the header (docs/data-format.md).
constexpr size_t kVersionAt = 8, kBytesPerTokenAt = 12, kVocabAt = 16, kEosAt = 20, kTokensAt = 24,
                 kDocumentsAt = 32, kPayloadSumAt = 40, kTokenizerAt = 48, kHeaderSumAt = 248;

template <class T> void put_at(std::string& buf, size_t at, T value) { std::memcpy(buf.data() + at, &value, sizeof(T)); }
template <class T> T get_at(const uint8_t* buf, size_t at) {
  T value;
  std::memcpy(&value, buf + at, sizeof(T));
  return value;
}

}  // namespace

std::string encode_header(const ShardHeader& h) {
  std::string buf(kShardHeaderBytes, '\0');
  std::memcpy(buf.data(), kShardMagic, sizeof(kShardMagic));
  put_at(buf, kVersionAt, h.version);
  put_at(buf, kBytesPerTokenAt, h.bytes_per_token);
  put_at(buf, kVocabAt, h.vocab_size);
  put_at(buf, kEosAt, h.eos_id);
  put_at(buf, kTokensAt, h.token_count);
  put_at(buf, kDocumentsAt, h.document_count);
  put_at(buf, kPayloadSumAt, h.payload_checksum);
  put_at(buf, kTokenizerAt, h.tokenizer_fingerprint);
  put_at(buf, kHeaderSumAt, checksum64(buf.data(), kHeaderSumAt));
  return buf;
}

ShardHeader decode_header(const void* bytes, size_t size, const std::string& file) {
  const auto* b = static_cast<const uint8_t*>(bytes);
  if (size < kShardHeaderBytes)
    throw UserError(fmt::format("{}: not a gqe token shard (only {} bytes, the header alone is {})", file, size,
                                kShardHeaderBytes));
  if (std::memcmp(b, kShardMagic, sizeof(kShardMagic)) != 0)
    throw UserError(fmt::format("{}: not a gqe token shard (bad magic)", file));
  ShardHeader h;
  h.version = get_at<uint32_t>(b, kVersionAt);
  if (h.version != kShardVersion)
    throw UserError(fmt::format("{}: shard format version {} is not supported (this gqe reads version {})", file,
                                h.version, kShardVersion));
  if (get_at<uint64_t>(b, kHeaderSumAt) != checksum64(b, kHeaderSumAt))
    throw UserError(fmt::format("{}: shard header checksum mismatch (corrupt header)", file));
  h.bytes_per_token = get_at<uint32_t>(b, kBytesPerTokenAt);
  h.vocab_size = get_at<uint32_t>(b, kVocabAt);
  h.eos_id = get_at<uint32_t>(b, kEosAt);
  h.token_count = get_at<uint64_t>(b, kTokensAt);
  h.document_count = get_at<uint64_t>(b, kDocumentsAt);
  h.payload_checksum = get_at<uint64_t>(b, kPayloadSumAt);
  h.tokenizer_fingerprint = get_at<uint64_t>(b, kTokenizerAt);
  if (h.bytes_per_token != 2 && h.bytes_per_token != 4)
    throw UserError(fmt::format("{}: bytes per token is {}, expected 2 or 4", file, h.bytes_per_token));
  return h;
}

// --- writing -----------------------------------------------------------------------------------

struct ShardWriter::HashState {
  XXH3_state_t* state = XXH3_createState();
  ~HashState() { XXH3_freeState(state); }
};

ShardWriter::ShardWriter(std::string path, const ShardHeader& prototype)
    : path_(std::move(path)), header_(prototype), file_(path_), hash_(std::make_unique<HashState>()) {
  header_.token_count = header_.document_count = header_.payload_checksum = 0;
  file_.write(std::string(kShardHeaderBytes, '\0'));  // the header, once the counts are known
  XXH3_64bits_reset(hash_->state);
  buffer_.reserve(1 << 20);
}

ShardWriter::~ShardWriter() = default;

void ShardWriter::put(uint32_t token) {
  char bytes[4];
  std::memcpy(bytes, &token, 4);
  buffer_.append(bytes, header_.bytes_per_token);
  if (buffer_.size() >= (1 << 20)) flush_buffer();
}

void ShardWriter::flush_buffer() {
  XXH3_64bits_update(hash_->state, buffer_.data(), buffer_.size());
  file_.write(buffer_);
  buffer_.clear();
}

void ShardWriter::add_document(std::span<const int32_t> tokens) {
  for (int32_t t : tokens) put(static_cast<uint32_t>(t));
  put(header_.eos_id);
  header_.token_count += tokens.size() + 1;
  header_.document_count += 1;
}

ShardHeader ShardWriter::finish() {
  flush_buffer();
  header_.payload_checksum = XXH3_64bits_digest(hash_->state);
  file_.write_at(0, encode_header(header_));
  file_.close();
  return header_;
}

// --- reading -----------------------------------------------------------------------------------

MappedShard::MappedShard(std::string path) : path_(std::move(path)) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK);  // a FIFO must not block the open
  if (fd < 0) throw UserError(fmt::format("{}: cannot open shard ({})", path_, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UserError(fmt::format("{}: not a shard (not a regular file)", path_));
  }
  file_size_ = static_cast<size_t>(st.st_size);
  if (file_size_ > 0) {
    void* p = ::mmap(nullptr, file_size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw std::system_error(errno, std::generic_category(), "mmap " + path_);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  header_ = decode_header(data_, file_size_, path_);
  const size_t expected = kShardHeaderBytes + header_.token_count * header_.bytes_per_token;
  if (file_size_ != expected)
    throw UserError(fmt::format("{}: {} ({} bytes, the header promises {} tokens = {} bytes)", path_,
                                file_size_ < expected ? "truncated payload" : "trailing bytes after the payload",
                                file_size_, header_.token_count, expected));
}

MappedShard::~MappedShard() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), file_size_);
}

uint32_t MappedShard::token(uint64_t i) const {
  const uint8_t* p = data_ + kShardHeaderBytes + i * header_.bytes_per_token;
  return header_.bytes_per_token == 2 ? get_at<uint16_t>(p, 0) : get_at<uint32_t>(p, 0);
}

void MappedShard::copy(uint64_t start, uint64_t count, int64_t* out) const {
  const uint8_t* p = data_ + kShardHeaderBytes + start * header_.bytes_per_token;
  if (header_.bytes_per_token == 2) {
    const auto* t = reinterpret_cast<const uint16_t*>(p);  // the payload starts 256-byte aligned
    for (uint64_t i = 0; i < count; ++i) out[i] = t[i];
  } else {
    const auto* t = reinterpret_cast<const uint32_t*>(p);
    for (uint64_t i = 0; i < count; ++i) out[i] = t[i];
  }
}

void MappedShard::verify() const {
  const uint8_t* payload = data_ + kShardHeaderBytes;
  if (checksum64(payload, file_size_ - kShardHeaderBytes) != header_.payload_checksum)
    throw UserError(fmt::format("{}: payload checksum mismatch (the tokens were changed or damaged)", path_));
  for (uint64_t i = 0; i < header_.token_count; ++i)
    if (token(i) >= header_.vocab_size)
      throw UserError(fmt::format("{}: token id {} >= vocab size {} at token {} (byte offset {})", path_, token(i),
                                  header_.vocab_size, i, kShardHeaderBytes + i * header_.bytes_per_token));
}

}  // namespace gqe
