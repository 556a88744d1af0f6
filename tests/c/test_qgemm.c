/*
 * Pure-C tests of the reduced-precision GEMM (csrc/qgemm.c), no Python.
 * Built and run by tests/c/run.sh next to test_kernel.c. Every ISA path this
 * CPU can run is forced in turn (fr_qset_isa); the others are listed as
 * skipped with the features they need.
 *
 * Test groups:
 *   bf16round  fr_bf16_round vs the nearest bfloat16 found by search (ties to
 *              even), and the special values (denormals -> 0, NaN, inf, overflow)
 *   quantize   fr_s8_quantize vs the scheme written out here, its bounds, and
 *              zero, tiny and non-finite rows
 *   int8 gemm  every path equals the integer reference exactly: the same
 *              quantisation, int64 sums, (float)acc * (sa * sw) (+ C)
 *   bf16 gemm  the widening paths (generic, avx2, avx512) equal the float32
 *              sums of the bf16 products taken in k order, bit for bit, and
 *              vdpbf16ps the sums pair by pair, odd k first (the instruction's
 *              definition); every path is within the float32 rounding bound
 *              (K + 1) 2^-24 sum |a w| of the exact sums
 *   worst      int8 at the extremes (|a| = |w| = 127 everywhere, K = 65536):
 *              no saturation, no overflow
 *   sizes      size queries, overflow, NULLs, bad arguments
 * Each GEMM case checks C's padding columns and the rows past M are untouched;
 * shapes: M = 1 .. 21, 64, 121 .. 123, 200, 243 (both sides of the bf16 AVX2
 * path's FR_QWIDE_MIN_ROWS, its tiles and blocks); N not a multiple of the
 * panel; K = 1, odd K, K = 129 .. 601; offsets that break 64-byte alignment. Last line: "N passed, M failed".
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusedrnn.h"
#include "qgemm.h"

static int n_passed = 0, n_failed = 0;

static void report(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "[ ok ]" : "[FAIL]");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (ok) n_passed++; else n_failed++;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p == NULL) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static uint64_t rng_state;
static void rng_seed(uint64_t seed) { rng_state = seed * 0x9E3779B97F4A7C15ULL | 1; }
static uint32_t rand_u32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}
static float rand_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(rand_u32() / 4294967296.0);
}

static uint32_t f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static float bf2f(uint16_t b) { return u2f((uint32_t)b << 16); }

// ----------------------------------------------------------------------------
// references, written independently of the kernel

// the nearest bf16 of x by search: the two bf16 around x, the nearer, ties to
// the even one; |x| < 2^-126 -> signed zero; beyond the largest -> as IEEE
static uint16_t ref_bf16(float x) {
    const uint32_t u = f2u(x);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40);
    if (fabsf(x) < 0x1p-126f) return (uint16_t)((u >> 16) & 0x8000);
    const uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1); // toward 0, away
    if ((u & 0xFFFF) == 0) return lo;
    const double dlo = fabs((double)x - bf2f(lo));
    // hi may be inf: its distance is that of the value 2^128 (IEEE rounding)
    const double vhi = isinf(bf2f(hi)) ? copysign(0x1p128, x) : (double)bf2f(hi);
    const double dhi = fabs((double)x - vhi);
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1) ? hi : lo;
}

// the int8 scheme of qgemm.h, step by step
static void ref_quantize_row(int8_t *q, float *scale, const float *x, int64_t K) {
    float amax = 0;
    int finite = 1;
    for (int64_t k = 0; k < K; k++) {
        if (!isfinite(x[k])) finite = 0;
        if (fabsf(x[k]) > amax) amax = fabsf(x[k]);
    }
    if (!finite || amax < 0x1p-120f) {
        *scale = finite ? 0.0f : NAN;
        for (int64_t k = 0; k < K; k++) q[k] = 0;
        return;
    }
    *scale = amax / 127.0f;
    const float inv = 127.0f / amax;
    for (int64_t k = 0; k < K; k++) {
        float v = x[k] * inv;
        if (v > 127) v = 127;
        if (v < -127) v = -127;
        q[k] = (int8_t)nearbyintf(v);
    }
}

// ----------------------------------------------------------------------------
// paths

static const char *type_name(int type) { return type == FR_QT_BF16 ? "bf16" : "int8"; }

static void list_paths(void) {
    for (int type = FR_QT_BF16; type <= FR_QT_INT8; type++)
        for (int isa = 0; isa < FR_QISA_COUNT; isa++) {
            if (fr_qisa_supported(type, isa))
                printf("  %s path %-10s runs here%s\n", type_name(type), fr_qisa_name(type, isa),
                       isa == fr_qbest_isa(type) ? " (the default)" : "");
            else
                printf("  %s path %-10s SKIPPED: needs %s, which this CPU (or the emulator "
                       "running it) lacks\n", type_name(type), fr_qisa_name(type, isa),
                       fr_qisa_needs(type, isa));
        }
}

// ----------------------------------------------------------------------------
// bf16round

static void test_bf16_round(void) {
    static const struct { uint32_t in; uint16_t out; } fixed[] = {
        {0x3F800000u, 0x3F80}, // 1
        {0x3F808000u, 0x3F80}, // 1 + 2^-8: tie, to even (down)
        {0x3F818000u, 0x3F82}, // tie, to even (up)
        {0x3F808001u, 0x3F81}, // just above the tie
        {0xBF80FFFFu, 0xBF81}, // negative, rounds away
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000},
        {0x00000001u, 0x0000}, {0x807FFFFFu, 0x8000}, // denormals -> signed zero
        {0x00800000u, 0x0080},                         // smallest normal kept
        {0x7F800000u, 0x7F80}, {0xFF800000u, 0xFF80},  // inf
        {0x7F7FFFFFu, 0x7F80},                         // the largest float rounds to inf
        {0x7F7F7FFFu, 0x7F7F},                         // stays finite
        {0x7FC00000u, 0x7FC0}, {0x7F800001u, 0x7FC0}, {0xFFA00000u, 0xFFE0}, // NaN, quiet
    };
    int ok = 1;
    char fail[400] = "";
    const int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    for (int i = 0; i < n_fixed; i++) {
        const float x = u2f(fixed[i].in);
        uint16_t got;
        fr_bf16_round(&got, &x, 1);
        const int is_nan = isnan(x);
        if (got != fixed[i].out || (!is_nan && ref_bf16(x) != got) ||
            (is_nan && !isnan(bf2f(got)))) {
            ok = 0;
            snprintf(fail, sizeof fail, ": 0x%08x -> 0x%04x, want 0x%04x", fixed[i].in, got,
                     fixed[i].out);
        }
    }
    enum { N = 200000 };
    float *x = xmalloc(N * sizeof(float));
    uint16_t *y = xmalloc(N * sizeof(uint16_t));
    rng_seed(11);
    for (int i = 0; i < N; i++) {
        uint32_t u = rand_u32();
        if (i % 4 == 1) u = (u & 0xFFFF0000u) | 0x8000u;            // exact ties
        if (i % 4 == 2) u = (u & 0x807FFFFFu) | (127u + (u % 8) - 4) << 23; // near 1
        x[i] = u2f(u);
    }
    fr_bf16_round(y, x, N);
    int mism = 0;
    for (int i = 0; i < N; i++) {
        if (isnan(x[i])) { mism += !isnan(bf2f(y[i])); continue; }
        if (y[i] != ref_bf16(x[i])) {
            if (!mism) snprintf(fail, sizeof fail, ": 0x%08x -> 0x%04x, search gives 0x%04x",
                                f2u(x[i]), y[i], ref_bf16(x[i]));
            mism++;
        }
    }
    if (mism) ok = 0;
    report(ok, "bf16round %d fixed values, %d random bit patterns (ties, near 1, NaN, inf, "
               "denormals): %d mismatches%s", n_fixed, N, mism, fail);
    free(x); free(y);
}

// ----------------------------------------------------------------------------
// quantize

static void test_quantize(void) {
    enum { R = 9, K = 37 };
    float X[R][K];
    int8_t Q[R][K], Qr[K];
    float s[R], sr;
    rng_seed(21);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < K; k++) X[r][k] = rand_uniform(-3, 3) * (float)(r + 1);
    for (int k = 0; k < K; k++) X[1][k] = 0;           // zero row
    for (int k = 0; k < K; k++) X[2][k] = 1e-37f;      // below 2^-120
    X[3][5] = NAN;                                     // NaN
    X[4][0] = -INFINITY;                               // inf
    for (int k = 0; k < K; k++) X[5][k] = (float)(k - 18) / 18.0f * 2.54f; // halves of a step
    X[6][3] = 1e30f;                                   // one huge entry
    fr_s8_quantize(&Q[0][0], s, &X[0][0], K, R, K);
    int ok = 1;
    char fail[400] = "";
    for (int r = 0; r < R; r++) {
        ref_quantize_row(Qr, &sr, X[r], K);
        const int same_scale = (isnan(sr) && isnan(s[r])) || sr == s[r];
        if (!same_scale || memcmp(Qr, Q[r], K) != 0) {
            ok = 0;
            snprintf(fail, sizeof fail, ": row %d differs from the written-out scheme", r);
        }
        int amax = 0;
        for (int k = 0; k < K; k++) {
            const int q = Q[r][k];
            if (q < -127 || q > 127) { ok = 0; snprintf(fail, sizeof fail, ": row %d q=%d", r, q); }
            if (abs(q) > amax) amax = abs(q);
            // |x - q s| <= s / 2 (a few float32 roundings of slack)
            if (isfinite(s[r]) && s[r] > 0 &&
                fabs((double)X[r][k] - (double)q * s[r]) > 0.5001 * s[r]) {
                ok = 0;
                snprintf(fail, sizeof fail, ": row %d k %d error beyond half a step", r, k);
            }
        }
        if (isfinite(s[r]) && s[r] > 0 && amax != 127) {
            ok = 0;
            snprintf(fail, sizeof fail, ": row %d: largest |q| %d, not 127", r, amax);
        }
    }
    if (s[1] != 0 || s[2] != 0 || !isnan(s[3]) || !isnan(s[4])) {
        ok = 0;
        snprintf(fail, sizeof fail, ": zero/tiny/NaN/inf scales %g %g %g %g", s[1], s[2], s[3],
                 s[4]);
    }
    report(ok, "quantize per-row symmetric int8: %d rows (zero, tiny, NaN, inf, ties, one huge) "
               "equal the written-out scheme, |q| <= 127, max |q| = 127, error <= half a step%s",
           R, fail);
}

// ----------------------------------------------------------------------------
// the GEMM cases

typedef struct {
    int64_t M, N, K;
    int transposed; // W stored (N, K) (the forward's weights) or (K, N)
    int beta1;
    int off;        // elements of misalignment of A, C, W and work
} gcase;

typedef struct {
    int64_t maxerr_ulps; // int8: 0 expected; bf16 sequential: 0 expected
    double worst_bound;  // bf16: worst |err| / bound
    char fail[640];
    int ok;
} gresult;

// C0: (M + 1, ldc) with ldc = N + 3: padding and one row past M hold a sentinel
static void run_case(int type, const gcase *gc, gresult *res, int sequential_exact) {
    const int64_t M = gc->M, N = gc->N, K = gc->K, off = gc->off;
    const int64_t lda = K + 2, ldc = N + 3, ldw = gc->transposed ? K + 1 : N + 1;
    const int64_t wrows = gc->transposed ? N : K;
    const float sentinel = 1234.5f;
    float *Abuf = xmalloc((size_t)(M * lda + off) * sizeof(float));
    float *A = Abuf + off;                                    // (M, K), row stride lda
    float *Wf = xmalloc((size_t)(wrows * ldw) * sizeof(float)); // (N, K) or (K, N), stride ldw
    float *Cbuf = xmalloc((size_t)((M + 1) * ldc + off) * sizeof(float));
    float *C = Cbuf + off;                                    // (M + 1, ldc)
    float *C0 = xmalloc((size_t)((M + 1) * ldc) * sizeof(float));
    uint64_t seed = (uint64_t)(M * 1000003 + N * 1009 + K * 7 + gc->transposed * 3 + gc->beta1);
    rng_seed(seed);
    for (int64_t i = 0; i < M * lda; i++) A[i] = rand_uniform(-2, 2);
    for (int64_t i = 0; i < wrows * ldw; i++) Wf[i] = rand_uniform(-0.5f, 0.5f);
    if (M > 2) A[1 * lda + K / 2] = 7.5f; // a row with one large entry
    for (int64_t i = 0; i < (M + 1) * ldc; i++)
        C0[i] = (i / ldc >= M || i % ldc >= N) ? sentinel : rand_uniform(-1, 1);
    memcpy(C, C0, (size_t)((M + 1) * ldc) * sizeof(float));

    size_t pbytes = 0, wbytes = 0;
    int rc = fr_qpacked_bytes(&pbytes, type, N, K);
    if (rc == FR_OK) rc = fr_qgemm_workspace_bytes(&wbytes, type, M, K);
    char *Pbuf = xmalloc(pbytes + 4 * (size_t)off);
    void *Wp = Pbuf + 4 * off;
    char *workbuf = xmalloc(wbytes + (size_t)off);
    void *work = workbuf + off;

    // weights in the reduced type; Wd (N, K) their values as doubles (W^T[n][k])
    double *Wd = xmalloc((size_t)(N * K) * sizeof(double));
    int8_t *Wq = NULL; // (N, K) or (K, N) as stored
    float *sw = xmalloc((size_t)N * sizeof(float));
    uint16_t *Wb = NULL;
    if (type == FR_QT_INT8) {
        // quantise W^T's rows (the output columns): gather each into a row first
        Wq = xmalloc((size_t)(wrows * ldw));
        memset(Wq, 0, (size_t)(wrows * ldw));
        float *row = xmalloc((size_t)K * sizeof(float));
        int8_t *qrow = xmalloc((size_t)K);
        for (int64_t n = 0; n < N; n++) {
            for (int64_t k = 0; k < K; k++)
                row[k] = gc->transposed ? Wf[n * ldw + k] : Wf[k * ldw + n];
            fr_s8_quantize(qrow, &sw[n], row, K, 1, K);
            for (int64_t k = 0; k < K; k++) {
                if (gc->transposed) Wq[n * ldw + k] = qrow[k]; else Wq[k * ldw + n] = qrow[k];
                Wd[n * K + k] = qrow[k];
            }
        }
        free(row); free(qrow);
        if (rc == FR_OK) rc = fr_s8_pack(Wp, Wq, sw, gc->transposed, N, K, ldw);
    } else {
        Wb = xmalloc((size_t)(wrows * ldw) * sizeof(uint16_t));
        fr_bf16_round(Wb, Wf, wrows * ldw);
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                Wd[n * K + k] = bf2f(gc->transposed ? Wb[n * ldw + k] : Wb[k * ldw + n]);
        if (rc == FR_OK) rc = fr_bf16_pack(Wp, Wb, gc->transposed, N, K, ldw);
    }
    if (rc == FR_OK) rc = fr_qgemm(C, ldc, work, A, lda, Wp, type, M, N, K, gc->beta1);
    if (rc != FR_OK) {
        res->ok = 0;
        snprintf(res->fail, sizeof res->fail, ": M=%lld N=%lld K=%lld rc=%d", (long long)M,
                 (long long)N, (long long)K, rc);
    }

    int8_t *aq = xmalloc((size_t)K);
    for (int64_t m = 0; m < M && rc == FR_OK; m++) {
        float sa = 0;
        if (type == FR_QT_INT8) ref_quantize_row(aq, &sa, A + m * lda, K);
        for (int64_t n = 0; n < N; n++) {
            const float c0 = C0[m * ldc + n], got = C[m * ldc + n];
            float want;
            if (type == FR_QT_INT8) {
                int64_t acc = 0;
                for (int64_t k = 0; k < K; k++) acc += (int64_t)aq[k] * (int64_t)Wd[n * K + k];
                const float y = (float)acc * (sa * sw[n]);
                want = gc->beta1 ? c0 + y : y;
                if (f2u(got) != f2u(want)) {
                    if (res->ok)
                        snprintf(res->fail, sizeof res->fail,
                                 ": M=%lld N=%lld K=%lld t=%d b=%d C[%lld][%lld] = %.9g, integer "
                                 "reference %.9g", (long long)M, (long long)N, (long long)K,
                                 gc->transposed, gc->beta1, (long long)m, (long long)n, got, want);
                    res->ok = 0;
                }
                continue;
            }
            // bf16: float32 sums one product at a time, in k order (sequential_exact 1)
            // or pair by pair with the odd k first (2: vdpbf16ps as defined), and the
            // exact sum with its bound
            float seq = 0;
            double exact = 0, mag = 0;
            for (int64_t i = 0; i < K + K % 2; i++) {
                const int64_t k = sequential_exact == 2 ? (i ^ 1) : i;
                if (k >= K) continue;
                const float a = bf2f(ref_bf16(A[m * lda + k])), w = (float)Wd[n * K + k];
                seq = seq + a * w;
                exact += (double)a * w;
                mag += fabs((double)a * w);
            }
            want = gc->beta1 ? c0 + seq : seq;
            if (gc->beta1) { exact += c0; mag += fabs(c0); }
            const double bound = (double)(K + 1) * 0x1p-24 * mag + 1e-30;
            const double ratio = fabs((double)got - exact) / bound;
            if (ratio > res->worst_bound) res->worst_bound = ratio;
            if (!(ratio <= 1.0) || (sequential_exact && f2u(got) != f2u(want))) {
                if (res->ok)
                    snprintf(res->fail, sizeof res->fail,
                             ": M=%lld N=%lld K=%lld t=%d b=%d C[%lld][%lld] = %.9g, k-order "
                             "float32 sum %.9g, exact %.9g (%.2f of the bound)", (long long)M,
                             (long long)N, (long long)K, gc->transposed, gc->beta1, (long long)m,
                             (long long)n, got, want, exact, ratio);
                res->ok = 0;
            }
        }
    }
    // the padding columns and the row past M are untouched
    for (int64_t i = 0; i < (M + 1) * ldc; i++)
        if ((i / ldc >= M || i % ldc >= N) && f2u(C[i]) != f2u(sentinel)) {
            if (res->ok)
                snprintf(res->fail, sizeof res->fail, ": M=%lld N=%lld K=%lld wrote outside C",
                         (long long)M, (long long)N, (long long)K);
            res->ok = 0;
            break;
        }
    free(aq); free(Abuf); free(Wf); free(Cbuf); free(C0); free(Pbuf); free(workbuf); free(Wd);
    free(Wq); free(sw); free(Wb);
}

static int n_gemm_cases(gcase *out) {
    int n = 0;
    static const int64_t NK[][2] = {{33, 5}, {70, 1}, {100, 7}};
    for (int64_t M = 1; M <= 17; M++) {
        const int64_t N = NK[M % 3][0], K = NK[M % 3][1];
        out[n++] = (gcase){M, N, K, (int)(M % 2), (int)(M % 4 >= 2), (int)(M % 3 == 0)};
    }
    static const gcase more[] = {
        {1, 1, 1, 1, 0, 0},    {1, 32, 2, 1, 0, 1},   {2, 31, 3, 0, 1, 0},  {3, 64, 4, 1, 1, 1},
        {5, 65, 600, 1, 0, 0}, {17, 130, 600, 1, 1, 1}, {8, 512, 128, 1, 0, 0},
        {12, 96, 63, 0, 0, 0}, {13, 97, 64, 1, 1, 0}, {64, 40, 129, 1, 0, 1},
        {200, 70, 33, 1, 1, 0}, {200, 33, 256, 0, 0, 1},
        // the bf16 AVX2 path's wide tile from FR_QWIDE_MIN_ROWS rows on: both sides of the
        // switch, tiles of 1 .. 5 rows, blocks of 120 rows and of 64 words of K (K odd,
        // a last block of one word), N a half panel, or not
        {FR_QWIDE_MIN_ROWS - 1, 45, 257, 1, 1, 0}, {FR_QWIDE_MIN_ROWS, 16, 129, 1, 0, 1},
        {FR_QWIDE_MIN_ROWS, 45, 130, 0, 1, 0},     {FR_QWIDE_MIN_ROWS + 1, 17, 255, 1, 1, 1},
        {FR_QWIDE_MIN_ROWS + 2, 48, 1, 1, 0, 0},   {FR_QWIDE_MIN_ROWS + 3, 100, 2, 0, 0, 1},
        {FR_QWIDE_MIN_ROWS + 4, 33, 601, 1, 1, 0}, {21, 64, 128, 1, 1, 1},
        {121, 45, 299, 1, 1, 0}, {122, 70, 7, 1, 0, 1}, {123, 33, 257, 0, 1, 1},
        {243, 40, 131, 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) out[n++] = more[i];
    return n;
}

static void test_gemm_paths(int type) {
    gcase cases[64];
    const int nc = n_gemm_cases(cases);
    const int saved = fr_qget_isa(type);
    for (int isa = 0; isa < FR_QISA_COUNT; isa++) {
        if (!fr_qisa_supported(type, isa)) {
            printf("[skip] %s gemm path %s: needs %s\n", type_name(type), fr_qisa_name(type, isa),
                   fr_qisa_needs(type, isa));
            continue;
        }
        fr_qset_isa(type, isa);
        // the widening bf16 paths sum in k order, vdpbf16ps pair by pair (odd k first),
        // one rounding per product
        const int seq = type != FR_QT_BF16 ? 0 : isa == FR_QISA_TOP ? 2 : 1;
        gresult res = {.ok = 1};
        for (int i = 0; i < nc; i++) run_case(type, &cases[i], &res, seq);
        if (type == FR_QT_INT8)
            report(res.ok, "int8 gemm path %-10s %d cases (M 1..243; N 1..512; K 1..600; "
                           "(N,K)/(K,N) weights; +C; misaligned): == integer reference%s",
                   fr_qisa_name(type, isa), nc, res.fail);
        else
            report(res.ok, "bf16 gemm path %-10s %d cases: == float32 sums %s bit for bit; "
                           "worst error %.3f of the float32 bound%s", fr_qisa_name(type, isa), nc,
                   seq == 2 ? "pair by pair (odd k first)" : "in k order", res.worst_bound,
                   res.fail);
    }
    fr_qset_isa(type, saved);
}

// ----------------------------------------------------------------------------
// worst: int8 at the extremes

static void test_worst(void) {
    const int saved = fr_qget_isa(FR_QT_INT8);
    static const int64_t Ks[] = {600, FR_S8_MAX_K};
    for (int isa = 0; isa < FR_QISA_COUNT; isa++) {
        if (!fr_qisa_supported(FR_QT_INT8, isa)) continue;
        fr_qset_isa(FR_QT_INT8, isa);
        int ok = 1;
        char fail[400] = "";
        for (size_t ki = 0; ki < 2; ki++) {
            const int64_t K = Ks[ki], N = 35, M = 3;
            // rows: a = +1 everywhere (q = 127, u8 255); a = -1 (q = -127, u8 1);
            // a alternating; columns: w = 127, -127, alternating, and its negation
            float *A = xmalloc((size_t)(M * K) * sizeof(float));
            int8_t *W = xmalloc((size_t)(N * K));
            float *sw = xmalloc((size_t)N * sizeof(float));
            float *C = xmalloc((size_t)(M * N) * sizeof(float));
            for (int64_t k = 0; k < K; k++) {
                A[k] = 1;
                A[K + k] = -1;
                A[2 * K + k] = (k % 2) ? -1.0f : 1.0f;
            }
            for (int64_t n = 0; n < N; n++) {
                sw[n] = 1.0f;
                for (int64_t k = 0; k < K; k++) {
                    const int s = n % 4 == 0 ? 1 : n % 4 == 1 ? -1 : n % 4 == 2 ? (k % 2 ? -1 : 1)
                                                                               : (k % 2 ? 1 : -1);
                    W[n * K + k] = (int8_t)(127 * s);
                }
            }
            size_t pb, wb;
            int rc = fr_qpacked_bytes(&pb, FR_QT_INT8, N, K);
            if (rc == FR_OK) rc = fr_qgemm_workspace_bytes(&wb, FR_QT_INT8, M, K);
            void *P = rc == FR_OK ? xmalloc(pb) : NULL, *work = rc == FR_OK ? xmalloc(wb) : NULL;
            if (rc == FR_OK) rc = fr_s8_pack(P, W, sw, 1, N, K, K);
            if (rc == FR_OK) rc = fr_qgemm(C, N, work, A, K, P, FR_QT_INT8, M, N, K, 0);
            const float sa = 1.0f / 127.0f;
            for (int64_t m = 0; m < M && rc == FR_OK; m++)
                for (int64_t n = 0; n < N; n++) {
                    int64_t acc = 0;
                    for (int64_t k = 0; k < K; k++) {
                        const int64_t a = A[m * K + k] > 0 ? 127 : -127;
                        acc += a * W[n * K + k];
                    }
                    const float want = (float)acc * (sa * sw[n]);
                    if (f2u(C[m * N + n]) != f2u(want)) {
                        ok = 0;
                        snprintf(fail, sizeof fail, ": K=%lld C[%lld][%lld] = %.9g, want %.9g",
                                 (long long)K, (long long)m, (long long)n, C[m * N + n], want);
                    }
                }
            if (rc != FR_OK) { ok = 0; snprintf(fail, sizeof fail, ": rc=%d", rc); }
            free(A); free(W); free(sw); free(C); free(P); free(work);
        }
        report(ok, "worst   int8 path %-10s |a| = |w| = 127 everywhere, sums up to +-127^2 K, "
                   "K = 600 and %lld: exact%s", fr_qisa_name(FR_QT_INT8, isa),
               (long long)FR_S8_MAX_K, fail);
    }
    fr_qset_isa(FR_QT_INT8, saved);
}

// ----------------------------------------------------------------------------
// non-finite activations: the outputs of that row are NaN (int8) / not finite (bf16)

static void test_nonfinite(void) {
    int ok = 1;
    char fail[400] = "";
    for (int type = FR_QT_BF16; type <= FR_QT_INT8; type++) {
        const int64_t M = 2, N = 40, K = 9;
        float A[2 * 9], C[2 * 40], Wf[40 * 9], sw[40];
        int8_t Wq[40 * 9];
        uint16_t Wb[40 * 9];
        for (int i = 0; i < M * K; i++) A[i] = 0.25f * (float)(i % 5) - 0.5f;
        A[K + 4] = NAN;
        for (int i = 0; i < N * K; i++) Wf[i] = 0.1f * (float)(i % 7) - 0.3f;
        size_t pb, wb;
        fr_qpacked_bytes(&pb, type, N, K);
        fr_qgemm_workspace_bytes(&wb, type, M, K);
        void *P = xmalloc(pb), *work = xmalloc(wb);
        if (type == FR_QT_INT8) {
            fr_s8_quantize(Wq, sw, Wf, K, N, K);
            fr_s8_pack(P, Wq, sw, 1, N, K, K);
        } else {
            fr_bf16_round(Wb, Wf, N * K);
            fr_bf16_pack(P, Wb, 1, N, K, K);
        }
        const int rc = fr_qgemm(C, N, work, A, K, P, type, M, N, K, 0);
        for (int64_t n = 0; n < N; n++)
            if (rc != FR_OK || !isfinite(C[n]) || isfinite(C[N + n])) {
                ok = 0;
                snprintf(fail, sizeof fail, ": %s rc=%d C[0][%lld]=%g C[1][%lld]=%g",
                         type_name(type), rc, (long long)n, C[n], (long long)n, C[N + n]);
                break;
            }
        free(P); free(work);
    }
    report(ok, "nonfinite a NaN activation makes its row's outputs NaN, the other row finite "
               "(bf16, int8)%s", fail);
}

// ----------------------------------------------------------------------------
// sizes and bad arguments

static void test_sizes(void) {
    int ok = 1;
    char fail[400] = "";
#define EXPECT(expr, want)                                                                  \
    do {                                                                                    \
        int got_ = (expr);                                                                  \
        if (got_ != (want) && ok) {                                                         \
            ok = 0;                                                                         \
            snprintf(fail, sizeof fail, ": %s returned %d, want %d (line %d)", #expr, got_,  \
                     (want), __LINE__);                                                     \
        }                                                                                   \
    } while (0)
    size_t b;
    EXPECT(fr_qpacked_bytes(&b, FR_QT_BF16, 1, 1), FR_OK);
    EXPECT((int)b, 128); // one panel, one pair row of 32 words
    EXPECT(fr_qpacked_bytes(&b, FR_QT_INT8, 33, 5), FR_OK);
    EXPECT((int)b, 2 * (2 + 2) * 128); // two panels of 2 quad rows + sums + scales
    EXPECT(fr_qpacked_bytes(&b, FR_QT_BF16, 33, 5), FR_OK);
    EXPECT((int)b, 2 * 3 * 128);
    EXPECT(fr_qpacked_bytes(&b, 3, 1, 1), FR_EINVAL);
    EXPECT(fr_qpacked_bytes(&b, FR_QT_BF16, 0, 1), FR_EINVAL);
    EXPECT(fr_qpacked_bytes(&b, FR_QT_BF16, 1, 0), FR_EINVAL);
    EXPECT(fr_qpacked_bytes(NULL, FR_QT_BF16, 1, 1), FR_ENULL);
    EXPECT(fr_qpacked_bytes(&b, FR_QT_BF16, INT64_MAX, 1), FR_EOVERFLOW);
    EXPECT(fr_qpacked_bytes(&b, FR_QT_BF16, (int64_t)1 << 31, (int64_t)1 << 31), FR_EOVERFLOW);
    EXPECT(fr_qpacked_bytes(&b, FR_QT_INT8, 1, FR_S8_MAX_K), FR_OK);
    EXPECT(fr_qpacked_bytes(&b, FR_QT_INT8, 1, FR_S8_MAX_K + 1), FR_EOVERFLOW);
    EXPECT(fr_qgemm_workspace_bytes(&b, FR_QT_INT8, 0, 5), FR_OK);
    EXPECT(fr_qgemm_workspace_bytes(&b, FR_QT_INT8, -1, 5), FR_EINVAL);
    EXPECT(fr_qgemm_workspace_bytes(&b, FR_QT_BF16, INT64_MAX / 2, 5), FR_EOVERFLOW);
    EXPECT(fr_qgemm_workspace_bytes(&b, FR_QT_BF16, (int64_t)1 << 40, (int64_t)1 << 40),
           FR_EOVERFLOW);
    EXPECT(fr_qgemm_workspace_bytes(NULL, FR_QT_BF16, 1, 1), FR_ENULL);
    // the calls
    float A[4] = {1, 2, 3, 4}, C[64], s[2] = {1, 1};
    int8_t W[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint16_t Wb[8] = {0};
    _Alignas(64) unsigned char P[1024], work[1024];
    EXPECT(fr_s8_pack(P, W, s, 1, 2, 4, 4), FR_OK);
    EXPECT(fr_qgemm(C, 2, work, A, 4, P, FR_QT_INT8, 1, 2, 4, 0), FR_OK);
    EXPECT(fr_qgemm(NULL, 2, work, A, 4, P, FR_QT_INT8, 1, 2, 4, 0), FR_ENULL);
    EXPECT(fr_qgemm(C, 2, NULL, A, 4, P, FR_QT_INT8, 1, 2, 4, 0), FR_ENULL);
    EXPECT(fr_qgemm(C, 2, work, NULL, 4, P, FR_QT_INT8, 1, 2, 4, 0), FR_ENULL);
    EXPECT(fr_qgemm(C, 2, work, A, 4, NULL, FR_QT_INT8, 1, 2, 4, 0), FR_ENULL);
    EXPECT(fr_qgemm(C, 2, work, A, 4, P, FR_QT_INT8, 0, 2, 4, 0), FR_OK); // M = 0: nothing
    EXPECT(fr_qgemm(C, 1, work, A, 4, P, FR_QT_INT8, 1, 2, 4, 0), FR_EINVAL); // ldc < N
    EXPECT(fr_qgemm(C, 2, work, A, 3, P, FR_QT_INT8, 1, 2, 4, 0), FR_EINVAL); // lda < K
    EXPECT(fr_qgemm(C, 2, work, A, 4, P + 1, FR_QT_INT8, 1, 2, 4, 0), FR_EINVAL); // unaligned
    EXPECT(fr_qgemm(C, 2, work, A, 4, P, 0, 1, 2, 4, 0), FR_EINVAL);
    EXPECT(fr_qgemm(C, 2, work, A, 4, P, FR_QT_INT8, 1, 0, 4, 0), FR_EINVAL);
    EXPECT(fr_qgemm(C, 2, work, A, 4, P, FR_QT_INT8, 1, 2, FR_S8_MAX_K + 1, 0), FR_EOVERFLOW);
    W[5] = -128;
    EXPECT(fr_s8_pack(P, W, s, 1, 2, 4, 4), FR_EINVAL);
    EXPECT(fr_s8_pack(P, W, s, 1, 2, 4, 3), FR_EINVAL); // ldw < K
    EXPECT(fr_s8_pack(NULL, W, s, 1, 2, 4, 4), FR_ENULL);
    EXPECT(fr_bf16_pack(P, Wb, 0, 2, 4, 2), FR_OK);
    EXPECT(fr_bf16_pack(P, Wb, 0, 2, 4, 1), FR_EINVAL); // ldw < N
    EXPECT(fr_bf16_pack(P + 2, Wb, 0, 2, 4, 2), FR_EINVAL);
    // paths
    EXPECT(fr_qset_isa(FR_QT_BF16, FR_QISA_GENERIC), FR_OK);
    EXPECT(fr_qget_isa(FR_QT_BF16), FR_QISA_GENERIC);
    EXPECT(fr_qset_isa(FR_QT_BF16, fr_qbest_isa(FR_QT_BF16)), FR_OK);
    EXPECT(fr_qset_isa(FR_QT_BF16, FR_QISA_COUNT), FR_EINVAL);
    EXPECT(fr_qset_isa(FR_QT_BF16, -1), FR_EINVAL);
    EXPECT(fr_qset_isa(7, 0), FR_EINVAL);
    EXPECT(fr_qget_isa(7), FR_EINVAL);
    EXPECT(fr_qisa_name(7, 0) == NULL, 1);
    for (int isa = 0; isa < FR_QISA_COUNT; isa++)
        if (!fr_qisa_supported(FR_QT_INT8, isa)) EXPECT(fr_qset_isa(FR_QT_INT8, isa), FR_EINVAL);
#undef EXPECT
    report(ok, "sizes   packed/workspace sizes, overflow, K limit, NULLs, strides, alignment, "
               "-128 weights, path switch%s", fail);
}

int main(void) {
    printf("fusedrnn reduced-precision GEMM tests\n");
    list_paths();
    test_bf16_round();
    test_quantize();
    test_sizes();
    test_gemm_paths(FR_QT_INT8);
    test_gemm_paths(FR_QT_BF16);
    test_worst();
    test_nonfinite();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
