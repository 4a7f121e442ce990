/* One load-generator process in C: the same clients, control and result as perf/loadgen.py.
 *
 * Why a second one: at 2,000 clients the Python load generator needs a core of its own
 * (40,000 TICKs read and 20,000 moves sent a second), and on a 2-core machine that core is
 * taken from the server it measures. This one does the same work in a fraction of the CPU,
 * so the server's figures are the server's. perf/loadtest.py compiles and runs it with
 * `--loadgen c` (the default when a C compiler is found).
 *
 * Everything a client does and every figure it reports is perf/loadgen.py's (read its
 * docstring): an HTTP upgrade with a fixed key, a HELLO, one MOVES frame every 1 / rate s
 * on a seeded wheel of at most 50 slots, move-to-ack latencies as read and as they
 * reached the socket (SO_TIMESTAMPNS), per-hunt tick fan-out, the JSON lines "ready" and
 * "result" on stdout, "start" / "stop" / "quit" on stdin, the same options. The seeded
 * choices (wheel slots, move directions) use their own generator, so they differ from
 * the Python one's for the same --seed.
 *
 *   cc -O2 -o /tmp/loadgen perf/loadgen.c -lm
 *   /tmp/loadgen --url ws://127.0.0.1:8765/ --clients 100 --duration 10
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, UPGRADING, WAIT_WELCOME, PLAYING, CLOSED };
#define RECV_SIZE 262144
#define MAX_SLOTS 50
#define FANOUT_RING 1024
#define MAX_REASONS 32

static const unsigned char MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* ------------------------------------------------------------------ small containers */

typedef struct { double *v; size_t n, cap; } Vec;

static void vec_push(Vec *a, double x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4096;
        a->v = realloc(a->v, a->cap * sizeof(double));
        if (!a->v) { perror("loadgen: realloc"); exit(1); }
    }
    a->v[a->n++] = x;
}

typedef struct { unsigned char *p; size_t n, cap; } Bytes;

static void bytes_put(Bytes *b, const unsigned char *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) { perror("loadgen: realloc"); exit(1); }
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

typedef struct { uint64_t seq; double sent; } Pend;

typedef struct {
    int index, hunt, fd, state;
    Bytes in;   /* bytes of a frame not complete yet */
    Bytes out;  /* bytes the socket did not take yet */
    uint64_t seq, last_tick, ack;
    Pend *pend;  /* ring of moves not acked yet, oldest at head */
    size_t phead, pcount, pcap;
    long gaps, wticks;
    int slot;
} Client;

typedef struct { long tick; double first, last; } Span;

/* ------------------------------------------------------------------ options and state */

static struct {
    char host[256], path[512], netloc[300];
    int port;
    int clients;
    double rate;
    char *hunt_list;
    int index_offset, version;
    const char *name_prefix;
    double connect_rate, connect_timeout, drain, duration, max_seconds;
    int automatic, repeat;
    const char *latency_out;
    uint64_t seed;
    const char *source_prefix;
    int per_address;
} opt = {.port = 80, .clients = 100, .rate = 10.0, .version = 2, .name_prefix = "lg-",
         .connect_rate = 500.0, .connect_timeout = 60.0, .drain = 1.0, .duration = 10.0,
         .max_seconds = 900.0, .per_address = 25};

static char **hunts;
static int n_hunts;
static Client *clients;
static int ep;
static char request[1024];
static size_t request_len;
static struct sockaddr_in server_addr;

