/* Counting allocator hooks for perf/bench_alloc.py: how many allocation CALLS a process makes.
 *
 * Loaded into the measured process with LD_PRELOAD; counts go to a small file shared with
 * the benchmark (ALLOC_COUNT_FILE, mmap'd), so reading them costs the measured process
 * nothing. Two families, each split between the process's main thread (Trio's) and the
 * others (the tick's worker and send threads, Numba's threads):
 *   - C heap: malloc, calloc, realloc (interposed, forwarded to glibc's __libc_*): NumPy's
 *     array data, Numba's runtime, the Python allocator's blocks above 512 bytes;
 *   - Python: PyMem_Malloc / PyObject_Malloc and their calloc / realloc (the MEM and OBJ
 *     domains; every Python object), hooked by alloc_count_install() with
 *     PyMem_SetAllocator wrapping the allocator in place (called once Python runs).
 * Frees are not counted. Counters are atomic: the hooks run in every thread.
 */
#define _GNU_SOURCE
#include <Python.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum { C_MAIN, C_OTHER, PY_MAIN, PY_OTHER, N_COUNTERS };

static uint64_t *counts;
static pthread_t main_thread;

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static inline void bump(int family) {
    if (counts)
        __atomic_fetch_add(&counts[family + !pthread_equal(pthread_self(), main_thread)], 1,
                           __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void setup(void) {
    const char *path = getenv("ALLOC_COUNT_FILE");
    main_thread = pthread_self();
    if (!path)
        return;
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return;
    void *p = mmap(NULL, N_COUNTERS * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
    close(fd);
    if (p != MAP_FAILED)
        counts = p;
}

void *malloc(size_t n) { bump(C_MAIN); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { bump(C_MAIN); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { bump(C_MAIN); return __libc_realloc(p, n); }

static PyMemAllocatorEx prev_mem, prev_obj;

static void *py_malloc(void *ctx, size_t n) {
    PyMemAllocatorEx *a = ctx;
    bump(PY_MAIN);
    return a->malloc(a->ctx, n);
}
static void *py_calloc(void *ctx, size_t k, size_t n) {
    PyMemAllocatorEx *a = ctx;
    bump(PY_MAIN);
    return a->calloc(a->ctx, k, n);
}
static void *py_realloc(void *ctx, void *p, size_t n) {
    PyMemAllocatorEx *a = ctx;
    bump(PY_MAIN);
    return a->realloc(a->ctx, p, n);
}
static void py_free(void *ctx, void *p) {
    PyMemAllocatorEx *a = ctx;
    a->free(a->ctx, p);
}

/* Call once, from the main thread, with the GIL (ctypes.PyDLL). */
int alloc_count_install(void) {
    PyMemAllocatorEx hook;
    main_thread = pthread_self();
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &prev_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &prev_obj);
    hook = (PyMemAllocatorEx){&prev_mem, py_malloc, py_calloc, py_realloc, py_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &hook);
    hook.ctx = &prev_obj;
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
    return counts != NULL;
}
