// Datasets written token by token, for the format and loader tests.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/files.h"
#include "data/dataset.h"
#include "data/shard.h"

namespace gqe::test {

using Documents = std::vector<std::vector<int32_t>>;  // one shard: its documents' tokens (EOS added)

inline constexpr uint32_t kTestVocab = 1u << 20;  // 4-byte tokens, room for positions as ids
inline constexpr int32_t kTestEos = kTestVocab - 1;
inline constexpr uint64_t kTestFingerprint = 0x1234abcd5678ef00ULL;

inline SplitEntry write_split(const std::filesystem::path& dir, const std::string& prefix,
                              const std::vector<Documents>& shards, uint32_t vocab = kTestVocab) {
  SplitEntry entry;
  ShardHeader prototype;
  prototype.bytes_per_token = bytes_per_token_for(vocab);
  prototype.vocab_size = vocab;
  prototype.eos_id = static_cast<uint32_t>(kTestEos < static_cast<int32_t>(vocab) ? kTestEos : 0);
  prototype.tokenizer_fingerprint = kTestFingerprint;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = prefix + "_" + std::to_string(i) + ".bin";
    ShardWriter writer((dir / name).string(), prototype);
    for (const auto& doc : shards[i]) writer.add_document(doc);
    const ShardHeader h = writer.finish();
    entry.shards.push_back({name, h.token_count, h.document_count, h.payload_checksum});
    entry.tokens += h.token_count;
    entry.documents += h.document_count;
  }
  return entry;
}

// A dataset whose train stream is 0, 1, 2, ... (every `doc_len`-th position is EOS instead),
// split over shards of `shard_docs` documents.
inline Manifest write_counting_dataset(const std::filesystem::path& dir, uint64_t tokens, uint64_t doc_len = 50,
                                       uint64_t shard_docs = 3, uint64_t val_tokens = 0) {
  std::filesystem::create_directories(dir);
  auto shards_of = [&](uint64_t count) {
    std::vector<Documents> shards;
    Documents docs;
    for (uint64_t p = 0; p < count; p += doc_len) {
      std::vector<int32_t> doc;
      for (uint64_t q = p; q < std::min(count, p + doc_len) - 1; ++q) doc.push_back(static_cast<int32_t>(q));
      docs.push_back(doc);
      if (docs.size() == shard_docs) shards.push_back(std::move(docs)), docs.clear();
    }
    if (!docs.empty()) shards.push_back(docs);
    return shards;
  };
  Manifest m;
  m.tokenizer = {"tokenizer.model", kTestFingerprint, kTestVocab, 0, 1, kTestEos, 3};
  m.bytes_per_token = 4;
  m.train = write_split(dir, "train", shards_of(tokens));
  m.val = write_split(dir, "val", val_tokens ? shards_of(val_tokens) : std::vector<Documents>{});
  write_file_atomic(dir / "manifest.json", manifest_json(m));
  return m;
}

// What position p of a counting stream holds.
inline int64_t counting_token(uint64_t p, uint64_t doc_len = 50) {
  return (p + 1) % doc_len == 0 ? kTestEos : static_cast<int64_t>(p);
}

}  // namespace gqe::test
