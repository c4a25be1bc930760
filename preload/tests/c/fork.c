// fork() from a process whose threads are busy in the allocator; each child
// allocates, checks and exits. The parent fails if a child hangs or fails.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"

static volatile int stop;

static void *churn(void *arg) {
  (void)arg;
  void *keep[256] = {0};
  unsigned i = 0;
  while (!stop) {
    unsigned k = i % 256;
    free(keep[k]);
    keep[k] = malloc(1 + (i * 131) % 40000);
    memset(keep[k], 1, 1 + (i * 131) % 40000);
    i++;
  }
  for (int k = 0; k < 256; k++) free(keep[k]);
  return NULL;
}

int main(void) {
  pthread_t t[3];
  for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, NULL);
  for (int n = 0; n < 30; n++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(10);
      char *p[1000];
      for (int i = 0; i < 1000; i++) { p[i] = malloc(100 + i); memset(p[i], i & 0xff, 100 + i); }
      for (int i = 0; i < 1000; i++) { if ((unsigned char)p[i][99 + i] != (i & 0xff)) _exit(3); free(p[i]); }
      char *big = malloc(8 << 20);
      memset(big, 7, 8 << 20);
      free(big);
      _exit(0);
    }
    if (child_failed(pid, n)) {
      stop = 1;
      return 1;
    }
  }
  stop = 1;
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  printf("forks=30 ok\n");
  return 0;
}
