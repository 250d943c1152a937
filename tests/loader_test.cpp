// The training data order: windows, seeded epochs, global batches independent of the number of
// ranks and the micro-batch size, exact resume (also across epochs and world sizes), validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/error.h"
#include "data/loader.h"
#include "data/rng.h"
#include "data_util.h"
#include "test_util.h"

namespace gqe {
namespace {

using test::TempDir;

class Loader : public testing::Test {
 protected:
  // (3250 - 1) / 32 = 101 windows of 32 + 1 tokens: epochs end in the middle of a global batch of 8.
  void SetUp() override {
    test::write_counting_dataset(dir_.path(), 3250, 50, 4, 1000);
    manifest_ = read_manifest(dir_.path());
    train_ = std::make_shared<const TokenStream>(dir_.path(), manifest_, Split::train);
    val_ = std::make_shared<const TokenStream>(dir_.path(), manifest_, Split::val);
  }

  LoaderOptions options(uint64_t micro, int rank = 0, int world = 1, int prefetch = 4) const {
    LoaderOptions o;
    o.seq_len = 32;
    o.global_batch = 8;
    o.micro_batch = micro;
    o.rank = rank;
    o.world = world;
    o.seed = 99;
    o.prefetch = prefetch;
    return o;
  }

  // The samples of global batches [0, steps) as W ranks with micro-batches of `micro` see them:
  // per step, rank 0's rows then rank 1's ...
  std::vector<std::vector<uint64_t>> batches(uint64_t steps, uint64_t micro, int world, LoaderPosition start = {}) {
    std::vector<std::vector<uint64_t>> out(steps);
    for (int r = 0; r < world; ++r) {
      TrainLoader loader(train_, options(micro, r, world), start);
      SampleOrder order(loader.samples_per_epoch(), 99);
      for (uint64_t s = 0; s < steps; ++s)
        for (uint64_t m = 0; m < loader.accumulation_steps(); ++m) {
          const MicroBatch b = loader.next();
          EXPECT_EQ(b.step, (start.epoch * 101 + start.cursor) / 8 + s);
          EXPECT_EQ(b.micro_step, m);
          for (uint64_t i = 0; i < b.samples.size(); ++i) {
            const uint64_t sample = order.sample_at(b.samples[i]);
            out[s].push_back(sample);
            // Row i is the window of seq_len + 1 tokens at sample * seq_len.
            for (uint64_t t = 0; t < 33; ++t) EXPECT_EQ(b.tokens[i * 33 + t], test::counting_token(sample * 32 + t));
          }
        }
    }
    return out;
  }

