// fork() after the C library has allocated state of its own (NSS: glibc
// takes and releases a lock inside that state during fork, after the
// atfork handlers), while threads write the heap and then a global. There
// are more writers than this machine's cores, so some are off the CPU at
// any moment of a fork. Each child checks that it never sees a global
// ahead of the heap (the heap it got is not older than the rest of its
// memory), that a write of its own does not reach the parent, and that
// NSS and malloc still work.
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"

#define WRITERS 4
struct shared { volatile long v; volatile long mark; };
static struct shared *h[WRITERS];
static volatile long ahead[WRITERS]; // written after h[i]->v, outside the heap
static volatile int stop;

static void *writer(void *arg) {
  long w = (long)arg;
  for (long i = 1; !stop; i++) {
    h[w]->v = i;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    ahead[w] = i;
    if (i % 64 == 0) free(malloc(48)); // and the allocator now and then
  }
  return NULL;
}

int main(void) {
  if (!getpwuid(getuid())) { printf("getpwuid failed\n"); return 1; }
  pthread_t t[WRITERS];
  for (long w = 0; w < WRITERS; w++) h[w] = calloc(1, sizeof *h[w]);
  for (long w = 0; w < WRITERS; w++) pthread_create(&t[w], NULL, writer, (void *)w);
  int forks = 200;
  for (int n = 0; n < forks; n++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(10);
      for (int w = 0; w < WRITERS; w++) {
        long a = ahead[w], v = h[w]->v;
        if (a > v) _exit(4);
        h[w]->mark = 1;
      }
      if (!getpwuid(getuid())) _exit(5);
      char *p = malloc(1000);
      memset(p, 3, 1000);
      free(p);
      _exit(0);
    }
    if (child_failed(pid, n)) {
      stop = 1;
      return 1;
    }
    for (int w = 0; w < WRITERS; w++)
      if (h[w]->mark != 0) { printf("the child's write reached the parent\n"); stop = 1; return 1; }
  }
  stop = 1;
  for (int w = 0; w < WRITERS; w++) pthread_join(t[w], NULL);
  for (int w = 0; w < WRITERS; w++) free(h[w]);
  printf("nss_forks=%d ok\n", forks);
  return 0;
}