static double wstart = INFINITY, wend = INFINITY;
static Vec latencies, lat_arrival, send_lag, fanout_done;
static Span *fanout_ring;  /* n_hunts x FANOUT_RING */
static long moves_window, bytes_window, msgs_window, send_stalls;
static long *errors, *refused, *closes;  /* by code, 65536 each */
static struct { char why[160]; long n; } reasons[MAX_REASONS];
static int playing, welcomed, settled;  /* settled: clients playing or given up */
static struct rusage ru_start, ru_stop;
static int have_ru_start, have_ru_stop;
static Client **wheel[MAX_SLOTS];
static int wheel_n[MAX_SLOTS];
static int n_slots;
static uint64_t rng_state;
static unsigned char *rbuf;
static size_t rbuf_cap;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);  /* the clock of the kernel's receive timestamps */
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(void) {  /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ JSON out */

static void emit(const char *line) {
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else if (ch >= 0x80) fputs("\\ufffd", f);  /* what Python's errors="replace" shows */
        else fputc(ch, f);
    }
    fputc('"', f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentile q (0-100) of sorted values, nearest rank (Python's round: half to even). */
static double pct(const double *v, size_t n, double q) {
    if (!n) return 0.0;
    double k = nearbyint(q / 100.0 * (double)(n - 1));
    if (k < 0) k = 0;
    if (k > (double)(n - 1)) k = (double)(n - 1);
    return v[(size_t)k];
}

static void summary(FILE *f, const char *name, Vec *a, double scale) {
    double *v = malloc((a->n ? a->n : 1) * sizeof(double));
    double sum = 0;
    for (size_t i = 0; i < a->n; i++) { v[i] = a->v[i] * scale; sum += v[i]; }
    qsort(v, a->n, sizeof(double), cmp_double);
    fprintf(f, "\"%s\":{\"n\":%zu,\"p50\":%.17g,\"p90\":%.17g,\"p99\":%.17g,\"max\":%.17g,"
            "\"mean\":%.17g}", name, a->n, pct(v, a->n, 50), pct(v, a->n, 90),
            pct(v, a->n, 99), a->n ? v[a->n - 1] : 0.0, a->n ? sum / a->n : 0.0);
    free(v);
}

static void counts(FILE *f, const char *name, const long *by_code) {
    fprintf(f, "\"%s\":{", name);
    int first = 1;
    for (int k = 0; k < 65536; k++)
        if (by_code[k]) {
            fprintf(f, "%s\"%d\":%ld", first ? "" : ",", k, by_code[k]);
            first = 0;
        }
    fputc('}', f);
}

/* ------------------------------------------------------------------ frames */

static size_t client_frame(unsigned char *dst, const unsigned char *payload, size_t n,
                           int opcode) {
    size_t h = 0;
    dst[h++] = 0x80 | opcode;
    if (n < 126) {
        dst[h++] = 0x80 | n;
    } else if (n < 65536) {
        dst[h++] = 0x80 | 126;
        dst[h++] = n >> 8;
        dst[h++] = n & 0xFF;
    } else {
        dst[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) dst[h++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    memcpy(dst + h, MASK, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) dst[h + i] = payload[i] ^ MASK[i & 3];
    return h + n;
}

/* The LEB128 varint at *at, before `end`; -1 in *ok if it runs past `end` or 10 bytes. */
static uint64_t varint(const unsigned char *d, size_t *at, size_t end, int *ok) {
    uint64_t value = 0;
    for (int shift = 0; *at < end && shift < 70; shift += 7) {
        unsigned char b = d[(*at)++];
        value |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) return value;
    }
    *ok = 0;
    return 0;
}

static uint16_t le16(const unsigned char *p) { return p[0] | p[1] << 8; }

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ------------------------------------------------------------------ connections */

static void note_reason(const char *why) {
    for (int i = 0; i < MAX_REASONS; i++) {
        if (reasons[i].n && strcmp(reasons[i].why, why) == 0) { reasons[i].n++; return; }
        if (!reasons[i].n) {
            snprintf(reasons[i].why, sizeof reasons[i].why, "%s", why);
            reasons[i].n = 1;
            return;
        }
    }
    reasons[MAX_REASONS - 1].n++;  /* full: counted under the last reason */
}

static void close_client(Client *c, int code) {
    if (c->state == CLOSED) return;
    if (c->state == PLAYING) {
        playing--;
        closes[code >= 0 ? code : 1006]++;
    } else {
        settled++;
    }
    c->state = CLOSED;
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

static void fail(Client *c, const char *why) {
    if (c->state < PLAYING) note_reason(why);
    close_client(c, -1);
}

static void arm(Client *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void send_bytes(Client *c, const unsigned char *data, size_t n) {
    if (c->out.n) {
        bytes_put(&c->out, data, n);
        return;
    }
    ssize_t k = send(c->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) { close_client(c, -1); return; }
        k = 0;
    }
    if ((size_t)k < n) {
        send_stalls++;
        bytes_put(&c->out, data + k, n - k);
        arm(c, EPOLLIN | EPOLLOUT);
    }
}

static void connect_client(Client *c) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) {
        char why[160];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        fail(c, why);
        return;
    }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (opt.source_prefix && *opt.source_prefix) {
        char ip[64];
        snprintf(ip, sizeof ip, "%s%d", opt.source_prefix, 1 + c->index / opt.per_address);
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, ip, &src.sin_addr) != 1) {
            fprintf(stderr, "loadgen: --source-prefix makes %s, not an IPv4 address\n", ip);
            exit(2);
        }
        if (bind(s, (struct sockaddr *)&src, sizeof src) < 0) {
            char why[160];
            snprintf(why, sizeof why, "connect: %s", strerror(errno));
            close(s);
            fail(c, why);
            return;
        }
    }
    if (connect(s, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 &&
        errno != EINPROGRESS) {
        char why[160];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        close(s);
        fail(c, why);
        return;
    }
    c->fd = s;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0) {
        char why[160];
        snprintf(why, sizeof why, "connect: epoll: %s", strerror(errno));
        fail(c, why);
    }
}

static void send_hello(Client *c) {
    char name[128];
    snprintf(name, sizeof name, "%s%d", opt.name_prefix, c->index);
    const char *hunt = hunts[c->hunt];
    size_t nn = strlen(name), hn = strlen(hunt);
    unsigned char payload[1024], frame[1100];
    if (24 + nn + hn > sizeof payload) { fail(c, "hello: name or hunt too long"); return; }
    memset(payload, 0, 24);
    payload[0] = 0x01;
    payload[1] = opt.version;
    payload[3] = nn;
    payload[4] = hn & 0xFF;
    payload[5] = hn >> 8;
    memcpy(payload + 24, name, nn);
    memcpy(payload + 24 + nn, hunt, hn);
    send_bytes(c, frame, client_frame(frame, payload, 24 + nn + hn, 0x2));
}

static void on_writable(Client *c) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            char why[160];
            snprintf(why, sizeof why, "connect: %s", strerror(err));
            fail(c, why);
            return;
        }
        c->state = UPGRADING;
        arm(c, EPOLLIN);
        send_bytes(c, (const unsigned char *)request, request_len);
        return;
    }
    Bytes pending = c->out;
    c->out = (Bytes){0};
    arm(c, EPOLLIN);
    send_bytes(c, pending.p, pending.n);  /* re-arms EPOLLOUT if the socket takes only part */
    free(pending.p);
}

