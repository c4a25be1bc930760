// C++ operator new and delete, all twenty Itanium ABI forms, called from C
// through dlsym (no C++ compiler needed). Modes:
//   forms      every form is this library's, allocates aligned usable
//              blocks, frees them, and a failing nothrow form returns null
//              (no C++ runtime loaded); prints failures=N
//   abort      a failing throwing form with no C++ runtime: the library's
//              message and SIGABRT
//   delete     delete of a pointer that is no block: the library's
//              message and SIGABRT
//   runtime    with libstdc++ loaded: a failing nothrow form runs the
//              program's new-handler until it gives up, then returns null;
//              then a failing throwing form throws std::bad_alloc, which
//              terminates the program (exit 77: no libstdc++.so.6 here)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); failures++; } } while (0)

typedef void *(*new_fn)(size_t);
typedef void *(*new_nt_fn)(size_t, const void *);
typedef void *(*new_al_fn)(size_t, size_t);
typedef void *(*new_al_nt_fn)(size_t, size_t, const void *);
typedef void (*del_fn)(void *);
typedef void (*del_sz_fn)(void *, size_t);
typedef void (*del_sz_al_fn)(void *, size_t, size_t);
typedef void (*del_al_nt_fn)(void *, size_t, const void *);

static const char nothrow_tag = 0;
static const void *nt = &nothrow_tag;

static const char *names[] = {
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t", "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
};

static void *sym(const char *name) {
  void *f = dlsym(RTLD_DEFAULT, name);
  if (!f) { printf("missing %s\n", name); exit(2); }
  return f;
}

// Whether `f` lies in the object that defines the `malloc` this program uses.
static int same_object_as_malloc(void *f) {
  Dl_info a, b;
  return dladdr(f, &a) && dladdr((void *)&malloc, &b) && a.dli_fbase == b.dli_fbase;
}

static void fill(void *p, size_t n) {
  CHECK(p != NULL && malloc_usable_size(p) >= n);
  if (p) memset(p, 0xa5, n);
}

static int forms(void) {
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    CHECK(same_object_as_malloc(sym(names[i])));
  new_fn nw = sym("_Znwm"), na = sym("_Znam");
  new_nt_fn nwt = sym("_ZnwmRKSt9nothrow_t"), nat = sym("_ZnamRKSt9nothrow_t");
  new_al_fn nwa = sym("_ZnwmSt11align_val_t"), naa = sym("_ZnamSt11align_val_t");
  new_al_nt_fn nwat = sym("_ZnwmSt11align_val_tRKSt9nothrow_t");
  new_al_nt_fn naat = sym("_ZnamSt11align_val_tRKSt9nothrow_t");
  del_fn dl = sym("_ZdlPv"), da = sym("_ZdaPv");
  del_sz_fn dls = sym("_ZdlPvm"), das = sym("_ZdaPvm");
  del_sz_fn dla = sym("_ZdlPvSt11align_val_t"), daa = sym("_ZdaPvSt11align_val_t");
  del_sz_al_fn dlsa = sym("_ZdlPvmSt11align_val_t"), dasa = sym("_ZdaPvmSt11align_val_t");
  void (*dlt)(void *, const void *) = sym("_ZdlPvRKSt9nothrow_t");
  void (*dat)(void *, const void *) = sym("_ZdaPvRKSt9nothrow_t");
  del_al_nt_fn dlat = sym("_ZdlPvSt11align_val_tRKSt9nothrow_t");
  del_al_nt_fn daat = sym("_ZdaPvSt11align_val_tRKSt9nothrow_t");

  // new(0) gives distinct blocks.
  void *z1 = nw(0), *z2 = nw(0);
  CHECK(z1 && z2 && z1 != z2);
  dl(z1);
  dls(z2, 0);
  for (size_t n = 1; n < 300000; n = n * 5 + 3) {
    void *p = nw(n), *q = na(n), *r = nwt(n, nt), *s = nat(n, nt);
    CHECK(((uintptr_t)p | (uintptr_t)q | (uintptr_t)r | (uintptr_t)s) % 16 == 0);
    fill(p, n), fill(q, n), fill(r, n), fill(s, n);
    dl(p), das(q, n), dlt(r, nt), dat(s, nt);
    p = nw(n), q = na(n);
    fill(p, n), fill(q, n);
    dls(p, n), da(q);
    for (size_t al = 32; al <= (1 << 21); al <<= 3) {
      void *a = nwa(n, al), *b = naa(n, al), *c = nwat(n, al, nt), *d = naat(n, al, nt);
      CHECK(((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) % al == 0);
      fill(a, n), fill(b, n), fill(c, n), fill(d, n);
      dla(a, al), dasa(b, n, al), dlat(c, al, nt), daat(d, al, nt);
      a = nwa(n, al), b = naa(n, al);
      fill(a, n), fill(b, n);
      dlsa(a, n, al), daa(b, al);
    }
  }
  // delete of null does nothing, in every form.
  dl(NULL), da(NULL), dls(NULL, 8), das(NULL, 8), dlt(NULL, nt), dat(NULL, nt);
  dla(NULL, 64), daa(NULL, 64), dlsa(NULL, 8, 64), dasa(NULL, 8, 64);
  dlat(NULL, 64, nt), daat(NULL, 64, nt);
  // Out of memory without a C++ runtime: the nothrow forms return null.
  CHECK(nwt(SIZE_MAX / 2, nt) == NULL && nat(SIZE_MAX / 2, nt) == NULL);
  CHECK(nwat(SIZE_MAX / 2, 64, nt) == NULL && naat(SIZE_MAX / 2, 64, nt) == NULL);
  printf("failures=%d\n", failures);
  return failures != 0;
}

static int handler_calls;
static void (*(*set_handler)(void (*)(void)))(void);

// Gives up on the third call: the C++ runtime then throws std::bad_alloc.
static void handler(void) {
  if (++handler_calls == 3) set_handler(NULL);
}

static int runtime(void) {
  if (!dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL)) {
    printf("no libstdc++.so.6: %s\n", dlerror());
    return 77;
  }
  set_handler = sym("_ZSt15set_new_handlerPFvvE");
  set_handler(handler);
  new_nt_fn nwt = sym("_ZnwmRKSt9nothrow_t");
  void *p = nwt(SIZE_MAX / 2, nt);
  printf("nothrow=%s handler_calls=%d\n", p ? "block" : "null", handler_calls);
  fflush(stdout);
  new_fn nw = sym("_Znwm");
  p = nw(SIZE_MAX / 2);
  printf("survived %p\n", p);
  return 1;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "forms";
  if (!strcmp(mode, "forms")) return forms();
  if (!strcmp(mode, "abort")) {
    new_fn nw = sym("_Znwm");
    void *p = nw(SIZE_MAX / 2);
    printf("survived %p\n", p);
    return 1;
  }
  if (!strcmp(mode, "delete")) {
    static char not_a_block[64];
    del_fn dl = sym("_ZdlPv");
    dl(not_a_block + 16);
    printf("survived\n");
    return 1;
  }
  if (!strcmp(mode, "runtime")) return runtime();
  return 2;
}
