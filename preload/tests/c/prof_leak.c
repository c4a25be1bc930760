/* Keeps 40 MiB from one function (leak_here) and churns 64 MiB from another:
   the heap profile test reads its profile with google-pprof. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
__attribute__((noinline)) void **leak_here(int n, size_t size) {
    void **v = malloc(n * sizeof(void *));
    for (int i = 0; i < n; i++) { v[i] = malloc(size); memset(v[i], i, size); }
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
