// Frees a pointer this allocator never handed out: must abort with a message.
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#include <stdlib.h>
int main(int argc, char **argv) {
  (void)argv;
  int on_stack[4];
  char *p = malloc(64);
  if (argc > 1) {
    free(p);
    free(p + 8); // interior pointer
  }
  free(on_stack);
  return 0;
}
