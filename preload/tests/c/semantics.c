// C semantics of the exported ABI. Prints one line per failed check; exit 0
// when all hold.
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); failures++; } } while (0)

int main(void) {
  errno = 1234;
  free(NULL);
  CHECK(errno == 1234);
  void *p = malloc(100);
  errno = 4321;
  free(p);
  CHECK(errno == 4321);

  errno = 0;
  CHECK(malloc(SIZE_MAX - 4096) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(reallocarray(NULL, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);

  void *q = (void *)1;
  CHECK(posix_memalign(&q, 3, 64) == EINVAL && q == (void *)1);
  CHECK(posix_memalign(&q, 4, 64) == EINVAL);
  CHECK(posix_memalign(&q, 64, 100) == 0 && ((uintptr_t)q % 64) == 0);
  free(q);
  CHECK(posix_memalign(&q, 1 << 21, 10) == 0 && ((uintptr_t)q % (1 << 21)) == 0);
  free(q);
  q = aligned_alloc(4096, 8192);
  CHECK(q && ((uintptr_t)q % 4096) == 0);
  free(q);
  q = memalign(256, 10);
  CHECK(q && ((uintptr_t)q % 256) == 0);
  free(q);
  q = valloc(10);
  CHECK(q && ((uintptr_t)q % 4096) == 0);
  free(q);
  q = pvalloc(5000);
  CHECK(q && ((uintptr_t)q % 4096) == 0 && malloc_usable_size(q) >= 8192);
  free(q);

  for (size_t n = 0; n < 70000; n = n * 3 + 1) {
    char *m = malloc(n);
    CHECK(m != NULL && ((uintptr_t)m % 16) == 0);
    size_t u = malloc_usable_size(m);
    CHECK(u >= n);
    memset(m, 0x5a, u); // the whole usable size is ours
    free(m);
  }
  CHECK(malloc_usable_size(NULL) == 0);

  char *z = calloc(1000, 1000);
  int zero = 1;
  for (int i = 0; i < 1000000; i++) if (z[i]) zero = 0;
  CHECK(zero);
  free(z);

  char *r = realloc(NULL, 10);
  CHECK(r != NULL);
  strcpy(r, "abcdefghi");
  r = realloc(r, 100000);
  CHECK(r && strcmp(r, "abcdefghi") == 0);
  r = realloc(r, 5);
  CHECK(r && memcmp(r, "abcde", 5) == 0);
  CHECK(realloc(r, 0) == NULL);

  void *a = malloc(0), *b = malloc(0);
  CHECK(a && b && a != b);
  free(a);
  free(b);
  CHECK(mallopt(M_ARENA_MAX, 1) == 1);
  malloc_trim(0);
  printf("failures=%d\n", failures);
  return failures != 0;
}