/* ------------------------------------------------------------------ receiving */

static void fanout_note(int hunt, long tick, double arrived) {
    Span *s = &fanout_ring[(size_t)hunt * FANOUT_RING + (size_t)(tick % FANOUT_RING)];
    if (s->tick != tick) {
        if (s->tick >= 0) vec_push(&fanout_done, (s->last - s->first) * 1e3);
        s->tick = tick;
        s->first = s->last = arrived;
    } else if (arrived > s->last) {
        s->last = arrived;
    } else if (arrived < s->first) {
        s->first = arrived;
    }
}

/* A TICK whose payload is d[p:end] (a frame too short for its fields is ignored). */
static void on_tick(Client *c, const unsigned char *d, size_t p, size_t end, double now,
                    double arrived) {
    uint64_t tick, ack;
    int ok = 1;
    if (opt.version == 1) {
        if (end - p < 24) return;
        tick = le64(d + p + 8);
        ack = le64(d + p + 16);
    } else {
        if (end - p < 3) return;
        unsigned flags = d[p + 1];
        if (flags & 1) {  /* a keyframe: the tick and the ack */
            size_t at = p + 2;
            tick = varint(d, &at, end, &ok);
            ack = varint(d, &at, end, &ok);
        } else {  /* a diff: the tick from its low byte, and the ack's growth if any */
            tick = c->last_tick + 1 + ((d[p + 2] - c->last_tick - 1) & 0xFF);
            ack = c->ack;
            if (flags & 2) {
                size_t at = p + 3;
                ack += varint(d, &at, end, &ok);
            }
        }
        if (!ok) return;
        c->ack = ack;
    }
    if (wstart <= now && now < wend) {
        msgs_window++;
        c->wticks++;
        if (c->last_tick && tick > c->last_tick + 1) c->gaps += tick - c->last_tick - 1;
        fanout_note(c->hunt, (long)tick, arrived);
    }
    c->last_tick = tick;
    while (c->pcount && c->pend[c->phead].seq <= ack) {
        double sent = c->pend[c->phead].sent;
        c->phead = (c->phead + 1) % c->pcap;
        c->pcount--;
        if (wstart <= sent && sent < wend) {
            vec_push(&latencies, now - sent);
            vec_push(&lat_arrival, arrived - sent);
        }
    }
}

