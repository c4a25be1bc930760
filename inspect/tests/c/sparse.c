// A batch that leaves its heap sparse: MB megabytes of mixed small objects
// (16 B-64 KiB, below glibc's mmap threshold), 63 of 64 freed, optionally
// malloc_trim(0), then SECONDS of sleep (the third argument, default 0:
// time for an allocator's own release), then idle until killed. Prints "READY live_kb=N" when
// idle, and sends SIGUSR1 to $HUGEGUARD_INSPECT_PID if set (how
// `hugeguard-inspect run` learns it is idle).
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  long total = (argc > 1 ? atol(argv[1]) : 128) << 20;
  int trim = argc > 2 && strcmp(argv[2], "trim") == 0;
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
  if (argc > 3) sleep((unsigned)atoi(argv[3]));
  printf("READY live_kb=%zu\n", live / 1024);
  fflush(stdout);
  const char *parent = getenv("HUGEGUARD_INSPECT_PID");
  if (parent) kill((pid_t)atol(parent), SIGUSR1);
  for (;;) pause();
}