  TempDir dir_;
  Manifest manifest_;
  std::shared_ptr<const TokenStream> train_, val_;
};

TEST_F(Loader, EachEpochVisitsEveryWindowOnceInASeededOrder) {
  SampleOrder order(100, 7);  // (a standalone order of 100)
  std::vector<uint64_t> epoch0, epoch1;
  for (uint64_t p = 0; p < 100; ++p) epoch0.push_back(order.sample_at(p));
  for (uint64_t p = 100; p < 200; ++p) epoch1.push_back(order.sample_at(p));
  std::vector<uint64_t> sorted = epoch0;
  std::sort(sorted.begin(), sorted.end());
  for (uint64_t i = 0; i < 100; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_NE(epoch0, epoch1);  // a new permutation each epoch
  SampleOrder again(100, 7), other_seed(100, 8);
  EXPECT_EQ(again.sample_at(42), epoch0[42]);
  bool differs = false;
  for (uint64_t p = 0; p < 100; ++p) differs |= other_seed.sample_at(p) != epoch0[p];
  EXPECT_TRUE(differs);
}

TEST_F(Loader, PermutationIsFixedByTheSpecifiedGenerator) {
  // Pinned: any change to Rng or the shuffle changes every run's data order.
  EXPECT_EQ(random_permutation(8, 1), (std::vector<uint32_t>{0, 3, 7, 1, 2, 6, 5, 4}));  // from a Python SplitMix64
  EXPECT_EQ(Rng(0).next(), 0xe220a8397b1dcdafULL);
}

TEST_F(Loader, GlobalBatchesDoNotDependOnRanksOrMicroBatches) {
  const auto reference = batches(30, 8, 1);  // 240 samples: 2.4 epochs
  for (auto [world, micro] : {std::pair<int, uint64_t>{1, 2}, {2, 4}, {2, 1}, {4, 2}, {4, 1}, {8, 1}}) {
    SCOPED_TRACE(testing::Message() << "world " << world << " micro " << micro);
    EXPECT_EQ(batches(30, micro, world), reference);
  }
}

TEST_F(Loader, ResumesExactlyMidEpochAndAcrossTheEpochBoundary) {
  const auto straight = batches(30, 2, 1);
  for (uint64_t done : {5u, 12u, 13u, 25u}) {  // 13 * 8 = 104: just past the first epoch (101)
    SCOPED_TRACE(done);
    TrainLoader first(train_, options(2));
    for (uint64_t i = 0; i < done * first.accumulation_steps(); ++i) first.next();
    const LoaderPosition saved = first.position();
    EXPECT_EQ(saved.epoch * 101 + saved.cursor, done * 8);
    // Resume, also on another number of ranks.
    for (int world : {1, 2}) {
      const auto resumed = batches(30 - done, 2, world, saved);
      EXPECT_TRUE(std::equal(resumed.begin(), resumed.end(), straight.begin() + static_cast<long>(done)));
    }
  }
}

TEST_F(Loader, PositionCountsOnlyWhatWasHandedOut) {
  TrainLoader loader(train_, options(2, 0, 1, 16));
  loader.next();
  loader.next();
  EXPECT_EQ(loader.position(), (LoaderPosition{0, 4}));  // the prefetched batches do not count
  for (int i = 0; i < 2; ++i) loader.next();
  EXPECT_EQ(loader.position(), (LoaderPosition{0, 8}));
  // On rank 1 of 2 a micro-step covers 2 rows of each of the 2 ranks.
  TrainLoader ranked(train_, options(2, 1, 2, 16));
  ranked.next();
  EXPECT_EQ(ranked.position(), (LoaderPosition{0, 4}));
  for (int i = 0; i < 25; ++i) ranked.next();  // 13 steps = 104 samples: into the second epoch
  EXPECT_EQ(ranked.position(), (LoaderPosition{1, 3}));
}

TEST_F(Loader, PrefetchingChangesNothing) {
  TrainLoader sync(train_, options(4, 1, 2, 0)), ahead(train_, options(4, 1, 2, 3));
  for (int i = 0; i < 40; ++i) {
    const MicroBatch a = sync.next(), b = ahead.next();
    ASSERT_EQ(a.tokens, b.tokens);
    ASSERT_EQ(a.samples, b.samples);
  }
}

TEST_F(Loader, ImpossibleShapesAndPositionsAreRefused) {
  auto error = [&](const LoaderOptions& o, LoaderPosition p = {}) {
    try {
      TrainLoader l(train_, o, p);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Each names what would fit: the micro-batches that divide a rank's share, or the ranks (and
  // global batches) that the micro-batch splits.
  EXPECT_EQ(error(options(3)), "a global batch of 8 sequences does not split into 1 rank x micro-batches of 3: each rank gets "
                               "8 sequences, so train.micro_batch_size must divide 8 (1, 2, 4 or 8)");
  EXPECT_EQ(error(options(1, 0, 3)), "a global batch of 8 sequences does not split into 3 ranks x micro-batches of 1: train on "
                                     "1, 2, 4 or 8 ranks, or make train.global_batch_tokens a multiple of 96 (3 x 1 sequences of 32)");
  EXPECT_EQ(error(options(4, 0, 3)), "a global batch of 8 sequences does not split into 3 ranks x micro-batches of 4: train on "
                                     "1 or 2 ranks, or make train.global_batch_tokens a multiple of 384 (3 x 4 sequences of 32)");
  EXPECT_EQ(error(options(2), {0, 4}), "loader position 4 is not at a global batch boundary (batches of 8)");
  EXPECT_EQ(error(options(2), {1, 3}), "no error");  // 104 = 13 batches
  EXPECT_EQ(error(options(2), {0, 101}), "loader position: cursor 101 is past the 101 samples of an epoch");
  LoaderOptions long_windows = options(2);
  long_windows.seq_len = 4000;
  EXPECT_EQ(error(long_windows), "the train split has 3250 tokens, fewer than one sample of seq_len + 1 = 4001");
}

TEST_F(Loader, ValidationReadsFixedWindowsInOrderSplitOverRanks) {
  ValidationReader all(val_, 32, 1000, 7);
  EXPECT_EQ(all.total_windows(), 31u);  // (1000 - 1) / 32
  std::vector<uint64_t> seen;
  while (auto b = all.next()) {
    for (uint64_t i = 0; i < b->samples.size(); ++i) {
      const uint64_t w = b->samples[i];
      seen.push_back(w);
      for (uint64_t t = 0; t < 33; ++t) ASSERT_EQ(b->tokens[i * 33 + t], test::counting_token(w * 32 + t));
    }
  }
  std::vector<uint64_t> expected(31);
  std::iota(expected.begin(), expected.end(), 0u);
  EXPECT_EQ(seen, expected);

  std::vector<uint64_t> by_ranks;
  for (int r = 0; r < 3; ++r) {
    ValidationReader part(val_, 32, 1000, 4, r, 3);
    while (auto b = part.next()) by_ranks.insert(by_ranks.end(), b->samples.begin(), b->samples.end());
  }
  EXPECT_EQ(by_ranks, expected);
  ValidationReader capped(val_, 32, 10, 4);
  EXPECT_EQ(capped.total_windows(), 10u);
}

}  // namespace
}  // namespace gqe