static void on_welcome(Client *c, const unsigned char *d, size_t p) {
    if (c->state != WAIT_WELCOME) return;
    c->state = PLAYING;
    c->seq = le64(d + p + 40);  /* its ack: continue from it */
    playing++;
    settled++;
    welcomed++;
    wheel[c->slot][wheel_n[c->slot]++] = c;
}

static void on_readable(Client *c, double now) {
    size_t have = c->in.n;
    if (rbuf_cap < have + RECV_SIZE) {
        rbuf_cap = have + RECV_SIZE;
        rbuf = realloc(rbuf, rbuf_cap);
        if (!rbuf) { perror("loadgen: realloc"); exit(1); }
    }
    if (have) memcpy(rbuf, c->in.p, have);
    c->in.n = 0;
    char control[256];
    struct iovec iov = {.iov_base = rbuf + have, .iov_len = RECV_SIZE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t got = recvmsg(c->fd, &msg, MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (have) bytes_put(&c->in, rbuf, have);
        return;
    }
    if (got <= 0) {
        if (c->state < PLAYING) fail(c, "closed before WELCOME");
        else close_client(c, -1);
        return;
    }
    /* When the bytes reached the socket: excludes this process's own queueing delay. */
    double arrived = now;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            arrived = ts.tv_sec + ts.tv_nsec * 1e-9;
        }
    if (wstart <= now && now < wend) bytes_window += got;
    const unsigned char *d = rbuf;
    size_t n = have + (size_t)got, pos = 0;
    if (c->state == UPGRADING) {
        const unsigned char *end = memmem(d, n, "\r\n\r\n", 4);
        if (!end) { bytes_put(&c->in, d, n); return; }
        const unsigned char *sp = memchr(d, ' ', end - d);
        if (!sp || end - sp < 4 || memcmp(sp + 1, "101", 3) != 0 ||
            (end - sp > 4 && sp[4] != ' ' && sp[4] != '\r')) {
            char why[160];
            const unsigned char *eol = memmem(d, end - d + 2, "\r\n", 2);
            int len = (int)((eol ? eol : end) - d);
            snprintf(why, sizeof why, "upgrade refused: %.*s", len > 120 ? 120 : len, d);
            fail(c, why);
            return;
        }
        c->state = WAIT_WELCOME;
        send_hello(c);
        if (c->state == CLOSED) return;
        pos = (size_t)(end - d) + 4;
    }
    while (n - pos >= 2) {
        size_t ln = d[pos + 1] & 0x7F, h = 2;
        if (ln == 126) {
            if (n - pos < 4) break;
            ln = (size_t)d[pos + 2] << 8 | d[pos + 3];
            h = 4;
        } else if (ln == 127) {
            if (n - pos < 10) break;
            ln = 0;
            for (int i = 0; i < 8; i++) ln = ln << 8 | d[pos + 2 + i];
            h = 10;
        }
        size_t p = pos + h;
        if (ln > n - p) break;  /* not all here yet (and no overflow for a huge length) */
        size_t end = p + ln;
        int op = d[pos] & 0x0F;
        if (op == 2 && ln) {
            unsigned t = d[p];
            if (t == 0x83) on_tick(c, d, p, end, now, arrived);
            else if (t == 0x81 && ln >= 48) on_welcome(c, d, p);
            else if (t == 0x84 && ln >= 4) errors[le16(d + p + 2)]++;
            else if (t == 0x82 && ln >= 4) refused[le16(d + p + 2)]++;
        } else if (op == 8) {
            int code = ln >= 2 ? (d[p] << 8 | d[p + 1]) : 1005;
            if (c->state < PLAYING) {
                char why[64];
                snprintf(why, sizeof why, "closed %d before WELCOME", code);
                fail(c, why);
            } else {
                close_client(c, code);
            }
            return;
        } else if (op == 9) {
            unsigned char *pong = malloc(ln + 14);
            if (!pong) { perror("loadgen: malloc"); exit(1); }
            send_bytes(c, pong, client_frame(pong, d + p, ln, 0xA));
            free(pong);
            if (c->state == CLOSED) return;
        }
        pos = end;
    }
    if (pos < n) bytes_put(&c->in, d + pos, n - pos);
}

/* ------------------------------------------------------------------ moves */

