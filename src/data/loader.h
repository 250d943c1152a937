// The training data order and the loaders (docs/data-format.md, "Data order").
//
// Sample i of an epoch is the window of seq_len + 1 tokens starting at i * seq_len in the train
// stream (inputs are its first seq_len tokens, targets its last seq_len). Each epoch visits the
// samples in a seeded random permutation, and the epochs follow each other: position p of the
// run is sample perm_e[p mod S] of epoch e = p / S. Global batch s is positions [s*B, (s+1)*B);
// rank r of W takes the contiguous slice [r*B/W, (r+1)*B/W) of it, and its micro-step m the
// micro_batch positions after m*micro_batch of that slice. So the samples of every global batch
// depend only on the dataset, seed, seq_len and B, not on W or the micro-batch size.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "data/dataset.h"

namespace gqe {

// Where the order stands: `epoch` and the `cursor` (next position) inside it.
struct LoaderPosition {
  uint64_t epoch = 0;
  uint64_t cursor = 0;
  bool operator==(const LoaderPosition&) const = default;
};

// Windows of seq_len + 1 tokens in a stream of `tokens`: the samples of one epoch.
uint64_t samples_per_epoch(uint64_t tokens, uint64_t seq_len);

// Maps run positions to samples (the permutation of the current epoch is cached).
class SampleOrder {
 public:
  SampleOrder(uint64_t samples_per_epoch, uint64_t seed);
  uint64_t samples_per_epoch() const { return samples_per_epoch_; }
  // The sample (window index within its epoch) at run position p.
  uint64_t sample_at(uint64_t position);

 private:
  uint64_t samples_per_epoch_, seed_;
  uint64_t cached_epoch_ = UINT64_MAX;
  std::vector<uint32_t> permutation_;
};

struct LoaderOptions {
  uint64_t seq_len = 0;
  uint64_t global_batch = 0;  // sequences per optimizer step, all ranks
  uint64_t micro_batch = 0;   // sequences per forward/backward on this rank
  int rank = 0;
  int world = 1;
  uint64_t seed = 0;
  int prefetch = 8;           // micro-batches prepared ahead on a background thread (0: none)
};

struct MicroBatch {
  std::vector<int64_t> tokens;   // [micro_batch, seq_len + 1], row-major
  std::vector<uint64_t> samples; // run position of each row (sample = order.sample_at(position))
  uint64_t step = 0;             // global batch (optimizer step) index
  uint64_t micro_step = 0;       // 0 .. accumulation_steps - 1
};

// Throws UserError unless a global batch of `global_batch` sequences splits into `world` equal
// rank slices of whole micro-batches (of sequences of `seq_len`), saying what would.
void check_batch_split(uint64_t global_batch, int world, uint64_t micro_batch, uint64_t seq_len);

class TrainLoader {
 public:
  // Starts at `start`, which must be at a global batch boundary. Throws UserError when the stream
  // is too short for one sample or the batch shape does not split over ranks and micro-batches.
  TrainLoader(std::shared_ptr<const TokenStream> stream, const LoaderOptions& options, LoaderPosition start = {});
  ~TrainLoader();
  TrainLoader(const TrainLoader&) = delete;
  TrainLoader& operator=(const TrainLoader&) = delete;

  uint64_t samples_per_epoch() const { return samples_per_epoch_; }
  uint64_t accumulation_steps() const { return accumulation_; }
  // The next micro-batch of this rank: micro-steps 0..A-1 of step s, then of step s + 1, ...
  MicroBatch next();
  // Position after what next() has returned (prefetched batches do not count). Saved in
  // checkpoints after an optimizer step, where it is at a global batch boundary.
  LoaderPosition position() const;

 private:
  MicroBatch make(uint64_t index);  // index-th micro-batch of this rank from the start
  void prefetch_loop();

  std::shared_ptr<const TokenStream> stream_;
  LoaderOptions opts_;
  uint64_t samples_per_epoch_, accumulation_, start_position_;
  SampleOrder order_;
  uint64_t returned_ = 0;  // micro-batches handed out by next()

  // Background preparation, in order, bounded by opts_.prefetch.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<MicroBatch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
};

// Validation: the first `windows` non-overlapping windows of seq_len + 1 tokens of the val stream,
// in order, unshuffled; rank r of W reads the contiguous block [r*n/W, (r+1)*n/W) in batches.
class ValidationReader {
 public:
  ValidationReader(std::shared_ptr<const TokenStream> stream, uint64_t seq_len, uint64_t max_windows,
                   uint64_t batch_size, int rank = 0, int world = 1);
  uint64_t total_windows() const { return windows_; }  // over all ranks
  // The next batch of this rank (the last one may be smaller), or nothing at the end.
  std::optional<MicroBatch> next();

 private:
  std::shared_ptr<const TokenStream> stream_;
  uint64_t seq_len_, windows_, batch_size_, begin_, end_, cursor_;
};

}  // namespace gqe
