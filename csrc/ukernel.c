/* Packed-weight GEMM for the per-step products of the time loops.
 *
 * Every step of a recurrent layer multiplies a few rows (the batch) by a
 * weight matrix that stays the same for all T steps. Packing the weights once
 * per call into panels of FR_PW columns (128 bytes: two AVX-512 or four AVX2
 * registers wide), contiguous along K, lets each step stream them with unit
 * stride through a register-blocked tile. The tile is written with intrinsics
 * for AVX-512 and AVX2+FMA and picked at run time (__builtin_cpu_supports), so
 * a default build runs on any x86-64; other CPUs and compilers get portable C. */
#include "common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(FR_NO_SIMD_KERNELS)
#define FR_UK_X86 1
#include <immintrin.h>
#endif

/* ---- packing ---------------------------------------------------------------- */
/* Loops ordered so that the reads run along W's rows (unit stride) and the
 * writes stay inside one panel (K PW elements, in L1/L2): transposed W (the
 * forward's (N, K) weights) is read row by row, plain W k-row by k-row. */
#define FR_PACK_BODY(real)                                                              \
    const int64_t PW = FR_PW(real), n_panels = (N + PW - 1) / PW;                       \
    for (int64_t p = 0; p < n_panels; p++) {                                            \
        real *dst = Wp + p * K * PW;                                                    \
        const int64_t n0 = p * PW, nn = N - n0 < PW ? N - n0 : PW;                      \
        if (nn < PW) memset(dst, 0, (size_t)(K * PW) * sizeof(real));                   \
        if (transposed) {                                                               \
            int64_t i = 0;                                                              \
            FR_PACK_T_BLOCKS(real)                                                      \
            for (; i < nn; i++) {                                                       \
                const real *src = W + (n0 + i) * ldw;                                   \
                for (int64_t k = 0; k < K; k++) dst[k * PW + i] = src[k];               \
            }                                                                           \
        } else {                                                                        \
            for (int64_t k = 0; k < K; k++)                                             \
                memcpy(dst + k * PW, W + k * ldw + n0, (size_t)nn * sizeof(real));      \
        }                                                                               \
    }

/* The transposing pack in SSE blocks (baseline x86-64): 4 x 4 floats or 2 x 2
 * doubles per register transpose instead of one scalar store per element; the
 * pack is most of a short call's time (T = 1: 70% at H = 128). */
#ifdef FR_UK_X86
#define FR_PACK_T_BLOCKS(real) FR_PACK_T_##real
#define FR_PACK_T_float                                                                     \
    for (; i + 4 <= nn; i += 4) {                                                           \
        const float *r0 = W + (n0 + i) * ldw, *r1 = r0 + ldw, *r2 = r1 + ldw, *r3 = r2 + ldw; \
        int64_t k = 0;                                                                      \
        for (; k + 4 <= K; k += 4) {                                                        \
            __m128 a = _mm_loadu_ps(r0 + k), b = _mm_loadu_ps(r1 + k);                      \
            __m128 c = _mm_loadu_ps(r2 + k), d = _mm_loadu_ps(r3 + k);                      \
            _MM_TRANSPOSE4_PS(a, b, c, d);                                                  \
            _mm_storeu_ps(dst + k * PW + i, a);                                             \
            _mm_storeu_ps(dst + (k + 1) * PW + i, b);                                       \
            _mm_storeu_ps(dst + (k + 2) * PW + i, c);                                       \
            _mm_storeu_ps(dst + (k + 3) * PW + i, d);                                       \
        }                                                                                   \
        for (; k < K; k++) {                                                                \
            dst[k * PW + i] = r0[k]; dst[k * PW + i + 1] = r1[k];                           \
            dst[k * PW + i + 2] = r2[k]; dst[k * PW + i + 3] = r3[k];                       \
        }                                                                                   \
    }
#define FR_PACK_T_double                                                                    \
    for (; i + 2 <= nn; i += 2) {                                                           \
        const double *r0 = W + (n0 + i) * ldw, *r1 = r0 + ldw;                              \
        int64_t k = 0;                                                                      \
        for (; k + 2 <= K; k += 2) {                                                        \
            const __m128d a = _mm_loadu_pd(r0 + k), b = _mm_loadu_pd(r1 + k);               \
            _mm_storeu_pd(dst + k * PW + i, _mm_unpacklo_pd(a, b));                         \
            _mm_storeu_pd(dst + (k + 1) * PW + i, _mm_unpackhi_pd(a, b));                   \
        }                                                                                   \
        for (; k < K; k++) { dst[k * PW + i] = r0[k]; dst[k * PW + i + 1] = r1[k]; }        \
    }
#else
#define FR_PACK_T_BLOCKS(real)
#endif

void fr_pack_f32(float *Wp, const float *W, int transposed, int64_t N, int64_t K, int64_t ldw) {
    FR_PACK_BODY(float)
}
void fr_pack_f64(double *Wp, const double *W, int transposed, int64_t N, int64_t K, int64_t ldw) {
    FR_PACK_BODY(double)
}

/* ---- portable tile ------------------------------------------------------------- */
#define UK_KC ((int64_t)(1024 / sizeof(real)))
/* rows of op(A) = A^T copied per block (a multiple of every UK_MR; 96 KB, in L2) */
#define UK_MB 96
/* op(A) = A with rows this far apart (or more) and at least this many rows: copied
 * in strips too (see ugemm_t) */