static void send_moves(int slot, double now) {
    int measuring = wstart <= now && now < wend;
    static const float dirs[8][2] = {{1, 0}, {1, 1}, {0, 1}, {-1, 1},
                                     {-1, 0}, {-1, -1}, {0, -1}, {1, -1}};
    for (int k = 0; k < wheel_n[slot]; k++) {
        Client *c = wheel[slot][k];
        if (c->state != PLAYING) continue;
        c->seq++;
        unsigned char payload[20], frame[32];
        payload[0] = 0x02;  /* MOVES, one move: [02 00 01 00][seq u64][dx f32][dy f32] */
        payload[1] = 0;
        payload[2] = 1;
        payload[3] = 0;
        for (int i = 0; i < 8; i++) payload[4 + i] = (unsigned char)(c->seq >> (8 * i));
        const float *dv = dirs[rng_next() & 7];
        memcpy(payload + 12, &dv[0], 4);
        memcpy(payload + 16, &dv[1], 4);
        send_bytes(c, frame, client_frame(frame, payload, 20, 0x2));
        if (c->pcount == c->pcap) {
            size_t cap = c->pcap ? 2 * c->pcap : 16;
            Pend *ring = malloc(cap * sizeof(Pend));
            if (!ring) { perror("loadgen: malloc"); exit(1); }
            for (size_t i = 0; i < c->pcount; i++) ring[i] = c->pend[(c->phead + i) % c->pcap];
            free(c->pend);
            c->pend = ring;
            c->phead = 0;
            c->pcap = cap;
        }
        c->pend[(c->phead + c->pcount) % c->pcap] = (Pend){c->seq, now};
        c->pcount++;
        if (measuring) moves_window++;
    }
}

/* ------------------------------------------------------------------ windows and results */

static void start_window(double now) {
    wstart = now;
    getrusage(RUSAGE_SELF, &ru_start);
    have_ru_start = 1;
}

static double cpu_of(const struct rusage *r) {
    return r->ru_utime.tv_sec + r->ru_utime.tv_usec * 1e-6 + r->ru_stime.tv_sec +
           r->ru_stime.tv_usec * 1e-6;
}

static void result(void) {
    long unacked = 0;
    for (int i = 0; i < opt.clients; i++) {
        Client *c = &clients[i];
        for (size_t k = 0; k < c->pcount; k++) {
            double t = c->pend[(c->phead + k) % c->pcap].sent;
            if (wstart <= t && t < wend) unacked++;
        }
    }
    if (opt.latency_out && *opt.latency_out) {  /* float32 ms: read latencies, then arrivals */
        FILE *f = fopen(opt.latency_out, "wb");
        if (!f) { perror(opt.latency_out); exit(1); }
        for (int which = 0; which < 2; which++) {
            Vec *a = which ? &lat_arrival : &latencies;
            for (size_t i = 0; i < a->n; i++) {
                float x = (float)(a->v[i] * 1e3);
                fwrite(&x, sizeof x, 1, f);
            }
        }
        fclose(f);
    }
    struct rusage ru_end;
    getrusage(RUSAGE_SELF, &ru_end);
    const struct rusage *ru1 = have_ru_stop ? &ru_stop : &ru_end;
    double window = (wstart < wend && wend < INFINITY) ? wend - wstart : 0.0;
    for (int h = 0; h < n_hunts; h++)  /* the spans still open */
        for (int k = 0; k < FANOUT_RING; k++) {
            Span *s = &fanout_ring[(size_t)h * FANOUT_RING + k];
            if (s->tick >= 0) vec_push(&fanout_done, (s->last - s->first) * 1e3);
            s->tick = -1;
        }
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    long gaps = 0, with_gaps = 0;
    for (int i = 0; i < opt.clients; i++) {
        gaps += clients[i].gaps;
        with_gaps += clients[i].gaps > 0;
    }
    fprintf(f, "{\"event\":\"result\",\"clients\":%d,\"playing\":%d,\"welcomed\":%d,"
            "\"window_s\":%.17g,\"moves_sent\":%ld,\"acked\":%zu,\"unacked\":%ld,",
            opt.clients, playing, welcomed, window, moves_window, latencies.n, unacked);
    summary(f, "latency_ms", &latencies, 1e3);
    fputc(',', f);
    summary(f, "latency_arrival_ms", &lat_arrival, 1e3);
    fputs(",\"latency_file\":", f);
    if (opt.latency_out && *opt.latency_out) json_str(f, opt.latency_out);
    else fputs("null", f);
    fputs(",\"ticks_per_client\":[", f);
    for (int i = 0; i < opt.clients; i++) fprintf(f, "%s%ld", i ? "," : "", clients[i].wticks);
    fprintf(f, "],\"tick_gaps\":%ld,\"clients_with_gaps\":%ld,\"messages\":%ld,\"bytes\":%ld,",
            gaps, with_gaps, msgs_window, bytes_window);
    counts(f, "errors", errors);
    fputc(',', f);
    counts(f, "refused", refused);
    fputc(',', f);
    counts(f, "closes", closes);
    fputs(",\"connect_failures\":{", f);
    for (int i = 0; i < MAX_REASONS && reasons[i].n; i++) {
        if (i) fputc(',', f);
        json_str(f, reasons[i].why);
        fprintf(f, ":%ld", reasons[i].n);
    }
    double *lag = malloc((send_lag.n ? send_lag.n : 1) * sizeof(double));
    memcpy(lag, send_lag.v, send_lag.n * sizeof(double));
    qsort(lag, send_lag.n, sizeof(double), cmp_double);
    fprintf(f, "},\"send_stalls\":%ld,\"send_lag_ms\":{\"p99\":%.17g,\"max\":%.17g},",
            send_stalls, pct(lag, send_lag.n, 99) * 1e3,
            (send_lag.n ? lag[send_lag.n - 1] : 0.0) * 1e3);
    free(lag);
    summary(f, "fanout_ms", &fanout_done, 1.0);
    fprintf(f, ",\"cpu_s_window\":%.17g,\"cpu_s_total\":%.17g,\"loadgen\":\"c\"}",
            have_ru_start ? cpu_of(ru1) - cpu_of(&ru_start) : 0.0, cpu_of(&ru_end));
    fclose(f);
    emit(text);
    free(text);
}

