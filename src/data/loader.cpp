#include "data/loader.h"

#include <fmt/format.h>

#include "common/error.h"
#include "data/rng.h"

namespace gqe {

SampleOrder::SampleOrder(uint64_t samples_per_epoch, uint64_t seed) : samples_per_epoch_(samples_per_epoch), seed_(seed) {
  if (samples_per_epoch_ > UINT32_MAX)
    throw UserError(fmt::format("{} samples per epoch is more than the loader supports (2^32 - 1); use a longer "
                                "data.seq_len", samples_per_epoch_));
}

uint64_t SampleOrder::sample_at(uint64_t position) {
  const uint64_t epoch = position / samples_per_epoch_;
  if (epoch != cached_epoch_) {
    permutation_ = random_permutation(static_cast<uint32_t>(samples_per_epoch_), derive_seed(seed_, epoch));
    cached_epoch_ = epoch;
  }
  return permutation_[position % samples_per_epoch_];
}

uint64_t samples_per_epoch(uint64_t tokens, uint64_t seq_len) { return tokens > seq_len ? (tokens - 1) / seq_len : 0; }

void check_batch_split(uint64_t global_batch, int world, uint64_t micro_batch, uint64_t seq_len) {
  const uint64_t w = static_cast<uint64_t>(world), per_rank = global_batch / w;
  if (global_batch % w == 0 && per_rank % micro_batch == 0) return;
  // Say what would fit, since the fix is a number to pick.
  auto or_list = [](std::vector<uint64_t> v) {
    const bool cut = v.size() > 12;  // a batch with many divisors: the small ones and the largest
    if (cut) v.erase(v.begin() + 10, v.end() - 1);
    std::string s;
    for (size_t i = 0; i < v.size(); ++i)
      s += (i == 0 ? "" : i + 1 == v.size() ? (cut ? ", ... or " : " or ") : ", ") + std::to_string(v[i]);
    return s;
  };
  std::vector<uint64_t> fits;
  std::string fix;
  if (global_batch % w == 0) {
    for (uint64_t m = 1; m <= per_rank; ++m)
      if (per_rank % m == 0) fits.push_back(m);
    fix = fmt::format("each rank gets {} sequences, so train.micro_batch_size must divide {} ({})", per_rank, per_rank, or_list(fits));
  } else {
    for (uint64_t r = 1; r <= global_batch / micro_batch; ++r)
      if (global_batch % (r * micro_batch) == 0) fits.push_back(r);
    fix = fmt::format("train on {} rank{}, or make train.global_batch_tokens a multiple of {} ({} x {} sequences of {})",
                      or_list(fits), fits.size() == 1 && fits[0] == 1 ? "" : "s", w * micro_batch * seq_len, world,
                      micro_batch, seq_len);
  }
  throw UserError(fmt::format("a global batch of {} sequences does not split into {} rank{} x micro-batches of {}: {}",
                              global_batch, world, world == 1 ? "" : "s", micro_batch, fix));
}

TrainLoader::TrainLoader(std::shared_ptr<const TokenStream> stream, const LoaderOptions& o, LoaderPosition start)
    : stream_(std::move(stream)),
      opts_(o),
      samples_per_epoch_(gqe::samples_per_epoch(stream_->size(), o.seq_len)),
      accumulation_(0),
      start_position_(0),
      order_(std::max<uint64_t>(samples_per_epoch_, 1), o.seed) {
  if (samples_per_epoch_ == 0)
    throw UserError(fmt::format("the train split has {} tokens, fewer than one sample of seq_len + 1 = {}",
                                stream_->size(), o.seq_len + 1));
  check_batch_split(o.global_batch, o.world, o.micro_batch, o.seq_len);
  accumulation_ = o.global_batch / static_cast<uint64_t>(o.world) / o.micro_batch;
  if (start.cursor >= samples_per_epoch_)
    throw UserError(fmt::format("loader position: cursor {} is past the {} samples of an epoch", start.cursor,
                                samples_per_epoch_));
  start_position_ = start.epoch * samples_per_epoch_ + start.cursor;
  if (start_position_ % o.global_batch != 0)
    throw UserError(fmt::format("loader position {} is not at a global batch boundary (batches of {})",
                                start_position_, o.global_batch));
  if (o.prefetch > 0) worker_ = std::thread(&TrainLoader::prefetch_loop, this);
}

TrainLoader::~TrainLoader() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

MicroBatch TrainLoader::make(uint64_t index) {
  MicroBatch b;
  b.step = start_position_ / opts_.global_batch + index / accumulation_;
  b.micro_step = index % accumulation_;
  const uint64_t first = b.step * opts_.global_batch + static_cast<uint64_t>(opts_.rank) * (opts_.global_batch / opts_.world) +
                         b.micro_step * opts_.micro_batch;
  const uint64_t row = opts_.seq_len + 1;
  b.tokens.resize(opts_.micro_batch * row);
  b.samples.resize(opts_.micro_batch);
  for (uint64_t i = 0; i < opts_.micro_batch; ++i) {
    b.samples[i] = first + i;
    stream_->copy(order_.sample_at(first + i) * opts_.seq_len, row, b.tokens.data() + i * row);
  }
  return b;
}

void TrainLoader::prefetch_loop() {
  try {
    for (uint64_t index = 0;; ++index) {
      MicroBatch b = make(index);
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < static_cast<size_t>(opts_.prefetch); });
      if (stop_) return;
      ready_.push_back(std::move(b));
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard lock(mutex_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

MicroBatch TrainLoader::next() {
  if (opts_.prefetch == 0) return make(returned_++);
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty()) std::rethrow_exception(error_);
  MicroBatch b = std::move(ready_.front());
  ready_.pop_front();
  ++returned_;
  cv_.notify_all();
  return b;
}

LoaderPosition TrainLoader::position() const {
  // Micro-batches handed out cover whole global batches once a step's last micro-step is out.
  const uint64_t steps_done = returned_ / accumulation_;
  const uint64_t partial = (returned_ % accumulation_) * opts_.micro_batch * static_cast<uint64_t>(opts_.world);
  const uint64_t p = start_position_ + steps_done * opts_.global_batch + partial;
  return {p / samples_per_epoch_, p % samples_per_epoch_};
}

ValidationReader::ValidationReader(std::shared_ptr<const TokenStream> stream, uint64_t seq_len, uint64_t max_windows,
                                   uint64_t batch_size, int rank, int world)
    : stream_(std::move(stream)), seq_len_(seq_len), batch_size_(batch_size) {
  windows_ = std::min(max_windows, gqe::samples_per_epoch(stream_->size(), seq_len));
  begin_ = windows_ * static_cast<uint64_t>(rank) / static_cast<uint64_t>(world);
  end_ = windows_ * static_cast<uint64_t>(rank + 1) / static_cast<uint64_t>(world);
  cursor_ = begin_;
}

std::optional<MicroBatch> ValidationReader::next() {
  if (cursor_ >= end_) return std::nullopt;
  MicroBatch b;
  const uint64_t n = std::min(batch_size_, end_ - cursor_), row = seq_len_ + 1;
  b.tokens.resize(n * row);
  for (uint64_t i = 0; i < n; ++i) {
    b.samples.push_back(cursor_ + i);
    stream_->copy((cursor_ + i) * seq_len_, row, b.tokens.data() + i * row);
  }
  cursor_ += n;
  return b;
}

}  // namespace gqe
