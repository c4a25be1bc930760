// Shared by the fork tests: waits for child `n` (`pid`) and says whether it
// failed (did not exit with status 0), printing why.
#include <stdio.h>
#include <sys/wait.h>

static int child_failed(pid_t pid, int n) {
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    printf("child %d failed: status %d\n", n, status);
    return 1;
  }
  return 0;
}
