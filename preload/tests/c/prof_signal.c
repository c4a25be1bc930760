/* Keeps 8 MiB from leak_here, asks for a heap profile with SIGUSR2, keeps
   8 MiB more and asks again: HUGEGUARD_PROF_SIGNAL=USR2 writes them to
   $HUGEGUARD_PROF_PATH.1 and .2 (the heap profile's signal test). The
   program allocates nothing while it waits: the background thread writes. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((noinline)) void **leak_here(int n, size_t size) {
    void **v = malloc(n * sizeof(void *));
    for (int i = 0; i < n; i++) { v[i] = malloc(size); memset(v[i], i, size); }
    return v;
}
static int wait_for(const char *base, int n) {
    char path[4200];
    snprintf(path, sizeof path, "%s.%d", base, n);
    for (int i = 0; i < 500; i++) {
        if (access(path, F_OK) == 0) return 1;
        usleep(10000);
    }
    return 0;
}
int main(void) {
    const char *base = getenv("HUGEGUARD_PROF_PATH");
    if (!base) return 2;
    void **a = leak_here(2048, 4096);
    raise(SIGUSR2);
    if (!wait_for(base, 1)) { printf("no profile 1\n"); return 3; }
    void **b = leak_here(2048, 4096);
    raise(SIGUSR2);
    if (!wait_for(base, 2)) { printf("no profile 2\n"); return 4; }
    printf("written %p %p\n", (void *)a, (void *)b);
    return 0;
}