static void reset_window(void) {  /* --repeat: the next "start" opens another window */
    wstart = wend = INFINITY;
    latencies.n = lat_arrival.n = send_lag.n = fanout_done.n = 0;
    moves_window = bytes_window = msgs_window = 0;
    memset(errors, 0, 65536 * sizeof(long));
    memset(refused, 0, 65536 * sizeof(long));
    memset(closes, 0, 65536 * sizeof(long));
    have_ru_start = have_ru_stop = 0;
    for (int i = 0; i < opt.clients; i++) clients[i].wticks = clients[i].gaps = 0;
}

/* Read stdin: "start" opens the window, "stop" closes it (returns its time, else -1). */
static double on_control(double now) {
    char data[4096];
    ssize_t n = read(0, data, sizeof data - 1);
    if (n < 0) return -1;
    if (n == 0) exit(0);  /* the driver is gone: stop at once */
    data[n] = 0;
    double stop = -1;
    for (char *save, *w = strtok_r(data, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
        if (strcmp(w, "quit") == 0) exit(0);
        if (strcmp(w, "start") == 0 && wstart == INFINITY) {
            start_window(now);
        } else if (strcmp(w, "stop") == 0 && wend == INFINITY) {
            wend = now;
            getrusage(RUSAGE_SELF, &ru_stop);
            have_ru_stop = 1;
            stop = now;
        }
    }
    return stop;
}

/* ------------------------------------------------------------------ the loop */

static void run(void) {
    double t0 = now_s(), hard_end = t0 + opt.max_seconds;
    double connect_gap = 1.0 / opt.connect_rate, next_connect = t0;
    int to_connect = 0;
    double period = 1.0 / opt.rate, slot_width = period / n_slots;
    double next_slot_t = t0 + period;
    int slot = 0, ready_sent = 0;
    double ready_deadline = -1, drain_until = INFINITY;
    int automatic = opt.automatic || isatty(0);
    if (!automatic) {
        fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) {
            fprintf(stderr, "loadgen: cannot wait for start/stop on stdin (%s): give --auto "
                    "to measure for --duration once ready\n", strerror(errno));
            exit(2);
        }
    }
    struct epoll_event *events = malloc(1024 * sizeof *events);
    for (;;) {
        double now = now_s();
        if (now >= hard_end) {
            fprintf(stderr, "loadgen: --max-seconds %g passed\n", opt.max_seconds);
            exit(1);
        }
        if (now >= drain_until) {
            result();
            if (!opt.repeat) {
                free(events);
                return;
            }
            reset_window();
            drain_until = INFINITY;
        }
        while (to_connect < opt.clients && next_connect <= now) {
            connect_client(&clients[to_connect++]);
            next_connect += connect_gap;
        }
        int lag_n = 0;
        while (next_slot_t <= now && lag_n < n_slots) {  /* bounded catch-up */
            vec_push(&send_lag, now - next_slot_t);
            send_moves(slot, now);
            slot = (slot + 1) % n_slots;
            next_slot_t += slot_width;
            lag_n++;
        }
        if (next_slot_t <= now) {  /* hopelessly behind: skip ahead, and say so */
            vec_push(&send_lag, now - next_slot_t);
            next_slot_t = now + slot_width;
        }
        if (!ready_sent && to_connect == opt.clients) {
            int pending = opt.clients - settled;
            if (ready_deadline < 0) ready_deadline = now + opt.connect_timeout;
            if (!pending || now >= ready_deadline) {
                ready_sent = 1;
                long failed = 0;
                for (int i = 0; i < MAX_REASONS; i++) failed += reasons[i].n;
                char line[256];
                snprintf(line, sizeof line, "{\"event\":\"ready\",\"playing\":%d,\"failed\":%ld,"
                         "\"pending\":%d,\"seconds\":%.3f}", playing, failed, pending, now - t0);
                emit(line);
                if (automatic) {
                    now = now_s();
                    start_window(now);
                    drain_until = now + opt.duration + opt.drain;
                    wend = now + opt.duration;
                }
            }
        }
        if (automatic && now >= wend && !have_ru_stop) {
            getrusage(RUSAGE_SELF, &ru_stop);
            have_ru_stop = 1;
        }
        double timeout = next_slot_t - now;
        if (to_connect < opt.clients && next_connect - now < timeout) timeout = next_connect - now;
        if (drain_until - now < timeout) timeout = drain_until - now;
        if (timeout < 0) timeout = 0;
        if (timeout > 1.0) timeout = 1.0;  /* nothing is due: look again in a second */
        int n = epoll_wait(ep, events, 1024, (int)ceil(timeout * 1e3));
        if (n < 0 && errno != EINTR) { perror("loadgen: epoll_wait"); exit(1); }
        for (int i = 0; i < n; i++) {
            Client *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            if (c == NULL) {
                double stop = on_control(now_s());
                if (stop >= 0) drain_until = stop + opt.drain;
                continue;
            }
            if (c->state == CLOSED) continue;
            if (ev & EPOLLIN) on_readable(c, now_s());
            if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->state != CLOSED) {
                if ((ev & EPOLLOUT) || c->state == CONNECTING) on_writable(c);
                else if (!(ev & EPOLLIN)) close_client(c, -1);
            }
        }
    }
}

