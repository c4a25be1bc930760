/* What the kernel offers a mesh mode (issue 15), probed on this machine:
 * a memfd heap mapped shared; one physical page behind two virtual pages
 * (the second mapped MAP_FIXED onto the first's file offset); a hole
 * punched into the file frees the page (RSS and the file's blocks);
 * MADV_COLLAPSE on the shared heap (huge pages for shmem follow
 * /sys/kernel/mm/transparent_hugepage/shmem_enabled); userfaultfd
 * write-protection of shmem (UFFD_FEATURE_WP_HUGETLBFS_SHMEM), with and
 * without UFFD_USER_MODE_ONLY.
 *
 * cc -O2 -o /tmp/mesh_probe scripts/kernel/mesh_probe.c && /tmp/mesh_probe */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static long field_kb(const char *file, const char *key) {
    char buf[4096], fmt[64];
    snprintf(fmt, sizeof fmt, "%s: %%ld", key);
    FILE *f = fopen(file, "r");
    long v = -1;
    while (f && fgets(buf, sizeof buf, f))
        if (sscanf(buf, fmt, &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static long rss_kb(void) { return field_kb("/proc/self/status", "RssShmem"); }

static long file_kb(int fd) {
    struct stat st;
    fstat(fd, &st);
    return st.st_blocks / 2;
}

static void uffd_probe(int flags, const char *name) {
    int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | flags);
    if (uffd < 0) {
        printf("userfaultfd(%s): %s\n", name, strerror(errno));
        return;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
    if (ioctl(uffd, UFFDIO_API, &api) < 0)
        printf("userfaultfd(%s): UFFDIO_API with WP for shmem: %s\n", name, strerror(errno));
    else
        printf("userfaultfd(%s): write-protect of shmem available (features %#llx)\n", name,
               (unsigned long long)api.features);
    close(uffd);
}

int main(void) {
    const size_t HUGE = 2 << 20, PAGE = 4096;
    int fd = memfd_create("hugeguard-probe", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 1UL << 40) < 0) {
        perror("memfd_create/ftruncate 1 TiB");
        return 1;
    }
    printf("memfd of 1 TiB (sparse): ok\n");
    /* A 2 MiB-aligned shared mapping of the first 4 MiB of the file. */
    char *raw = mmap(NULL, 3 * HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *heap = (char *)(((unsigned long)raw + HUGE - 1) & ~(HUGE - 1));
    heap = mmap(heap, 2 * HUGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    long base = rss_kb();
    /* Two sparse pages: page 0 holds an object at offset 0, page 1 at 2048. */
    strcpy(heap, "object of span A");
    strcpy(heap + PAGE + 2048, "object of span B");
    printf("two pages touched: RssShmem +%ld KiB, file %ld KiB\n", rss_kb() - base, file_kb(fd));
    /* Mesh B onto A: copy B's object into A's page, map B's virtual page
     * onto A's file page, punch B's file page out. */
    memcpy(heap + 2048, heap + PAGE + 2048, 32);
    if (mmap(heap + PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
        perror("remap");
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE, PAGE) < 0)
        perror("punch hole");
    printf("meshed: B reads \"%s\" through its own address, A \"%s\"; RssShmem +%ld KiB, file %ld KiB\n",
           heap + PAGE + 2048, heap, rss_kb() - base, file_kb(fd));
    volatile char *v = heap;
    v[PAGE + 2048] = 'O';
    printf("a write through B's address shows at A's page: %s\n", v[2048] == 'O' ? "yes" : "NO");
    /* Huge pages for the shared heap. */
    memset(heap + HUGE, 1, HUGE);
    madvise(heap + HUGE, HUGE, MADV_HUGEPAGE);
    int r = madvise(heap + HUGE, HUGE, MADV_COLLAPSE);
    printf("MADV_COLLAPSE of a dense shared 2 MiB range: %s (ShmemPmdMapped %ld KiB)\n",
           r == 0 ? "collapsed" : strerror(errno), field_kb("/proc/self/smaps_rollup", "ShmemPmdMapped"));
    char shmem[128] = "?";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
    if (f && fgets(shmem, sizeof shmem, f)) shmem[strcspn(shmem, "\n")] = 0;
    if (f) fclose(f);
    printf("shmem_enabled: %s\n", shmem);
    uffd_probe(0, "all faults");
    uffd_probe(UFFD_USER_MODE_ONLY, "UFFD_USER_MODE_ONLY");
    FILE *u = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
    int unpriv = -1;
    if (u && fscanf(u, "%d", &unpriv) == 1) printf("vm.unprivileged_userfaultfd: %d\n", unpriv);
    return 0;
}
