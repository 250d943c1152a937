#include "common/host_memory.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace gqe {

namespace {

// A value of /proc/meminfo in bytes ("MemAvailable:   24252628 kB").
std::optional<double> meminfo(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    double kib = 0;
    if (fields >> kib) return kib * 1024;
  }
  return std::nullopt;
}

// A cgroup file's number; nothing for "max" (no limit) or a missing file.
std::optional<double> cgroup_number(const char* file) {
  std::ifstream in(file);
  double v = 0;
  if (in >> v) return v;
  return std::nullopt;
}

}  // namespace

std::optional<double> host_memory_available() {
  const auto available = meminfo("MemAvailable");
  if (!available) return std::nullopt;
  double bytes = *available + meminfo("SwapFree").value_or(0);
  // cgroup v2, then v1 (whose "no limit" is a huge number). Its usage counts the page cache, of
  // which the inactive part is reclaimed before anything fails (the working set, as kubelet counts).
  struct Cgroup {
    const char *limit, *usage, *stat, *inactive_file;
  };
  for (const Cgroup& c : {Cgroup{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
                                 "inactive_file"},
                          Cgroup{"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                                 "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"}}) {
    const auto limit = cgroup_number(c.limit), usage = cgroup_number(c.usage);
    if (!limit || !usage || *limit >= 1e18) continue;
    double reclaimable = 0;
    std::ifstream stat(c.stat);
    for (std::string key; stat >> key;) {
      double v = 0;
      if (!(stat >> v)) break;
      if (key == c.inactive_file) reclaimable = v;
    }
    bytes = std::min(bytes, std::max(0.0, *limit - *usage + reclaimable));
  }
  return bytes;
}

void keep_freed_host_memory() {
#ifdef __GLIBC__
  // Both: a trim threshold alone also freezes the mmap threshold at 128 KB, which is worse.
  if (std::getenv("MALLOC_MMAP_MAX_") == nullptr) mallopt(M_MMAP_MAX, 0);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

}  // namespace gqe