/* ------------------------------------------------------------------ options */

static void usage(FILE *f) {
    fputs("usage: loadgen --url ws://HOST:PORT/ [--clients N] [--rate MOVES_PER_S]\n"
          "  [--hunt A,B,...] [--index-offset K] [--protocol-version 1|2] [--name-prefix P]\n"
          "  [--connect-rate PER_S] [--connect-timeout S] [--drain S] [--duration S] [--auto]\n"
          "  [--latency-out FILE] [--max-seconds S] [--seed N] [--repeat]\n"
          "  [--source-prefix 127.0.5.] [--per-address N]\n"
          "The options and figures of perf/loadgen.py (see its --help), in C.\n", f);
}

static void parse_url(const char *url) {
    const char *p = url;
    if (strncmp(p, "ws://", 5) != 0) {
        fprintf(stderr, "loadgen: --url must be ws://HOST:PORT/PATH, got %s\n", url);
        exit(2);
    }
    p += 5;
    const char *slash = strchr(p, '/');
    size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
    snprintf(opt.netloc, sizeof opt.netloc, "%.*s", (int)hostport, p);
    snprintf(opt.path, sizeof opt.path, "%s", slash ? slash : "/");
    const char *colon = memchr(p, ':', hostport);
    size_t hl = colon ? (size_t)(colon - p) : hostport;
    snprintf(opt.host, sizeof opt.host, "%.*s", (int)hl, p);
    if (colon) opt.port = atoi(colon + 1);
}

