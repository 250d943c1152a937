// The tokenizer: a sentencepiece BPE model. Trained with byte fallback (any text encodes), the
// identity normalisation and no dummy prefix (decode(encode(text)) == text), and the special ids
// unk 0, bos 1, eos 2, pad 3. Its fingerprint (XXH3-64 of the model file) ties shards to it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/text_input.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace gqe {

// The ids of words a Tokenizer has already encoded, for encoding much text on one thread (a word:
// from a space that follows a non-space up to the next such space). Natural text repeats its
// words, so most of them need no BPE at all. Bounded: it starts over when full.
class WordCache {
 public:
  explicit WordCache(size_t max_words = 1 << 18) : max_words_(max_words) {}

 private:
  friend class Tokenizer;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Span {
    uint32_t offset, size;  // into ids_
  };
  std::unordered_map<std::string, Span, Hash, std::equal_to<>> words_;
  std::vector<int32_t> ids_;
  size_t max_words_;
  std::optional<uint64_t> model_;  // the fingerprint of the model the ids are of
};

class Tokenizer {
 public:
  // Loads a .model file; throws UserError naming it if it is not a sentencepiece model.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();

  // Thread-safe; a cache (one per thread) makes it several times faster on natural text, with the
  // same ids.
  std::vector<int32_t> encode(std::string_view text, WordCache* cache = nullptr) const;
  // Throws UserError for an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids) const;

  uint32_t vocab_size() const;
  int32_t unk_id() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  uint64_t fingerprint() const { return fingerprint_; }
  // The same tokenizer as a Hugging Face tokenizers file (tokenizer.json): the BPE vocabulary, the
  // merges transformers' sentencepiece converter derives from it (a split of a piece into two
  // pieces, ranked by the piece's id), byte fallback, spaces as U+2581 and no dummy prefix;
  // `prefix_id` goes in front of every encoded text (the post-processor).
  std::string hf_tokenizer_json(int32_t prefix_id) const;
  const std::string& model_bytes() const { return model_bytes_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
  std::string model_bytes_;
  uint64_t fingerprint_ = 0;
  // Whether no piece of the model spans a space that follows a non-space, and nothing before the
  // pieces looks across one (identity normalisation, no dummy prefix, spaces kept): then text
  // cut at such points encodes to the ids of the whole. True for gqe's own tokenizers.
  bool splits_at_spaces_ = false;
};

// The version of the sentencepiece library linked in (built from its PyPI sdist by set-up).
const char* sentencepiece_version();

struct TokenizerTraining {
  std::vector<std::string> files;  // already expanded
  InputOptions input;
  uint32_t vocab_size = 0;
  std::string out_prefix;           // writes PREFIX.model and PREFIX.vocab
  uint64_t max_sentences = 2'000'000;  // lines sampled (uniformly, seeded) when the input has more
  uint64_t seed = 1234;
  int threads = 1;
};

struct TokenizerTrainingSummary {
  uint64_t documents = 0, lines = 0, sampled_lines = 0, skipped_long_lines = 0;
};

TokenizerTrainingSummary train_tokenizer(const TokenizerTraining& options);

}  // namespace gqe
