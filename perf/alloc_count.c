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
 *
 * Where mode (ALLOC_COUNT_WHERE=<path>): while the benchmark holds the file's "armed" word
 * at 1, every call is also tallied by call site: the innermost WHERE_DEPTH Python frames of
 * the calling thread (code object and instruction; read from the thread's own frame stack,
 * which allocates nothing) and, for a C call, the address that called malloc. Once disarmed,
 * alloc_count_dump() (called from Python, with the GIL) writes the table to <path> with the
 * frames resolved to file:line function and the C callers to library!symbol.
 */
#define _GNU_SOURCE
#include <Python.h>
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { C_MAIN, C_OTHER, PY_MAIN, PY_OTHER, N_COUNTERS, ARMED = N_COUNTERS, N_WORDS };
static const char *const FAMILY[] = {"c_main", "c_other", "py_main", "py_other"};

static uint64_t *counts;
static pthread_t main_thread;

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

/* ---- the call-site table (where mode only) ---- */
#define WHERE_DEPTH 8
#define N_SITES (1 << 16)
typedef struct {
    uint64_t n;
    void *code[WHERE_DEPTH]; /* PyCodeObject *, innermost first; NULL past the stack */
    int lasti[WHERE_DEPTH];
    void *caller; /* the C caller of malloc; NULL for the Python allocator */
    int family;
} site_t;
static site_t *sites;
static int where_on, python_ready, sites_full;
static char where_path[4096];
static int site_lock;

static inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

static void tally(int family, void *caller) {
    site_t key;
    memset(&key, 0, sizeof key);
    key.family = family;
    key.caller = caller;
    PyThreadState *ts = python_ready ? PyGILState_GetThisThreadState() : NULL;
    _PyInterpreterFrame *f = ts && ts->cframe ? ts->cframe->current_frame : NULL;
    for (int i = 0; f && i < WHERE_DEPTH; f = f->previous, i++) {
        key.code[i] = f->f_code;
        key.lasti[i] = _PyInterpreterFrame_LASTI(f);
    }
    uint64_t h = mix((uint64_t)family, (uint64_t)(uintptr_t)caller);
    for (int i = 0; i < WHERE_DEPTH; i++)
        h = mix(mix(h, (uint64_t)(uintptr_t)key.code[i]), (uint64_t)key.lasti[i]);
    while (__atomic_exchange_n(&site_lock, 1, __ATOMIC_ACQUIRE))
        ;
    for (uint64_t probe = 0; probe < N_SITES; probe++) {
        site_t *s = &sites[(h + probe) & (N_SITES - 1)];
        if (s->n == 0) {
            key.n = 1;
            *s = key;
            break;
        }
        if (s->family == key.family && s->caller == key.caller &&
            !memcmp(s->code, key.code, sizeof key.code) &&
            !memcmp(s->lasti, key.lasti, sizeof key.lasti)) {
            s->n++;
            break;
        }
        if (probe == N_SITES - 1)
            sites_full = 1;
    }
    __atomic_store_n(&site_lock, 0, __ATOMIC_RELEASE);
}

static inline void bump(int family, void *caller) {
    if (!counts)
        return;
    family += !pthread_equal(pthread_self(), main_thread);
    __atomic_fetch_add(&counts[family], 1, __ATOMIC_RELAXED);
    if (where_on && __atomic_load_n(&counts[ARMED], __ATOMIC_RELAXED))
        tally(family, caller);
}

__attribute__((constructor)) static void setup(void) {
    const char *path = getenv("ALLOC_COUNT_FILE");
    const char *where = getenv("ALLOC_COUNT_WHERE");
    main_thread = pthread_self();
    if (!path)
        return;
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return;
    void *p = mmap(NULL, N_WORDS * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   0);
    close(fd);
    if (where && *where && strlen(where) < sizeof where_path) {
        sites = mmap(NULL, N_SITES * sizeof(site_t), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (sites != MAP_FAILED) {
            strcpy(where_path, where);
            where_on = 1;
        }
    }
    if (p != MAP_FAILED)
        counts = p;
}

#define CALLER __builtin_extract_return_addr(__builtin_return_address(0))
void *malloc(size_t n) { bump(C_MAIN, CALLER); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { bump(C_MAIN, CALLER); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { bump(C_MAIN, CALLER); return __libc_realloc(p, n); }

static PyMemAllocatorEx prev_mem, prev_obj;

static void *py_malloc(void *ctx, size_t n) {
    PyMemAllocatorEx *a = ctx;
    bump(PY_MAIN, NULL);
    return a->malloc(a->ctx, n);
}
static void *py_calloc(void *ctx, size_t k, size_t n) {
    PyMemAllocatorEx *a = ctx;
    bump(PY_MAIN, NULL);
    return a->calloc(a->ctx, k, n);
}
static void *py_realloc(void *ctx, void *p, size_t n) {
    PyMemAllocatorEx *a = ctx;
    bump(PY_MAIN, NULL);
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
    python_ready = 1;
    return counts != NULL;
}

static void put_frame(FILE *out, PyCodeObject *code, int lasti) {
    if (!code) {
        fputs("\t-", out);
        return;
    }
    const char *file = PyUnicode_AsUTF8(code->co_filename);
    const char *name = PyUnicode_AsUTF8(code->co_qualname);
    int line = PyCode_Addr2Line(code, lasti * (int)sizeof(_Py_CODEUNIT));
    if (line < 0) /* a frame that has not run its first instruction yet */
        line = code->co_firstlineno;
    fprintf(out, "\t%s:%d %s", file ? file : "?", line, name ? name : "?");
    PyErr_Clear();
}

/* Write the call-site table (where mode; the file must be disarmed first, or the writing
 * would tally itself). One line per site: count, family, C caller, then WHERE_DEPTH frames
 * innermost first, tab-separated; the last line is "end". Returns the number of sites. */
int alloc_count_dump(void) {
    if (!where_on || (counts && counts[ARMED]))
        return -1;
    FILE *out = fopen(where_path, "w");
    if (!out)
        return -1;
    int n = 0;
    for (int i = 0; i < N_SITES; i++) {
        site_t *s = &sites[i];
        if (!s->n)
            continue;
        n++;
        fprintf(out, "%llu\t%s\t", (unsigned long long)s->n, FAMILY[s->family]);
        Dl_info info;
        if (!s->caller)
            fputs("-", out);
        else if (dladdr(s->caller, &info) && info.dli_fname) {
            const char *lib = strrchr(info.dli_fname, '/');
            lib = lib ? lib + 1 : info.dli_fname;
            if (info.dli_sname)
                fprintf(out, "%s!%s", lib, info.dli_sname);
            else
                fprintf(out, "%s+%#lx", lib,
                        (unsigned long)((char *)s->caller - (char *)info.dli_fbase));
        } else
            fprintf(out, "%p", s->caller);
        for (int d = 0; d < WHERE_DEPTH; d++)
            put_frame(out, s->code[d], s->lasti[d]);
        fputc('\n', out);
    }
    fprintf(out, "end\t%d\t%d\n", n, sites_full);
    fclose(out);
    memset(sites, 0, N_SITES * sizeof(site_t));
    return n;
}