static void parse_args(int argc, char **argv) {
    static struct option longs[] = {
        {"url", 1, 0, 'u'}, {"clients", 1, 0, 'c'}, {"rate", 1, 0, 'r'},
        {"hunt", 1, 0, 'H'}, {"index-offset", 1, 0, 'i'}, {"protocol-version", 1, 0, 'v'},
        {"name-prefix", 1, 0, 'n'}, {"connect-rate", 1, 0, 'C'},
        {"connect-timeout", 1, 0, 'T'}, {"drain", 1, 0, 'd'}, {"duration", 1, 0, 'D'},
        {"auto", 0, 0, 'a'}, {"latency-out", 1, 0, 'l'}, {"max-seconds", 1, 0, 'm'},
        {"seed", 1, 0, 's'}, {"repeat", 0, 0, 'R'}, {"source-prefix", 1, 0, 'S'},
        {"per-address", 1, 0, 'P'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *url = NULL, *hunt = "demo";
    int o;
    while ((o = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (o) {
        case 'u': url = optarg; break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'H': hunt = optarg; break;
        case 'i': opt.index_offset = atoi(optarg); break;
        case 'v': opt.version = atoi(optarg); break;
        case 'n': opt.name_prefix = optarg; break;
        case 'C': opt.connect_rate = atof(optarg); break;
        case 'T': opt.connect_timeout = atof(optarg); break;
        case 'd': opt.drain = atof(optarg); break;
        case 'D': opt.duration = atof(optarg); break;
        case 'a': opt.automatic = 1; break;
        case 'l': opt.latency_out = optarg; break;
        case 'm': opt.max_seconds = atof(optarg); break;
        case 's': opt.seed = strtoull(optarg, NULL, 10); break;
        case 'R': opt.repeat = 1; break;
        case 'S': opt.source_prefix = optarg; break;
        case 'P': opt.per_address = atoi(optarg); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (!url) { usage(stderr); fputs("loadgen: --url is required\n", stderr); exit(2); }
    if (opt.clients < 1 || opt.rate <= 0 || opt.connect_rate <= 0 || opt.per_address < 1) {
        fputs("loadgen: --clients, --rate, --connect-rate and --per-address must be "
              "positive\n", stderr);
        exit(2);
    }
    if (opt.version != 1 && opt.version != 2) {
        fputs("loadgen: --protocol-version must be 1 or 2\n", stderr);
        exit(2);
    }
    parse_url(url);
    opt.hunt_list = strdup(hunt);
    char *rest = opt.hunt_list, *w;  /* every comma-separated name, empty ones too */
    while ((w = strsep(&rest, ",")) != NULL) {
        hunts = realloc(hunts, (n_hunts + 1) * sizeof *hunts);
        if (!hunts) { perror("loadgen: realloc"); exit(1); }
        hunts[n_hunts++] = w;
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(opt.host, NULL, &hints, &ai) != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s\n", opt.host);
        return 2;
    }
    server_addr = *(struct sockaddr_in *)ai->ai_addr;
    server_addr.sin_port = htons(opt.port);
    freeaddrinfo(ai);
    request_len = (size_t)snprintf(
        request, sizeof request,
        "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        opt.path, opt.netloc);

    struct rlimit rl;  /* a descriptor per client */
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ep = epoll_create1(0);
    errors = calloc(65536, sizeof(long));
    refused = calloc(65536, sizeof(long));
    closes = calloc(65536, sizeof(long));
    fanout_ring = malloc((size_t)n_hunts * FANOUT_RING * sizeof(Span));
    for (size_t i = 0; i < (size_t)n_hunts * FANOUT_RING; i++) fanout_ring[i].tick = -1;

    rng_state = opt.seed;
    n_slots = opt.clients < MAX_SLOTS ? opt.clients : MAX_SLOTS;
    /* The clients' places on the move wheel: as many in each slot, dealt at random
     * (perf/loadgen.py says why not by index). */
    int *slot_of = malloc(opt.clients * sizeof(int));
    for (int k = 0; k < opt.clients; k++) slot_of[k] = k % n_slots;
    for (int k = opt.clients - 1; k > 0; k--) {
        int j = (int)(rng_next() % (uint64_t)(k + 1));
        int t = slot_of[k];
        slot_of[k] = slot_of[j];
        slot_of[j] = t;
    }
    for (int s = 0; s < n_slots; s++) {
        wheel[s] = malloc(((opt.clients + n_slots - 1) / n_slots) * sizeof(Client *));
        if (!wheel[s]) { perror("loadgen: malloc"); exit(1); }
    }
    clients = calloc(opt.clients, sizeof(Client));
    for (int i = 0; i < opt.clients; i++) {
        clients[i].index = i;
        clients[i].hunt = ((i + opt.index_offset) % n_hunts + n_hunts) % n_hunts;
        clients[i].fd = -1;
        clients[i].slot = slot_of[i];
    }
    free(slot_of);
    run();
    return 0;
}
