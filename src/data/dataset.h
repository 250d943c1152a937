// A dataset directory: train_*.bin and val_*.bin shards, the tokenizer model they were made with,
// and manifest.json listing them (docs/data-format.md). TokenStream presents one split as the
// concatenation of its shards, checked against the manifest when opened.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"

namespace gqe {

inline constexpr int kManifestVersion = 1;

struct ShardEntry {
  std::string file;  // relative to the dataset directory
  uint64_t tokens = 0;
  uint64_t documents = 0;
  uint64_t checksum = 0;  // payload XXH3-64, as in the shard header
};

struct SplitEntry {
  uint64_t tokens = 0;
  uint64_t documents = 0;
  std::vector<ShardEntry> shards;
};

struct TokenizerEntry {
  std::string file;  // relative to the dataset directory
  uint64_t fingerprint = 0;
  uint32_t vocab_size = 0;
  int32_t unk_id = -1, bos_id = -1, eos_id = -1, pad_id = -1;
};

struct Manifest {
  TokenizerEntry tokenizer;
  uint32_t bytes_per_token = 2;
  uint64_t split_seed = 0;
  double val_fraction = 0;
  SplitEntry train, val;
  std::vector<std::string> sources;  // the inputs, as given
  std::string command;               // the command line that made it
};

enum class Split { train, val };
const char* split_name(Split split);

// manifest.json <-> Manifest. Reading throws UserError naming the file and the field at fault.
Manifest read_manifest(const std::filesystem::path& dataset_dir);
std::string manifest_json(const Manifest& manifest);  // pretty-printed JSON

// The tokenizer model file of a dataset (the manifest names it relative to the directory).
std::filesystem::path tokenizer_path(const std::filesystem::path& dataset_dir, const Manifest& manifest);
// The same, checked: a regular file whose XXH3-64 is the fingerprint the manifest records (the
// tokenizer is part of the data's identity). Throws UserError naming the file and both fingerprints.
std::filesystem::path verified_tokenizer(const std::filesystem::path& dataset_dir, const Manifest& manifest);

// One split of a dataset, its shards mapped in manifest order.
class TokenStream {
 public:
  // Checks every shard's header against the manifest: token count, checksum, tokenizer
  // fingerprint, vocab size, EOS id and bytes per token (shards of another tokenizer are refused).
  TokenStream(const std::filesystem::path& dataset_dir, const Manifest& manifest, Split split);

  uint64_t size() const { return total_; }
  // Copies tokens [start, start + count) of the concatenated stream as int64.
  void copy(uint64_t start, uint64_t count, int64_t* out) const;
  // Full check of every shard's payload (checksum and token ids), in parallel over shards; with
  // parts > 1 only the shards i with i % parts == part (ranks share the work).
  void verify(int threads, size_t part = 0, size_t parts = 1) const;
  const std::vector<std::unique_ptr<MappedShard>>& shards() const { return shards_; }

 private:
  std::vector<std::unique_ptr<MappedShard>> shards_;
  std::vector<uint64_t> starts_;  // first stream position of each shard
  uint64_t total_ = 0;
};

}  // namespace gqe
