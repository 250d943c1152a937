#include "data/encode.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "common/error.h"
#include "common/files.h"
#include "data/dataset.h"
#include "data/rng.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace gqe {
namespace {

constexpr size_t kChunkBytes = 1 << 20;  // a work item holds about this much text at most

// A bounded queue between threads; close() wakes everyone and makes push() fail.
template <class T> class Channel {
 public:
  explicit Channel(size_t capacity) : capacity_(capacity) {}
  bool push(T value) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(value));
    not_empty_.notify_one();
    return true;
  }
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    T value = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return value;
  }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> items_;
  bool closed_ = false;
};

struct Chunk {
  uint64_t index = 0;
  std::vector<RawDocument> documents;
  uint64_t bytes_read = 0;       // input position after this chunk, for progress
  std::exception_ptr error;      // a read error, reported in input order
};

struct EncodedChunk {
  uint64_t index = 0;
  std::vector<std::vector<int32_t>> documents;
  uint64_t bytes_read = 0;
  std::exception_ptr error;
};

// The shards of one split: rolls over to a new shard before a document that would pass the size.
class SplitWriter {
 public:
  SplitWriter(fs::path dir, std::string prefix, const ShardHeader& prototype, uint64_t shard_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), prototype_(prototype), shard_tokens_(shard_tokens) {}

  void add(std::span<const int32_t> tokens) {
    if (current_ && current_->tokens() > 0 && current_->tokens() + tokens.size() + 1 > shard_tokens_) close();
    if (!current_) {
      name_ = fmt::format("{}_{:06d}.bin", prefix_, entry_.shards.size());
      current_ = std::make_unique<ShardWriter>((dir_ / name_).string(), prototype_);
    }
    current_->add_document(tokens);
  }

  SplitEntry finish() {
    if (current_) close();
    return entry_;
  }

 private:
  void close() {
    const ShardHeader h = current_->finish();
    current_.reset();
    entry_.shards.push_back({name_, h.token_count, h.document_count, h.payload_checksum});
    entry_.tokens += h.token_count;
    entry_.documents += h.document_count;
  }

  fs::path dir_;
  std::string prefix_, name_;
  ShardHeader prototype_;
  uint64_t shard_tokens_;
  std::unique_ptr<ShardWriter> current_;
  SplitEntry entry_;
};

class Progress {
 public:
  Progress(bool enabled, uint64_t total_bytes) : enabled_(enabled), tty_(::isatty(2)), total_(total_bytes) {}

