// Allocation before main (a constructor), during thread exit (a pthread key
// destructor and a TLS object's teardown), and after the allocator's own
// thread-exit hook has run. Exit 0 when every block read back intact.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *early;
static pthread_key_t key;
static int bad;

__attribute__((constructor)) static void before_main(void) {
  early = malloc(1000);
  memset(early, 'e', 1000);
}

static void on_exit_of_thread(void *value) {
  char *v = value;
  for (int i = 0; i < 500; i++) if (v[i] != 'k') __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
  free(v);
  // Allocate and free while the thread is being torn down.
  for (int i = 1; i < 200; i++) {
    char *p = malloc(i * 37);
    memset(p, i, i * 37);
    free(p);
  }
}

static void *thread_main(void *arg) {
  (void)arg;
  char *v = malloc(500);
  memset(v, 'k', 500);
  pthread_setspecific(key, v);
  void *keep[100];
  for (int i = 0; i < 100; i++) keep[i] = malloc(64 + i);
  for (int i = 0; i < 100; i++) free(keep[i]);
  return NULL;
}

int main(void) {
  pthread_key_create(&key, on_exit_of_thread);
  for (int round = 0; round < 50; round++) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, thread_main, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  }
  for (int i = 0; i < 1000; i++) if (early[i] != 'e') bad++;
  free(early);
  printf("bad=%d\n", bad);
  return bad != 0;
}
