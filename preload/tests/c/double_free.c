// A double free while the block is still in the freeing thread's cache
// (the second free comes right after the first). Under HUGEGUARD_HARDEN=1
// it must abort with a one-line report; "survived" means it went unnoticed.
#include <stdio.h>
#include <stdlib.h>
int main(void) {
  char *keep = malloc(48);
  char *p = malloc(48);
  free(p);
  free(p);
  printf("survived %p %p\n", (void *)keep, (void *)p);
  return 0;
}
