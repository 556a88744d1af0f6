/* Micro benchmark of the per-step GEMM in float32 (the packed micro-kernel) and in
 * reduced precision (qgemm.c), every ISA path this CPU runs, in one process:
 *   C (M, N) = A (M, K) . W (K, N),  N = 4 K (the LSTM's recurrent product, K = H)
 * Each measurement repeats the call for about `ms` milliseconds, `reps` times, and keeps
 * the fastest (the machine may be loaded: read the ratios). The reduced calls include
 * rounding or quantising A, as in a forward step. Built and run by bench/qgemm.py.
 * Output: one line per (shape, kernel): "M K N kernel isa us gflops". */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "qgemm.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *amalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) { fprintf(stderr, "out of memory\n"); exit(2); }
    memset(p, 0, n);
    return p;
}

typedef struct {
    int kind; /* 0 float32, else FR_QT_* */
    int64_t M, N, K;
    float *C, *A, *Wp32;
    void *Wq, *work;
} job;

static void run_once(const job *j) {
    if (j->kind == 0) fr_ugemm_f32(j->C, j->N, j->A, j->K, 0, j->Wp32, 0, j->M, j->N, j->K, 0);
    else fr_qgemm(j->C, j->N, j->work, j->A, j->K, j->Wq, j->kind, j->M, j->N, j->K, 0);
}

/* the fastest of `reps` runs of about `ms` ms each, in microseconds per call */
static double time_job(const job *j, double ms, int reps) {
    int n = 1;
    for (;;) { /* calls per run */
        const double t0 = now_s();
        for (int i = 0; i < n; i++) run_once(j);
        const double dt = now_s() - t0;
        if (dt * 1e3 >= ms / 4 || n > (1 << 24)) {
            n = (int)(n * (ms / 1e3) / (dt > 1e-9 ? dt : 1e-9)) + 1;
            break;
        }
        n *= 4;
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now_s();
        for (int i = 0; i < n; i++) run_once(j);
        const double us = (now_s() - t0) * 1e6 / n;
        if (us < best) best = us;
    }
    return best;
}

int main(int argc, char **argv) {
    const double ms = argc > 1 ? atof(argv[1]) : 30;
    const int reps = argc > 2 ? atoi(argv[2]) : 5;
    static const int64_t Ms[] = {1, 8, 32}, Ks[] = {128, 256, 1024};
    for (size_t ki = 0; ki < 3; ki++)
        for (size_t mi = 0; mi < 3; mi++) {
            const int64_t M = Ms[mi], K = Ks[ki], N = 4 * K;
            job j = {.M = M, .N = N, .K = K};
            j.C = amalloc((size_t)(M * N) * sizeof(float));
            j.A = amalloc((size_t)(M * K) * sizeof(float));
            float *W = amalloc((size_t)(N * K) * sizeof(float)); /* (N, K) */
            srand(1);
            for (int64_t i = 0; i < M * K; i++) j.A[i] = (float)rand() / RAND_MAX - 0.5f;
            for (int64_t i = 0; i < N * K; i++) W[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.1f;
            const double flops = 2.0 * (double)(M * N * K);
            /* float32: the packed micro-kernel at its best tiles */
            j.Wp32 = amalloc((size_t)fr_packed_elems(N, K, FR_PW(float)) * sizeof(float));
            fr_pack_f32(j.Wp32, W, 1, N, K, K);
            j.kind = 0;
            const double us32 = time_job(&j, ms, reps);
            printf("%lld %lld %lld float32 best %.3f %.2f\n", (long long)M, (long long)K,
                   (long long)N, us32, flops / us32 * 1e-3);
            for (int type = FR_QT_BF16; type <= FR_QT_INT8; type++) {
                size_t pb, wb;
                if (fr_qpacked_bytes(&pb, type, N, K) || fr_qgemm_workspace_bytes(&wb, type, M, K))
                    return 1;
                j.Wq = amalloc(pb);
                j.work = amalloc(wb);
                if (type == FR_QT_BF16) {
                    uint16_t *Wb = amalloc((size_t)(N * K) * sizeof(uint16_t));
                    fr_bf16_round(Wb, W, N * K);
                    fr_bf16_pack(j.Wq, Wb, 1, N, K, K);
                    free(Wb);
                } else {
                    int8_t *Wq = amalloc((size_t)(N * K));
                    float *sw = amalloc((size_t)N * sizeof(float));
                    fr_s8_quantize(Wq, sw, W, K, N, K);
                    fr_s8_pack(j.Wq, Wq, sw, 1, N, K, K);
                    free(Wq);
                    free(sw);
                }
                j.kind = type;
                const int saved = fr_qget_isa(type);
                for (int isa = 0; isa < FR_QISA_COUNT; isa++) {
                    if (!fr_qisa_supported(type, isa)) {
                        printf("%lld %lld %lld %s %s skipped 0\n", (long long)M, (long long)K,
                               (long long)N, type == FR_QT_BF16 ? "bf16" : "int8",
                               fr_qisa_name(type, isa));
                        continue;
                    }
                    fr_qset_isa(type, isa);
                    const double us = time_job(&j, isa == 0 ? ms / 4 : ms, isa == 0 ? 1 : reps);
                    printf("%lld %lld %lld %s %s %.3f %.2f\n", (long long)M, (long long)K,
                           (long long)N, type == FR_QT_BF16 ? "bf16" : "int8",
                           fr_qisa_name(type, isa), us, flops / us * 1e-3);
                    fflush(stdout);
                }
                fr_qset_isa(type, saved);
                free(j.Wq);
                free(j.work);
            }
            free(j.C); free(j.A); free(W); free(j.Wp32);
        }
    return 0;
}