#define UK_ALIAS_BYTES 2048
#define UK_COPY_MIN_ROWS 8
/* Each instantiation below defines the parameters of ukernel_body.h, which
 * undefines them again. */
#define UK_SHAPE (4, 4, 1, 1, 1, 1)
#define real float
#define VEC float
#define VL 1
#define NV 32
#define UKSUF _f32_generic
#include "uk_scalar_ops.h"
#include "ukernel_body.h"

#define UK_SHAPE (4, 4, 1, 1, 1, 1)
#define real double
#define VEC double
#define VL 1
#define NV 16
#define UKSUF _f64_generic
#include "uk_scalar_ops.h"
#include "ukernel_body.h"

#ifdef FR_UK_X86
/* ---- AVX-512: 32 registers; 12 rows x 2 vectors = 24 accumulators ------------- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define UK_SHAPE (12, 12, 1, 2, 4, 4)
#define real float
#define VEC __m512
#define VL 16
#define NV 2
#define UKSUF _f32_avx512
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VLOADM(p, n) _mm512_maskz_loadu_ps((__mmask16)((n) <= 0 ? 0u : (1u << (n)) - 1u), (p))
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VADD(a, b) _mm512_add_ps((a), (b))
#include "ukernel_body.h"

#define UK_SHAPE (12, 12, 1, 2, 4, 4)
#define real double
#define VEC __m512d
#define VL 8
#define NV 2
#define UKSUF _f64_avx512
#define VZERO() _mm512_setzero_pd()
#define VLOAD(p) _mm512_loadu_pd(p)
#define VLOADM(p, n) _mm512_maskz_loadu_pd((__mmask8)((n) <= 0 ? 0u : (1u << (n)) - 1u), (p))
#define VSTORE(p, v) _mm512_storeu_pd((p), (v))
#define VFMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define VBCAST(p) _mm512_set1_pd(*(p))
#define VADD(a, b) _mm512_add_pd((a), (b))
#include "ukernel_body.h"
#pragma GCC pop_options

/* ---- AVX2 + FMA: 16 registers; 2 rows x 4 vectors = 8 accumulators ------------ *
 * (3 rows x 4 vectors spilled with GCC 12; about 45 GFLOP/s on Zen 4 either way,
 * against about 110 for the AVX-512 tile.) */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define UK_SHAPE (4, 2, 1, 1, 1, 2)
#define real float
#define VEC __m256
#define VL 8
#define NV 4
#define UKSUF _f32_avx2
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VLOADM(p, n) \
    _mm256_maskload_ps((p), _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), \
                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VADD(a, b) _mm256_add_ps((a), (b))
#include "ukernel_body.h"

#define UK_SHAPE (4, 2, 1, 1, 1, 2)
#define real double
#define VEC __m256d
#define VL 4
#define NV 4
#define UKSUF _f64_avx2
#define VZERO() _mm256_setzero_pd()
#define VLOAD(p) _mm256_loadu_pd(p)
#define VLOADM(p, n) \
    _mm256_maskload_pd((p), _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n)), \
                                               _mm256_setr_epi64x(0, 1, 2, 3)))
#define VSTORE(p, v) _mm256_storeu_pd((p), (v))
#define VFMA(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define VBCAST(p) _mm256_broadcast_sd(p)
#define VADD(a, b) _mm256_add_pd((a), (b))
#include "ukernel_body.h"
#pragma GCC pop_options
#endif /* FR_UK_X86 */

/* ---- dispatch ---------------------------------------------------------------- */

static int g_isa = -1; /* FR_ISA_*, chosen on first use; fr_set_isa overrides */

int fr_best_isa(void) {
#ifdef FR_UK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return FR_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FR_ISA_AVX2;
#endif
    return FR_ISA_GENERIC;
}

int fr_get_isa(void) {
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = fr_best_isa();
        __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

int fr_set_isa(int isa) {
    if (isa < FR_ISA_GENERIC || isa > fr_best_isa()) return FR_EINVAL;
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    return FR_OK;
}

void fr_ugemm_f32(float *C, int64_t ldc, const float *A, int64_t lda, int ta, const float *W,
                  int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1) {
    switch (fr_get_isa()) {
#ifdef FR_UK_X86
    case FR_ISA_AVX512: ugemm_f32_avx512(C, ldc, A, lda, ta, W, ldw, M, N, K, beta1); return;
    case FR_ISA_AVX2: ugemm_f32_avx2(C, ldc, A, lda, ta, W, ldw, M, N, K, beta1); return;
#endif
    default: ugemm_f32_generic(C, ldc, A, lda, ta, W, ldw, M, N, K, beta1); return;
    }
}

void fr_ugemm_f64(double *C, int64_t ldc, const double *A, int64_t lda, int ta,
                  const double *W, int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1) {
    switch (fr_get_isa()) {
#ifdef FR_UK_X86
    case FR_ISA_AVX512: ugemm_f64_avx512(C, ldc, A, lda, ta, W, ldw, M, N, K, beta1); return;
    case FR_ISA_AVX2: ugemm_f64_avx2(C, ldc, A, lda, ta, W, ldw, M, N, K, beta1); return;
#endif
    default: ugemm_f64_generic(C, ldc, A, lda, ta, W, ldw, M, N, K, beta1); return;
    }
}
