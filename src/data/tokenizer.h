// The tokenizer: a sentencepiece BPE model. Trained with byte fallback (any text encodes), the
// identity normalisation and no dummy prefix (decode(encode(text)) == text), and the special ids
// unk 0, bos 1, eos 2, pad 3. Its fingerprint (XXH3-64 of the model file) ties shards to it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/text_input.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace gqe {

class Tokenizer {
 public:
  // Loads a .model file; throws UserError naming it if it is not a sentencepiece model.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text) const;  // thread-safe
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
