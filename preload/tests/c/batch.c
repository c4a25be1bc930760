// The release issue's scenario in C: 256 MB of mixed objects, 63 of 64 freed,
// idle (no allocator call) for 3 s, then the worst-case khugepaged simulated
// (MADV_COLLAPSE on every 2 MiB chunk with a resident page). Prints RSS.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>
#include <malloc.h>

static long rss_kb(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY);
  int n = read(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  long size, res;
  sscanf(buf, "%ld %ld", &size, &res);
  return res * 4;
}

static char maps[1 << 18];

static void simulate(long *collapsed, long *refused) {
  int fd = open("/proc/self/maps", O_RDONLY);
  int len = 0, n;
  while ((n = read(fd, maps + len, sizeof maps - 1 - len)) > 0) len += n;
  close(fd);
  maps[len] = 0;
  unsigned char vec[512];
  for (char *line = maps; line && *line; ) {
    char *next = strchr(line, '\n');
    if (next) *next++ = 0;
    uintptr_t start, end; char perms[8]; unsigned long off, inode; char dev[16]; char path[256] = "";
    if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %255s", &start, &end, perms, &off, dev, &inode, path) >= 6 &&
        inode == 0 && perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p' &&
        (path[0] == 0 || path[0] == '[')) {
      for (uintptr_t c = (start + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1); c + (2 << 20) <= end; c += 2 << 20) {
        if (mincore((void *)c, 2 << 20, vec) == 0) {
          int any = 0;
          for (int i = 0; i < 512; i++) any |= vec[i] & 1;
          if (any) { if (madvise((void *)c, 2 << 20, 25 /* MADV_COLLAPSE */) == 0) (*collapsed)++; else (*refused)++; }
        }
      }
    }
    line = next;
  }
}

int main(int argc, char **argv) {
  long total = (argc > 1 ? atol(argv[1]) : 256) << 20;
  int trim = argc > 2 && argv[2][0] == 't';
  size_t cap = total / 1500 + 1024, n = 0, kept = 0, live = 0;
  void **all = malloc(cap * sizeof *all);
  size_t *sz = malloc(cap * sizeof *sz);
  uint64_t s = 88172645463325252ull;
  long bytes = 0;
  while (bytes < total && n < cap) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    size_t size = s % 100 < 70 ? 16 + s % 241 : s % 100 < 95 ? 256 + s % 3841 : 4096 + s % 61441;
    all[n] = malloc(size);
    memset(all[n], (int)n, size);
    sz[n++] = size;
    bytes += size;
  }
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    if (s % 64 == 0) { all[kept] = all[i]; sz[kept++] = sz[i]; live += sz[i]; }
    else free(all[i]);
  }
  if (trim) malloc_trim(0);
  sleep(3);
  long idle = rss_kb();
  long collapsed = 0, refused = 0;
  simulate(&collapsed, &refused);
  long after = rss_kb();
  printf("live_kb=%zu idle_kb=%ld after_kb=%ld collapsed=%ld refused=%ld\n", live / 1024, idle, after, collapsed, refused);
  return 0;
}
