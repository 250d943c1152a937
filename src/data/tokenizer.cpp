#include "data/tokenizer.h"

#include <sentencepiece_model.pb.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <unordered_map>

#include "common/error.h"
#include "common/utf8.h"
#include "common/files.h"
#include "data/rng.h"
#include "data/shard.h"

namespace gqe {

namespace {
// sentencepiece skips training lines longer than this; we count them instead of losing them silently.
constexpr size_t kMaxSentenceBytes = 16384;

// Whether a piece holds a space (U+2581 inside a piece) that follows a non-space: text cut before
// such a space could not give that piece.
bool spans_a_cut(std::string_view piece) {
  constexpr std::string_view space = "\u2581";
  for (size_t at = piece.find(space, 1); at != std::string_view::npos; at = piece.find(space, at + 1))
    if (!piece.substr(0, at).ends_with(space)) return true;
  return false;
}
}  // namespace

const char* sentencepiece_version() { return GQE_SENTENCEPIECE_VERSION; }

Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  model_bytes_ = read_file(model_path);
  const auto status = sp_->LoadFromSerializedProto(model_bytes_);
  if (!status.ok()) throw UserError(fmt::format("{}: not a sentencepiece model ({})", model_path, status.message()));
  fingerprint_ = checksum64(model_bytes_.data(), model_bytes_.size());
  const sentencepiece::ModelProto& proto = sp_->model_proto();
  const auto& normalizer = proto.normalizer_spec();
  splits_at_spaces_ = normalizer.name() == "identity" && !normalizer.add_dummy_prefix() &&
                      !normalizer.remove_extra_whitespaces() && normalizer.escape_whitespaces() &&
                      !proto.trainer_spec().treat_whitespace_as_suffix();
  for (const auto& piece : proto.pieces()) splits_at_spaces_ = splits_at_spaces_ && !spans_a_cut(piece.piece());
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, WordCache* cache) const {
  std::vector<int32_t> out;
  std::vector<int> ids;
  auto encode_whole = [&](std::string_view part) {
    const auto status = sp_->Encode(part, &ids);
    if (!status.ok()) throw std::runtime_error("sentencepiece encode: " + status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  };
  // The end of the cut that starts at `from` and holds at least `min` bytes: just before a space
  // that follows a non-space, or the end of the text.
  auto cut_after = [&](size_t from, size_t min) {
    size_t cut = from + std::max<size_t>(min, 1);
    while (cut < text.size() && !(text[cut] == ' ' && text[cut - 1] != ' ')) ++cut;
    return std::min(cut, text.size());
  };
  if (!splits_at_spaces_) {
    encode_whole(text);
    return out;
  }
  if (!cache) {
    // sentencepiece's cost grows faster than the length of one input (a 4 MB document took 10x
    // the time of the same text as 1,189 documents): long text goes in pieces of ~16 KB.
    constexpr size_t kPiece = 1 << 14;
    for (size_t from = 0; from < text.size();) {
      const size_t cut = text.size() - from > 2 * kPiece ? cut_after(from, kPiece) : text.size();
      encode_whole(text.substr(from, cut - from));
      from = cut;
    }
    return out;
  }
  if (cache->model_ != fingerprint_) {
    cache->words_.clear();
    cache->ids_.clear();
    cache->model_ = fingerprint_;
  }
  constexpr size_t kLongestCached = 64;  // bytes; longer words are rare and go to sentencepiece
  for (size_t from = 0; from < text.size();) {
    const size_t cut = cut_after(from, 1);
    const std::string_view word = text.substr(from, cut - from);
    from = cut;
    if (word.size() > kLongestCached) {
      encode_whole(word);
      continue;
    }
    if (const auto it = cache->words_.find(word); it != cache->words_.end()) {
      const auto first = cache->ids_.begin() + it->second.offset;
      out.insert(out.end(), first, first + it->second.size);
      continue;
    }
    const size_t start = out.size();
    encode_whole(word);
    if (cache->words_.size() >= cache->max_words_) {
      cache->words_.clear();
      cache->ids_.clear();
    }
    cache->words_.emplace(word, WordCache::Span{static_cast<uint32_t>(cache->ids_.size()), static_cast<uint32_t>(out.size() - start)});
    cache->ids_.insert(cache->ids_.end(), out.begin() + static_cast<long>(start), out.end());
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int n = sp_->GetPieceSize();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= n)
      throw UserError(fmt::format("token id {} (position {}) is outside the vocabulary of {} ({})", ids[i], i, n, path_));
  std::string text;
  const auto status = sp_->Decode(absl::Span<const int>(ids.data(), ids.size()), &text);
  if (!status.ok()) throw std::runtime_error("sentencepiece decode: " + status.ToString());
  return text;
}

uint32_t Tokenizer::vocab_size() const { return static_cast<uint32_t>(sp_->GetPieceSize()); }
int32_t Tokenizer::unk_id() const { return sp_->unk_id(); }
int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::eos_id() const { return sp_->eos_id(); }

std::string Tokenizer::hf_tokenizer_json(int32_t prefix_id) const {
  using nlohmann::ordered_json;
  const int n = sp_->GetPieceSize();
  std::unordered_map<std::string, int> ids;
  ordered_json vocab = ordered_json::object(), added = ordered_json::array();
  for (int i = 0; i < n; ++i) {
    const std::string piece = sp_->IdToPiece(i);
    ids.emplace(piece, i);
    vocab[piece] = i;
    if (sp_->IsControl(i) || sp_->IsUnknown(i))
      added.push_back({{"id", i}, {"content", piece}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", true}});
  }
  // transformers' generate_merges: every split of a piece (at a character) into two pieces, in the
  // order of the piece's id, then of the left part's length: the order they are found in here.
  ordered_json merge_list = ordered_json::array();
  for (int i = 0; i < n; ++i) {
    const std::string piece = sp_->IdToPiece(i);
    for (size_t at = piece.empty() ? 0 : utf8_length(static_cast<unsigned char>(piece[0])); at < piece.size();
         at += utf8_length(static_cast<unsigned char>(piece[at]))) {
      const std::string left = piece.substr(0, at), right = piece.substr(at);
      if (ids.count(left) && ids.count(right)) merge_list.push_back({left, right});
    }
  }

  const std::string prefix = sp_->IdToPiece(prefix_id), space = "\xe2\x96\x81";
  auto special = [&](const char* sequence, int type) {
    return ordered_json::array({{{"SpecialToken", {{"id", prefix}, {"type_id", type}}}}, {{"Sequence", {{"id", sequence}, {"type_id", type}}}}});
  };
  ordered_json pair = special("A", 0);
  for (auto& e : special("B", 1)) pair.push_back(e);
  const ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", special("A", 0)},
        {"pair", pair},
        {"special_tokens", {{prefix, {{"id", prefix}, {"ids", {prefix_id}}, {"tokens", {prefix}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders", ordered_json::array({{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                                          {{"type", "ByteFallback"}},
                                          {{"type", "Fuse"}}})}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", sp_->IdToPiece(sp_->unk_id())},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merge_list}}}};
  return j.dump(1) + "\n";
}
int32_t Tokenizer::pad_id() const { return sp_->pad_id(); }

namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  absl::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};

}  // namespace

TokenizerTrainingSummary train_tokenizer(const TokenizerTraining& o) {
  // Reservoir sampling of the input's lines (sentencepiece trains on lines), seeded.
  TokenizerTrainingSummary summary;
  std::vector<std::string> sample;
  Rng rng(derive_seed(o.seed, 0x70c));
  DocumentReader reader(o.files, o.input);
  while (auto doc = reader.next()) {
    const std::string text = document_text(*doc, o.input, reader.files());
    ++summary.documents;
    for (size_t start = 0; start <= text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + start, end - start);
      start = end + 1;
      if (line.empty()) continue;
      if (line.size() > kMaxSentenceBytes) {
        ++summary.skipped_long_lines;
        continue;
      }
      ++summary.lines;
      if (sample.size() < o.max_sentences) {
        sample.emplace_back(line);
      } else {
        const uint64_t j = rng.below(summary.lines);
        if (j < o.max_sentences) sample[j] = std::string(line);
      }
    }
  }
  if (sample.empty()) throw UserError("the inputs hold no text to train a tokenizer on");
  summary.sampled_lines = sample.size();

  VectorIterator lines(sample);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      {{"model_type", "bpe"},
       {"vocab_size", std::to_string(o.vocab_size)},
       {"byte_fallback", "true"},
       {"character_coverage", "0.9995"},
       {"normalization_rule_name", "identity"},
       {"remove_extra_whitespaces", "false"},
       {"add_dummy_prefix", "false"},
       {"split_digits", "true"},
       {"allow_whitespace_only_pieces", "true"},
       {"unk_id", "0"},
       {"bos_id", "1"},
       {"eos_id", "2"},
       {"pad_id", "3"},
       {"max_sentence_length", std::to_string(kMaxSentenceBytes)},
       {"input_sentence_size", "0"},
       {"shuffle_input_sentence", "false"},
       {"num_threads", std::to_string(std::max(1, o.threads))},
       {"minloglevel", "1"}},
      &lines, &model);
  if (!status.ok()) throw UserError(fmt::format("cannot train the tokenizer: {}", status.message()));

  sentencepiece::SentencePieceProcessor sp;
  if (const auto loaded = sp.LoadFromSerializedProto(model); !loaded.ok())
    throw std::runtime_error("trained model does not load: " + loaded.ToString());
  std::string vocab;
  for (int i = 0; i < sp.GetPieceSize(); ++i) vocab += fmt::format("{}\t{}\n", sp.IdToPiece(i), sp.GetScore(i));
  write_file_atomic(o.out_prefix + ".model", model);
  write_file_atomic(o.out_prefix + ".vocab", vocab);
  return summary;
}

}  // namespace gqe
