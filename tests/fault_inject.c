/* A full disk or a failing one, for the tests, without root: LD_PRELOAD this library and the
 * process's writes to some files fail as the kernel would fail them.
 *
 *   GQE_FAULT_PATH   the faults apply to files whose path contains this text (required)
 *   GQE_FAULT_ERRNO  ENOSPC (default: a full disk) or EIO (a failing one)
 *   GQE_FAULT_AFTER  bytes those files may still take, in total, before the faults start (default 0);
 *                    the write that crosses the limit writes what fits, as a filling disk does
 *   GQE_FAULT_ON     write (default): write(2) and its kin fail past the limit;
 *                    fsync: writes succeed, and fsync(2) of such a file fails once the limit is
 *                    passed (data that could not be written back: EIO appears at fsync)
 *
 * It wraps write, pwrite, pwrite64, writev, fsync and fdatasync, the calls gqe's files go through
 * (common/files.h) and Python's too (the plotting script). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static const char* fault_path;
static int fault_errno = ENOSPC;
static int on_fsync;
static atomic_llong budget;

__attribute__((constructor)) static void init(void) {
  fault_path = getenv("GQE_FAULT_PATH");
  const char* e = getenv("GQE_FAULT_ERRNO");
  if (e && strcmp(e, "EIO") == 0) fault_errno = EIO;
  const char* after = getenv("GQE_FAULT_AFTER");
  atomic_store(&budget, after ? atoll(after) : 0);
  const char* on = getenv("GQE_FAULT_ON");
  on_fsync = on && strcmp(on, "fsync") == 0;
}

static int targeted(int fd) {
  if (!fault_path || !*fault_path) return 0;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = '\0';
  return strstr(path, fault_path) != NULL;
}

/* How many of `size` bytes a targeted write may still take (all of them for other files). */
static size_t allowed(int fd, size_t size) {
  if (!targeted(fd)) return size;
  const long long before = atomic_fetch_sub(&budget, (long long)size);
  if (on_fsync) return size;  /* the bytes go out; fsync reports them lost */
  if (before <= 0) return 0;
  return before >= (long long)size ? size : (size_t)before;
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

/* Whether a write of `size` bytes is refused outright (errno set); else *ok of them go through. */
static int refused(int fd, size_t size, size_t* ok) {
  *ok = allowed(fd, size);
  if (*ok > 0 || size == 0) return 0;
  errno = fault_errno;
  return 1;
}

ssize_t write(int fd, const void* buf, size_t size) {
  size_t ok;
  return refused(fd, size, &ok) ? -1 : REAL(write)(fd, buf, ok);
}

ssize_t pwrite(int fd, const void* buf, size_t size, off_t offset) {
  size_t ok;
  return refused(fd, size, &ok) ? -1 : REAL(pwrite)(fd, buf, ok, offset);
}

ssize_t pwrite64(int fd, const void* buf, size_t size, off64_t offset) {
  size_t ok;
  return refused(fd, size, &ok) ? -1 : REAL(pwrite64)(fd, buf, ok, offset);
}

ssize_t writev(int fd, const struct iovec* iov, int count) {
  size_t size = 0;
  for (int i = 0; i < count; ++i) size += iov[i].iov_len;
  size_t ok;
  if (refused(fd, size, &ok)) return -1;
  if (ok == size) return REAL(writev)(fd, iov, count);
  /* Part of it: the leading buffers up to what fits. */
  ssize_t done = 0;
  for (int i = 0; i < count && (size_t)done < ok; ++i) {
    const size_t take = iov[i].iov_len < ok - (size_t)done ? iov[i].iov_len : ok - (size_t)done;
    const ssize_t n = REAL(write)(fd, iov[i].iov_base, take);
    if (n < 0) return done > 0 ? done : -1;
    done += n;
  }
  return done;
}

static int sync_fails(int fd) { return on_fsync && targeted(fd) && atomic_load(&budget) < 0; }

int fsync(int fd) {
  if (sync_fails(fd)) {
    errno = fault_errno;
    return -1;
  }
  return REAL(fsync)(fd);
}

int fdatasync(int fd) {
  if (sync_fails(fd)) {
    errno = fault_errno;
    return -1;
  }
  return REAL(fdatasync)(fd);
}
