/* Read bandwidth of main memory: each thread sums its own part of one
 * buffer (first-touched by that thread) with 64-bit integer adds, over
 * several passes. Prints one JSON line with the median, best and worst pass
 * (on a shared VM single passes stray far both ways: the median is the
 * figure to use).
 *
 *   cc -O3 -march=native -pthread scripts/membw.c -o membw && ./membw [MiB] [threads] [passes]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    uint64_t *p;
    size_t n;
    pthread_barrier_t *start, *end;
    int passes;
    uint64_t sink;
    double *t0, *t1; /* per pass: when this thread started and finished */
} job_t;

static uint64_t sum(const uint64_t *p, size_t n) {
    /* Eight independent accumulators so the adds do not serialize. */
    uint64_t a[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    uint64_t s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Each thread times itself: a pass lasts from the first start to the last
 * finish, so a thread scheduled late makes the figure lower, never higher. */
static void *worker(void *arg) {
    job_t *j = arg;
    /* Distinct contents in every page, so that no page deduplication (KSM,
     * the hypervisor) can back the buffer with fewer physical pages. */
    for (size_t i = 0; i < j->n; i++) j->p[i] = (i + (uintptr_t)j->p) * 0x9E3779B97F4A7C15ull;
    for (int r = 0; r < j->passes; r++) {
        pthread_barrier_wait(j->start);
        j->t0[r] = now();
        j->sink += sum(j->p, j->n);
        j->t1[r] = now();
        pthread_barrier_wait(j->end);
    }
    return NULL;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 2048;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int passes = argc > 3 ? atoi(argv[3]) : 5;
    if (mib == 0 || threads < 1 || passes < 1) {
        fprintf(stderr, "usage: %s [MiB > 0] [threads >= 1] [passes >= 1]\n", argv[0]);
        return 2;
    }
    size_t words = mib * (1024 * 1024 / sizeof(uint64_t));
    size_t per = words / threads / 8 * 8;
    uint64_t *buf = aligned_alloc(4096, words * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "cannot allocate %zu MiB\n", mib);
        return 1;
    }
    pthread_barrier_t start, end;
    pthread_barrier_init(&start, NULL, threads);
    pthread_barrier_init(&end, NULL, threads);
    job_t *jobs = calloc(threads, sizeof *jobs);
    pthread_t *tids = calloc(threads, sizeof *tids);
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job_t){buf + t * per, per, &start, &end, passes, 0,
                          calloc(passes, sizeof(double)), calloc(passes, sizeof(double))};
        if (pthread_create(&tids[t], NULL, worker, &jobs[t])) {
            fprintf(stderr, "cannot start thread %d\n", t);
            return 1;
        }
    }
    uint64_t sink = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        sink += jobs[t].sink;
    }
    double *gbs = calloc(passes, sizeof *gbs);
    for (int r = 0; r < passes; r++) {
        double t0 = jobs[0].t0[r], t1 = jobs[0].t1[r];
        for (int t = 1; t < threads; t++) {
            if (jobs[t].t0[r] < t0) t0 = jobs[t].t0[r];
            if (jobs[t].t1[r] > t1) t1 = jobs[t].t1[r];
        }
        gbs[r] = (double)per * threads * sizeof *buf / (t1 - t0) / 1e9;
    }
    qsort(gbs, passes, sizeof *gbs, cmp_double);
    double median = passes % 2 ? gbs[passes / 2] : (gbs[passes / 2 - 1] + gbs[passes / 2]) / 2;
    printf("{\"probe\":\"read-sum\",\"mib\":%zu,\"threads\":%d,\"passes\":%d,"
           "\"median_gb_s\":%.2f,\"best_gb_s\":%.2f,\"worst_gb_s\":%.2f,\"checksum\":%llu}\n",
           mib, threads, passes, median, gbs[passes - 1], gbs[0], (unsigned long long)sink);
    return 0;
}
