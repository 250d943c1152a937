// How the process's malloc treats large freed blocks. glibc hands every freed block of 32 MB or
// more (and, past a small threshold, the top of its heap) back to the kernel, so a loop that
// allocates the same activations again each step page-faults them in again each step: a tiny
// model's CPU training step took ~57K page faults and ran 15-20% slower for it.
#pragma once

#include <optional>

namespace gqe {

// Bytes of host memory a new allocation can still get: the kernel's MemAvailable plus free swap,
// capped by this process's cgroup limit (a container's) where one is set. Nothing if unreadable.
std::optional<double> host_memory_available();

// Keep freed memory in the process for reuse, as torch's caching allocator does on a GPU: no
// mmap'd blocks, no trimming. Resident memory then stays at its peak. A MALLOC_MMAP_MAX_ or
// MALLOC_TRIM_THRESHOLD_ environment variable (glibc's tunables) is left to decide instead.
// No effect without glibc.
void keep_freed_host_memory();

}  // namespace gqe
