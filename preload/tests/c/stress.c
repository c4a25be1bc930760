// Threads allocate cookie-checked blocks, hand them to other threads through a
// shared ring, which verify and free (or realloc) them. Exit 0 when no block
// was corrupted.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING 4096
static void *ring[RING];
static size_t sizes[RING];
static int head, count;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long bad;

static unsigned char cookie(size_t size, size_t i) { return (unsigned char)(size * 31 + i * 7); }

static void fill(unsigned char *p, size_t n) { for (size_t i = 0; i < n; i++) p[i] = cookie(n, i); }
static int check(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) if (p[i] != cookie(n, i)) return 0;
  return 1;
}

static void *worker(void *arg) {
  uint64_t s = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull | 1;
  for (int op = 0; op < 60000; op++) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    size_t n = (s % 100 < 90) ? 1 + s % 512 : 1 + s % 70000;
    unsigned char *p = malloc(n);
    if (!p) { __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED); continue; }
    fill(p, n);
    void *old = NULL; size_t oldn = 0;
    pthread_mutex_lock(&mu);
    if (count == RING) { old = ring[head]; oldn = sizes[head]; ring[head] = p; sizes[head] = n; head = (head + 1) % RING; }
    else { int slot = (head + count) % RING; ring[slot] = p; sizes[slot] = n; count++; }
    pthread_mutex_unlock(&mu);
    if (old) {
      if (!check(old, oldn)) __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
      if (s % 5 == 0) {
        size_t m = 1 + (s >> 20) % 9000;
        unsigned char *q = realloc(old, m);
        size_t keep = oldn < m ? oldn : m;
        for (size_t i = 0; i < keep; i++) if (q[i] != cookie(oldn, i)) { __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED); break; }
        free(q);
      } else {
        free(old);
      }
    }
  }
  return NULL;
}

int main(void) {
  for (int round = 0; round < 3; round++) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1 + round * 4));
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  }
  for (int i = 0; i < count; i++) {
    int slot = (head + i) % RING;
    if (!check(ring[slot], sizes[slot])) bad++;
    free(ring[slot]);
  }
  printf("bad=%ld\n", bad);
  return bad != 0;
}
