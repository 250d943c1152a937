// The random numbers behind the data order and the train/val split. Specified here (SplitMix64,
// Lemire's bounded integers, Fisher-Yates) rather than taken from <random>, whose distributions
// differ between standard libraries: the same seed must give the same data on every machine.
#pragma once

#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace gqe {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n), n > 0, without modulo bias.
  uint64_t below(uint64_t n) {
    __uint128_t m = static_cast<__uint128_t>(next()) * n;
    auto low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = -n % n;
      while (low < threshold) {
        m = static_cast<__uint128_t>(next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// A seed for stream `stream` derived from `seed`, so that streams do not overlap.
inline uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  Rng mixer(seed ^ (stream * 0xd1b54a32d192ed03ULL));
  mixer.next();
  return mixer.next();
}

// A uniformly random permutation of 0..n-1.
inline std::vector<uint32_t> random_permutation(uint32_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  std::iota(p.begin(), p.end(), 0u);
  Rng rng(seed);
  for (uint32_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
  return p;
}

}  // namespace gqe
