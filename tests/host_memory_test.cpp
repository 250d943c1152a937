// A large block freed and allocated again must come back without page faults; glibc's default
// unmaps it on free and faults all its pages in again (what every training step paid).
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/host_memory.h"

namespace gqe {
namespace {

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Page faults taken to write a block of `bytes` allocated right after one of the same size was freed.
long faults_to_reuse(size_t bytes) {
  char* first = static_cast<char*>(std::malloc(bytes));
  std::memset(first, 1, bytes);
  asm volatile("" : : "r"(first) : "memory");  // keep the compiler from eliding the pair
  std::free(first);
  const long before = minor_faults();
  char* again = static_cast<char*>(std::malloc(bytes));
  std::memset(again, 2, bytes);
  asm volatile("" : : "r"(again) : "memory");
  const long faults = minor_faults() - before;
  std::free(again);
  return faults;
}

TEST(HostMemory, FreedLargeBlocksAreReusedWithoutPageFaults) {
  std::stringstream thp;
  thp << std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").rdbuf();
  if (thp.str().find("[always]") != std::string::npos) GTEST_SKIP() << "huge pages fault 2 MB at a time here";
  if (std::getenv("MALLOC_MMAP_MAX_") != nullptr) GTEST_SKIP() << "MALLOC_MMAP_MAX_ is set";
  constexpr size_t kBytes = size_t{64} << 20;  // 16,384 pages
  EXPECT_GT(faults_to_reuse(kBytes), 10000);   // the default: unmapped, then faulted in again
  keep_freed_host_memory();
  EXPECT_LT(faults_to_reuse(kBytes), 100);
}

}  // namespace
}  // namespace gqe
