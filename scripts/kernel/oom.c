// Under `ulimit -v`: malloc ever larger blocks until one fails; the failure
// must be NULL with errno == ENOMEM, and the allocator must still serve
// ordinary requests afterwards. Prints one RESULT line; exit 0 when so.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
  void *held[64];
  int n = 0;
  size_t size = 1 << 20, granted = 0;
  int err = 0;
  while (n < 64) {
    errno = 0;
    void *p = malloc(size);
    if (!p) {
      err = errno;
      break;
    }
    memset(p, 7, 1 << 16);
    held[n++] = p;
    granted += size;
    size *= 2;
  }
  errno = 0;
  void *c = calloc(1, (size_t)1 << 40); // far beyond any limit
  int calloc_err = errno;
  for (int i = 0; i < n; i++) free(held[i]);
  // Still usable: small and large blocks, written and checked.
  int ok = 1;
  for (int i = 0; i < 100000 && ok; i++) {
    unsigned *q = malloc(64);
    if (!q) { ok = 0; break; }
    q[0] = i; q[15] = i;
    ok = q[0] == (unsigned)i && q[15] == (unsigned)i;
    free(q);
  }
  char *big = malloc(8 << 20);
  ok = ok && big && (memset(big, 9, 8 << 20), big[(8 << 20) - 1] == 9);
  free(big);
  printf("RESULT case=oom-c granted_mb=%zu failed_at_mb=%zu errno_enomem=%d calloc_null=%d calloc_enomem=%d usable=%d\n",
         granted >> 20, size >> 20, err == ENOMEM, c == NULL, calloc_err == ENOMEM, ok);
  return (err == ENOMEM && c == NULL && calloc_err == ENOMEM && ok) ? 0 : 1;
}
