/* Programs whose last thread ends with pthread_exit or by returning from its
 * start routine: POSIX says the process then exits with status 0. Under the
 * library, its background thread must not keep the process alive.
 *
 *   last_thread exit      the program from issue 9: main calls pthread_exit
 *                         after a worker that allocated has ended
 *   last_thread quiet     main calls pthread_exit; the last thread to end
 *                         never called the allocator (no exit hook of ours)
 *   last_thread forked    a worker thread forks; in the child it is the only
 *                         thread, starts and joins another, and returns (the
 *                         CPython test_3_join_in_forked_from_thread shape);
 *                         the parent checks the child's status
 *   last_thread wait      main calls pthread_exit; a worker waits for a
 *                         signal (the test sends SIGTERM)
 *   last_thread idle      main churns, then sleeps 9 s and returns (the test
 *                         counts the context switches of the idle process)
 * Each prints "threads=N" (the process's threads, ours included) once the
 * background thread has had time to start, so the test can tell it ran. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void churn(void) {
  /* Small objects through the thread cache and the central lists (starts
   * the background thread), and a large block. */
  void *p[4096];
  for (int i = 0; i < 4096; i++) { p[i] = malloc(48 + i % 200); memset(p[i], 1, 48); }
  for (int i = 0; i < 4096; i++) free(p[i]);
  char *big = malloc(4 << 20);
  memset(big, 1, 4 << 20);
  free(big);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, 0);
}

static int threads(void) {
  char line[256];
  int n = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  fclose(f);
  return n;
}

static void *worker(void *a) {
  churn();
  return a;
}

static void *quiet(void *a) {
  sleep_ms(300); /* outlives main; allocates nothing */
  return a;
}

static void *waiter(void *a) {
  for (;;) pause();
  return a;
}

static void *joined(void *a) {
  churn();
  return a;
}

static void *forker(void *a) {
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); exit(2); }
  if (pid == 0) {
    /* Child: this thread is the only one (and the thread-group leader). */
    churn();
    pthread_t t;
    pthread_create(&t, 0, joined, 0);
    pthread_join(t, 0);
    printf("child threads=%d\n", threads());
    fflush(stdout);
    return a; /* no exit(): the process must end with this thread */
  }
  int st;
  /* The parent waits at most 5 s for the child. */
  for (int i = 0; i < 500; i++) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      printf("child %s status=%d\n", WIFEXITED(st) ? "exited" : "killed",
             WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
      fflush(stdout);
      return a;
    }
    sleep_ms(10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  printf("child hung\n");
  fflush(stdout);
  return a;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "exit";
  pthread_t t;
  if (!strcmp(mode, "exit")) {
    pthread_create(&t, 0, worker, 0);
    churn();
    pthread_join(t, 0);
    sleep_ms(50);
    printf("threads=%d\n", threads());
  } else if (!strcmp(mode, "quiet")) {
    churn();
    sleep_ms(50);
    pthread_create(&t, 0, quiet, 0);
    printf("threads=%d\n", threads());
  } else if (!strcmp(mode, "forked")) {
    churn();
    pthread_create(&t, 0, forker, 0);
    pthread_join(t, 0);
    return 0;
  } else if (!strcmp(mode, "idle")) {
    churn();
    sleep_ms(50);
    printf("threads=%d\n", threads());
    fflush(stdout);
    sleep_ms(9000);
    return 0;
  } else if (!strcmp(mode, "wait")) {
    churn();
    pthread_create(&t, 0, waiter, 0);
    sleep_ms(50);
    printf("threads=%d\n", threads());
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  fflush(stdout);
  pthread_exit(0);
}
