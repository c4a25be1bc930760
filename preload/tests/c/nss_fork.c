// fork() after the C library has allocated state of its own (NSS: glibc
// takes and releases a lock inside that state during fork, after the
// atfork handlers), while a thread writes the heap and then a global.
// Each child checks that it never sees the global ahead of the heap (the
// heap it got is not older than the rest of its memory), that a write of
// its own does not reach the parent, and that NSS and malloc still work.
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"

struct shared { volatile long v; volatile long mark; };
static struct shared *h;
static volatile long ahead; // written after h->v, outside the heap
static volatile int stop;

static void *writer(void *arg) {
  (void)arg;
  for (long i = 1; !stop; i++) {
    h->v = i;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    ahead = i;
    if (i % 64 == 0) free(malloc(48)); // and the allocator now and then
  }
  return NULL;
}

int main(void) {
  if (!getpwuid(getuid())) { printf("getpwuid failed\n"); return 1; }
  h = calloc(1, sizeof *h);
  pthread_t t;
  pthread_create(&t, NULL, writer, NULL);
  int forks = 50;
  for (int n = 0; n < forks; n++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(10);
      long a = ahead, v = h->v;
      if (a > v) _exit(4);
      h->mark = 1;
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
    if (h->mark != 0) { printf("the child's write reached the parent\n"); stop = 1; return 1; }
  }
  stop = 1;
  pthread_join(t, NULL);
  free(h);
  printf("nss_forks=%d ok\n", forks);
  return 0;
}