  void update(uint64_t bytes, uint64_t documents, uint64_t tokens, bool final = false) {
    if (!enabled_) return;
    const double elapsed = seconds();
    if (!final && elapsed - last_ < (tty_ ? 0.5 : 30.0)) return;
    last_ = elapsed;
    const double rate = elapsed > 0 ? static_cast<double>(bytes) / elapsed : 0;
    const double eta = rate > 0 && total_ > bytes ? static_cast<double>(total_ - bytes) / rate : 0;
    fmt::print(stderr, "{}encode: {:.1f} / {:.1f} MB ({:.0f}%)  {} docs  {:.2f}M tokens  {:.2f} MB/s  ETA {:.0f}s{}",
               tty_ ? "\r" : "", static_cast<double>(bytes) / 1e6, static_cast<double>(total_) / 1e6,
               total_ ? 100.0 * static_cast<double>(bytes) / static_cast<double>(total_) : 100.0, documents,
               static_cast<double>(tokens) / 1e6, rate / 1e6, eta, tty_ && !final ? "   " : "\n");
    std::fflush(stderr);
  }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  bool enabled_, tty_;
  uint64_t total_;
  double last_ = 0;  // the first line comes after one interval
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace

EncodeSummary encode_dataset(const EncodeOptions& o) {
  const Tokenizer tokenizer(o.tokenizer);
  if (tokenizer.eos_id() < 0) throw UserError(fmt::format("{}: the tokenizer defines no EOS id", o.tokenizer));
  const std::vector<std::string> files = expand_inputs(o.inputs);
  if (o.val_fraction < 0 || o.val_fraction >= 1)
    throw UserError(fmt::format("--val-fraction must be in [0, 1), got {}", o.val_fraction));
  if (o.shard_tokens == 0) throw UserError("--shard-tokens must be > 0");

  const fs::path out = fs::path(o.out_dir);
  check_output_path(out, "--out", /*directory=*/true);
  if (fs::exists(out) && !fs::is_empty(out) && !o.overwrite)
    throw UserError(fmt::format("{}: already exists (use --overwrite to replace it)", o.out_dir));
  StagedDir staged(out);  // DIR.partial until the manifest is written
  const fs::path& partial = staged.path();

  EncodeSummary summary;
  const int workers = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  Channel<Chunk> work(static_cast<size_t>(2 * workers));
  Channel<EncodedChunk> results(static_cast<size_t>(2 * workers));
  DocumentReader reader(files, o.input);
  Progress progress(o.progress, reader.total_bytes());

  std::thread read_thread([&] {
    uint64_t index = 0;
    try {
      Chunk chunk;
      size_t bytes = 0;
      while (auto doc = reader.next()) {
        bytes += doc->data.size();
        chunk.documents.push_back(std::move(*doc));
        if (bytes >= kChunkBytes || chunk.documents.size() >= o.chunk_documents) {
          chunk.index = index++;
          chunk.bytes_read = reader.bytes_read();
          if (!work.push(std::move(chunk))) return;
          chunk = Chunk();
          bytes = 0;
        }
      }
      chunk.index = index++;
      chunk.bytes_read = reader.total_bytes();
      work.push(std::move(chunk));
    } catch (...) {
      Chunk failed;
      failed.index = index;
      failed.error = std::current_exception();
      work.push(std::move(failed));
    }
    work.close();
  });

  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&] {
      WordCache cache;
      while (auto chunk = work.pop()) {
        EncodedChunk done;
        done.index = chunk->index;
        done.bytes_read = chunk->bytes_read;
        done.error = chunk->error;
        try {
          for (const RawDocument& doc : chunk->documents)
            done.documents.push_back(tokenizer.encode(document_text(doc, o.input, files), &cache));
        } catch (...) {
          done.error = std::current_exception();
        }
        if (!results.push(std::move(done))) return;
      }
    });
  // The results channel closes once every worker is done.
  std::thread closer([&] {
    for (auto& t : pool) t.join();
    results.close();
  });

  auto stop_threads = [&] {
    work.close();
    results.close();
    read_thread.join();
    closer.join();
  };

  try {
    ShardHeader prototype;
    prototype.bytes_per_token = bytes_per_token_for(tokenizer.vocab_size());
    prototype.vocab_size = tokenizer.vocab_size();
    prototype.eos_id = static_cast<uint32_t>(tokenizer.eos_id());
    prototype.tokenizer_fingerprint = tokenizer.fingerprint();
    SplitWriter train(partial, "train", prototype, o.shard_tokens), val(partial, "val", prototype, o.shard_tokens);
    const uint64_t val_threshold = static_cast<uint64_t>(o.val_fraction * 0x1.0p53);

    std::map<uint64_t, EncodedChunk> waiting;  // results that arrived ahead of their turn
    uint64_t next_index = 0;
    while (auto result = results.pop()) {
      waiting.emplace(result->index, std::move(*result));
      for (auto it = waiting.find(next_index); it != waiting.end(); it = waiting.find(++next_index)) {
        EncodedChunk& chunk = it->second;
        if (chunk.error) std::rethrow_exception(chunk.error);
        for (const auto& tokens : chunk.documents) {
          if (tokens.empty()) {
            ++summary.empty_documents;
            continue;
          }
          const uint64_t doc = summary.documents++;
          const bool to_val = (Rng(derive_seed(o.seed, doc)).next() >> 11) < val_threshold;
          (to_val ? val : train).add(tokens);
          (to_val ? summary.val_tokens : summary.train_tokens) += tokens.size() + 1;
        }
        summary.input_bytes = chunk.bytes_read;
        progress.update(summary.input_bytes, summary.documents, summary.train_tokens + summary.val_tokens);
        waiting.erase(it);
      }
    }
    stop_threads();
    if (summary.documents == 0) throw UserError("the inputs hold no documents (every file or record is empty)");

    Manifest m;
    m.tokenizer = {"tokenizer.model", tokenizer.fingerprint(), tokenizer.vocab_size(), tokenizer.unk_id(),
                   tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()};
    m.bytes_per_token = prototype.bytes_per_token;
    m.split_seed = o.seed;
    m.val_fraction = o.val_fraction;
    m.train = train.finish();
    m.val = val.finish();
    m.sources = o.inputs;
    m.command = o.command;
    summary.train_documents = m.train.documents;
    summary.val_documents = m.val.documents;
    summary.train_shards = m.train.shards.size();
    summary.val_shards = m.val.shards.size();
    write_file_atomic(partial / "tokenizer.model", tokenizer.model_bytes());
    write_file_atomic(partial / "manifest.json", manifest_json(m));
    staged.commit();  // swaps the finished dataset into place
  } catch (...) {
    if (read_thread.joinable()) stop_threads();
    throw;
  }
  summary.seconds = progress.seconds();
  progress.update(summary.input_bytes, summary.documents, summary.train_tokens + summary.val_tokens, true);
  return summary;
}

}  // namespace gqe
