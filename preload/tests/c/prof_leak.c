/* Keeps 40 MiB from one function (leak_here) and churns 64 MiB from another:
   the heap profile test reads its profile with google-pprof. Half of what
   leak_here keeps comes from C++ operator new where the process defines it
   (the LD_PRELOAD library does), so that entry must be known to the profile
   too. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
__attribute__((noinline)) void **leak_here(int n, size_t size) {
    void *(*new_fn)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
    if (!new_fn) new_fn = malloc;
    void **v = malloc(n * sizeof(void *));
    for (int i = 0; i < n; i++) {
        v[i] = i % 2 ? new_fn(size) : malloc(size);
        memset(v[i], i, size);
    }
    return v;
}
__attribute__((noinline)) size_t churn(int rounds) {
    size_t s = 0;
    for (int r = 0; r < rounds; r++) {
        void **v = malloc(1024 * sizeof(void *));
        for (int i = 0; i < 1024; i++) { v[i] = calloc(1, 1000); s += ((char *)v[i])[0]; }
        for (int i = 0; i < 1024; i++) free(v[i]);
        free(v);
    }
    return s;
}
int main(void) {
    void **kept = leak_here(10240, 4096);
    printf("%zu %p\n", churn(64), (void *)kept);
    return 0;
}
