/* Reduced-precision GEMM for inference: weights packed once in bfloat16 or
 * int8 (qgemm.h), activations rounded or quantised at every call, float32
 * out. The scheme: docs/equations.md, "Reduced precision".
 *
 * Each ISA path is one instantiation of qgemm_body.h; its functions carry
 * __attribute__((target(...))) and are chosen at run time with
 * __builtin_cpu_supports, so a default build runs on any x86-64. This file is
 * compiled without floating-point contraction: the int8 epilogue's multiply
 * and add stay two roundings on every path, as in the NumPy oracle. */
#include "qgemm.h"

#include "common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(FR_NO_SIMD_KERNELS)
#define FR_QK_X86 1
#include <immintrin.h>
#endif

/* ---- the scalar arithmetic every path shares ------------------------------------- */

static inline uint32_t q_f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float q_bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* bf16 bits of x: round to nearest even; below 2^-126 in magnitude (float32
 * denormals) a signed zero, as vdpbf16ps reads its inputs; NaN quiet. */
static inline __attribute__((always_inline)) uint32_t q_bf16(uint32_t u) {
    const uint32_t mag = u & 0x7FFFFFFFu;
    if (mag > 0x7F800000u) return (u >> 16) | 0x0040u; /* NaN */
    if (mag < 0x00800000u) return (u >> 16) & 0x8000u; /* denormal or zero */
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

void fr_bf16_round(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = (uint16_t)q_bf16(q_f32_bits(src[i]));
}

/* A's rows as words of bf16 pairs (k, k+1), zero past K. Aw (M, ldaw). */
static inline __attribute__((always_inline)) void
q_prep_bf16(uint32_t *Aw, int64_t ldaw, const float *A, int64_t lda, int64_t M, int64_t K) {
    const int64_t kg = (K + 1) / 2;
    for (int64_t m = 0; m < M; m++) {
        const float *a = A + m * lda;
        uint32_t *w = Aw + m * ldaw;
        for (int64_t g = 0; g < K / 2; g++)
            w[g] = q_bf16(q_f32_bits(a[2 * g])) | q_bf16(q_f32_bits(a[2 * g + 1])) << 16;
        if (K % 2) w[kg - 1] = q_bf16(q_f32_bits(a[K - 1]));
    }
}

/* The per-row symmetric quantiser (qgemm.h): scale and 127 / amax of one row.
 * amax is taken on the bits (|x| as an integer orders like |x|, and NaN above
 * inf), so a NaN cannot hide behind a max. Returns 0 when the row quantises to
 * zero (tiny, or not finite). */
static inline __attribute__((always_inline)) int q_row_scale(float *scale, float *inv,
                                                             const float *x, int64_t K) {
    uint32_t amax = 0;
    for (int64_t k = 0; k < K; k++) {
        const uint32_t mag = q_f32_bits(x[k]) & 0x7FFFFFFFu;
        amax = mag > amax ? mag : amax;
    }
    if (amax >= 0x7F800000u) { /* inf or NaN */
        *scale = q_bits_f32(0x7FC00000u);
        *inv = 0.0f;
        return 0;
    }
    if (amax < 0x03800000u) { /* below 2^-120: 127 / amax would overflow */
        *scale = 0.0f;
        *inv = 0.0f;
        return 0;
    }
    const float a = q_bits_f32(amax);
    *scale = a / 127.0f;
    *inv = 127.0f / a;
    return 1;
}
static inline __attribute__((always_inline)) int32_t q_s8(float x, float inv) {
    float v = x * inv;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    return (int32_t)__builtin_nearbyintf(v);
}

void fr_s8_quantize(int8_t *Q, float *scale, const float *X, int64_t ldx, int64_t rows,
                    int64_t K) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = X + r * ldx;
        int8_t *q = Q + r * K;
        float inv;
        if (!q_row_scale(&scale[r], &inv, x, K)) {
            memset(q, 0, (size_t)K);
            continue;
        }
        for (int64_t k = 0; k < K; k++) q[k] = (int8_t)q_s8(x[k], inv);
    }
}

/* A's rows quantised, as words of 4 bytes (k .. k+3), s8, or u8 = s8 + 128
 * (u8 = 1: the VNNI paths), zero (s8) past K; sa (M) the row scales. */
static inline __attribute__((always_inline)) void q_prep_s8(uint32_t *Aw, int64_t ldaw,
                                                            float *sa, const float *A,
                                                            int64_t lda, int64_t M, int64_t K,
                                                            int u8) {
    const int64_t kg = (K + 3) / 4;
    const uint8_t flip = u8 ? 0x80 : 0x00;
    for (int64_t m = 0; m < M; m++) {
        const float *a = A + m * lda;
        uint8_t *q = (uint8_t *)(Aw + m * ldaw);
        float inv;
        const int ok = q_row_scale(&sa[m], &inv, a, K);
        if (ok)
            for (int64_t k = 0; k < K; k++) q[k] = (uint8_t)((uint8_t)q_s8(a[k], inv) ^ flip);
        else
            memset(q, flip, (size_t)K);
        for (int64_t k = K; k < 4 * kg; k++) q[k] = flip;
    }
}

/* ---- packing ------------------------------------------------------------------ */

static inline int64_t q_group(int type) { return type == FR_QT_BF16 ? 2 : 4; }
static inline int64_t q_kg(int type, int64_t K) { return (K + q_group(type) - 1) / q_group(type); }
/* words per panel: (kg, 32), and for int8 32 column sums and 32 scales */
static inline int64_t q_panel_words(int type, int64_t K) {
    return (q_kg(type, K) + (type == FR_QT_INT8 ? 2 : 0)) * FR_QPW;
}

size_t fr_qpanel_bytes(int type, int64_t K) { return (size_t)q_panel_words(type, K) * 4; }

int fr_qpacked_bytes(size_t *bytes, int type, int64_t N, int64_t K) {
    if (bytes == NULL) return FR_ENULL;
    if ((type != FR_QT_BF16 && type != FR_QT_INT8) || N < 1 || K < 1) return FR_EINVAL;
    if (type == FR_QT_INT8 && K > FR_S8_MAX_K) return FR_EOVERFLOW;
    if ((uint64_t)N > FR_MAX_ELEMS || (uint64_t)K > FR_MAX_ELEMS) return FR_EOVERFLOW;
    const size_t panels = (size_t)((N + FR_QPW - 1) / FR_QPW);
    size_t words;
    FR_CHECK(fr_mul(&words, panels, (size_t)q_panel_words(type, K)));
    FR_CHECK(fr_mul(bytes, words, 4));
    if (*bytes > FR_MAX_ELEMS) return FR_EOVERFLOW;
    return FR_OK;
}

int fr_bf16_pack(void *Wp, const uint16_t *W, int transposed, int64_t N, int64_t K,
                 int64_t ldw) {
    if (Wp == NULL || W == NULL) return FR_ENULL;
    if (N < 1 || K < 1 || ldw < (transposed ? K : N)) return FR_EINVAL;
    if ((uintptr_t)Wp % 4 != 0) return FR_EINVAL;
    const int64_t pw = q_panel_words(FR_QT_BF16, K);
    uint16_t *dst = Wp;
    for (int64_t p = 0; p * FR_QPW < N; p++) {
        uint16_t *panel = dst + p * pw * 2; /* (kg, 32, 2) */
        memset(panel, 0, (size_t)pw * 4);
        for (int64_t i = 0; i < FR_QPW && p * FR_QPW + i < N; i++) {
            const int64_t n = p * FR_QPW + i;
            for (int64_t k = 0; k < K; k++)
                panel[((k / 2) * FR_QPW + i) * 2 + k % 2] =
                    transposed ? W[n * ldw + k] : W[k * ldw + n];
        }
    }
    return FR_OK;
}

int fr_s8_pack(void *Wp, const int8_t *W, const float *scale, int transposed, int64_t N,
               int64_t K, int64_t ldw) {
    if (Wp == NULL || W == NULL || scale == NULL) return FR_ENULL;
    if (N < 1 || K < 1 || K > FR_S8_MAX_K || ldw < (transposed ? K : N)) return FR_EINVAL;
    if ((uintptr_t)Wp % 4 != 0) return FR_EINVAL;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            if ((transposed ? W[n * ldw + k] : W[k * ldw + n]) == -128) return FR_EINVAL;
    const int64_t kg = q_kg(FR_QT_INT8, K), pw = q_panel_words(FR_QT_INT8, K);
    for (int64_t p = 0; p * FR_QPW < N; p++) {
        uint32_t *panel = (uint32_t *)Wp + p * pw;
        int8_t *q = (int8_t *)panel;      /* (kg, 32, 4) */
        int32_t *colsum = (int32_t *)(panel + kg * FR_QPW);
        float *sw = (float *)(panel + kg * FR_QPW + FR_QPW);
        memset(panel, 0, (size_t)pw * 4);
        for (int64_t i = 0; i < FR_QPW && p * FR_QPW + i < N; i++) {
            const int64_t n = p * FR_QPW + i;
            int32_t sum = 0;
            for (int64_t k = 0; k < K; k++) {
                const int8_t w = transposed ? W[n * ldw + k] : W[k * ldw + n];
                q[((k / 4) * FR_QPW + i) * 4 + k % 4] = w;
                sum += w;
            }
            colsum[i] = sum;
            sw[i] = scale[n];
        }
    }
    return FR_OK;
}

/* ---- the ISA paths ------------------------------------------------------------- */

/* generic C: one 32-bit lane per "vector", 32 per panel row */
static inline float q_bf16_step(float acc, uint32_t a, uint32_t w) {
    acc = acc + q_bits_f32(a << 16) * q_bits_f32(w << 16);
    return acc + q_bits_f32(a & 0xFFFF0000u) * q_bits_f32(w & 0xFFFF0000u);
}
static inline int32_t q_s8_step(int32_t acc, uint32_t a, uint32_t w) {
    for (int t = 0; t < 4; t++) acc += (int32_t)(int8_t)(a >> 8 * t) * (int8_t)(w >> 8 * t);
    return acc;
}

#define QSUF _bf16_generic
#define QATTR
#define QS8 0
#define QU8 0
#define VL 1
#define NV 32
#define VACC float
#define VW uint32_t
#define VA uint32_t
#define QZERO() 0.0f
#define QWLOAD(p) (*(p))
#define QABCAST(p) (*(p))
#define QSTEP(acc, a, w) q_bf16_step((acc), (a), (w))
#define QOUT(acc, cs, sw, sa) (acc)
#define QK_SHAPE (4, 4, 1, 1, 1, 1)
#include "qgemm_body.h"

#define QSUF _s8_generic
#define QATTR
#define QS8 1
#define QU8 0
#define VL 1
#define NV 32
#define VACC int32_t
#define VW uint32_t
#define VA uint32_t
#define QZERO() 0
#define QWLOAD(p) (*(p))
#define QABCAST(p) (*(p))
#define QSTEP(acc, a, w) q_s8_step((acc), (a), (w))
#define QOUT(acc, cs, sw, sa) ((float)(acc) * ((sa) * q_bits_f32(*(sw))))
#define QK_SHAPE (4, 4, 1, 1, 1, 1)
#include "qgemm_body.h"

#ifdef FR_QK_X86
#define Q_AVX2 __attribute__((target("avx2,fma")))
#define Q_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define Q_AVX512BF16 __attribute__((target("avx512f,avx512bf16,avx2,fma")))
#define Q_AVXVNNI __attribute__((target("avxvnni,avx2,fma")))
#define Q_AVX512VNNI __attribute__((target("avx512f,avx512vnni,avx2,fma")))

/* bf16 widened to float32: the low half of a word (k) by a shift, the high
 * half (k + 1) by a mask; the products are exact in float32, so the FMAs round
 * only the sums, in k order: the generic path's numbers. */
typedef struct { __m256 lo, hi; } q_f2x8;
typedef struct { __m512 lo, hi; } q_f2x16;
static inline Q_AVX2 q_f2x8 q_widen8(__m256i x) {
    q_f2x8 r = {_mm256_castsi256_ps(_mm256_slli_epi32(x, 16)),
                _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32((int)0xFFFF0000u)))};
    return r;
}
static inline Q_AVX512 q_f2x16 q_widen16(__m512i x) {
    q_f2x16 r = {_mm512_castsi512_ps(_mm512_slli_epi32(x, 16)),
                 _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xFFFF0000u)))};
    return r;
}

/* int8 on AVX2: |a| (u8) times sign(w, a) (s8) with vpmaddubsw is a w exactly,
 * and a pair sum is at most 2 127 127 < 2^15 (no saturation); vpmaddwd adds
 * the pairs into int32. */
typedef struct { __m256i s, u; } q_a8;
static inline Q_AVX2 q_a8 q_abcast_avx2(const uint32_t *p) {
    const __m256i s = _mm256_set1_epi32((int)*p);
    q_a8 r = {s, _mm256_abs_epi8(s)};
    return r;
}
static inline Q_AVX2 __v8si q_s8_step_avx2(__v8si acc, q_a8 a, __m256i w) {
    const __m256i pairs = _mm256_maddubs_epi16(a.u, _mm256_sign_epi8(w, a.s));
    return (__v8si)_mm256_add_epi32((__m256i)acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
/* The int32 accumulators are typed __v16si / __v8si, the instructions' own
 * element type: with __m512i (long long lanes) GCC 12 kept the 24 accumulators of
 * the VNNI tile on the stack (a cast at every vpdpbusd), at half the speed. */
/* VNNI epilogue: remove the +128 of the activations, scale to float32. */
static inline Q_AVXVNNI __m256 q_out_vnni8(__v8si acc, const uint32_t *cs, const uint32_t *sw,
                                           float sa) {
    const __m256i sum = _mm256_loadu_si256((const __m256i *)cs);
    const __m256i exact = _mm256_sub_epi32((__m256i)acc, _mm256_slli_epi32(sum, 7));
    const __m256 s = _mm256_mul_ps(_mm256_set1_ps(sa), _mm256_loadu_ps((const float *)sw));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(exact), s);
}
static inline Q_AVX2 __m256 q_out_avx2(__v8si acc, const uint32_t *sw, float sa) {
    const __m256 s = _mm256_mul_ps(_mm256_set1_ps(sa), _mm256_loadu_ps((const float *)sw));
    return _mm256_mul_ps(_mm256_cvtepi32_ps((__m256i)acc), s);
}
static inline Q_AVX512VNNI __m512 q_out_vnni16(__v16si acc, const uint32_t *cs,
                                               const uint32_t *sw, float sa) {
    const __m512i sum = _mm512_loadu_si512(cs);
    const __m512i exact = _mm512_sub_epi32((__m512i)acc, _mm512_slli_epi32(sum, 7));
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(sa), _mm512_loadu_ps((const float *)sw));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(exact), s);
}

/* ---- bf16, AVX2 + FMA: 2 rows x 4 vectors --------------------------------------- */
#define QSUF _bf16_avx2
#define QATTR Q_AVX2
#define QS8 0
#define QU8 0
#define VL 8
#define NV 4
#define VACC __m256
#define VW q_f2x8
#define VA q_f2x8
#define QZERO() _mm256_setzero_ps()
#define QWLOAD(p) q_widen8(_mm256_loadu_si256((const __m256i *)(p)))
#define QABCAST(p) q_widen8(_mm256_set1_epi32((int)*(p)))
#define QSTEP(acc, a, w) _mm256_fmadd_ps((a).hi, (w).hi, _mm256_fmadd_ps((a).lo, (w).lo, (acc)))
#define QOUT(acc, cs, sw, sa) (acc)
#define QK_SHAPE (4, 2, 1, 1, 1, 2)
#include "qgemm_body.h"

/* ---- bf16, AVX-512F: 12 rows x 2 vectors ---------------------------------------- */
#define QSUF _bf16_avx512
#define QATTR Q_AVX512
#define QS8 0
#define QU8 0
#define VL 16
#define NV 2
#define VACC __m512
#define VW q_f2x16
#define VA q_f2x16
#define QZERO() _mm512_setzero_ps()
#define QWLOAD(p) q_widen16(_mm512_loadu_si512(p))
#define QABCAST(p) q_widen16(_mm512_set1_epi32((int)*(p)))
#define QSTEP(acc, a, w) _mm512_fmadd_ps((a).hi, (w).hi, _mm512_fmadd_ps((a).lo, (w).lo, (acc)))
#define QOUT(acc, cs, sw, sa) (acc)
#define QK_SHAPE (12, 12, 1, 2, 4, 4)
#include "qgemm_body.h"

/* ---- bf16, AVX2 + FMA, from FR_QWIDE_MIN_ROWS rows on: widened once, 5 rows x 2 vectors
 * (qgemm_wide_body.h). The tile above widens each weight word for 2 rows and
 * each activation word at every use, as many shifts and masks as FMAs; this one
 * widens a block of a panel and a tile's activations once into buffers on the
 * stack and runs float32 FMAs on them. Below the threshold (a few rows) the
 * buffers cost more than they save. The sums are the same either way. The
 * AVX-512F path keeps its 12-row tile: on a CPU that runs 512-bit FMAs at
 * half rate (two 256-bit halves) its widening is not what bounds it, and the
 * wide tile measured slower there. */
#define WSUF _bf16_avx2
#define WATTR Q_AVX2
#define WVL 8
#define WV __m256
#define WI __m256i
#define WMR 5
#define WKCW 64
#define WZERO() _mm256_setzero_ps()
#define WLOAD(p) _mm256_loadu_ps(p)
#define WSTORE(p, v) _mm256_storeu_ps((p), (v))
#define WADD(a, b) _mm256_add_ps((a), (b))
#define WFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define WBCAST(p) _mm256_broadcast_ss(p)
#define WSHL16(i) _mm256_castsi256_ps(_mm256_slli_epi32((i), 16))
#define WHI16(i) _mm256_castsi256_ps(_mm256_and_si256((i), _mm256_set1_epi32((int)0xFFFF0000u)))
#define WILOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#include "qgemm_wide_body.h"

static Q_AVX2 void gemm_bf16_avx2_any(float *C, int64_t ldc, const uint32_t *A, int64_t lda,
                                      const uint32_t *W, int64_t ldp, const float *sa,
                                      int64_t M, int64_t N, int64_t kg, int beta1) {
    if (M >= FR_QWIDE_MIN_ROWS)
        gemm_wide_bf16_avx2(C, ldc, A, lda, W, ldp, M, N, kg, beta1);
    else
        gemm_bf16_avx2(C, ldc, A, lda, W, ldp, sa, M, N, kg, beta1);
}

/* ---- bf16, AVX512_BF16 (vdpbf16ps): 12 rows x 2 vectors ------------------------- */
#define QSUF _bf16_avx512bf16
#define QATTR Q_AVX512BF16
#define QS8 0
#define QU8 0
#define VL 16
#define NV 2
#define VACC __m512
#define VW __m512i
#define VA __m512i
#define QZERO() _mm512_setzero_ps()
#define QWLOAD(p) _mm512_loadu_si512(p)
#define QABCAST(p) _mm512_set1_epi32((int)*(p))
#define QSTEP(acc, a, w) _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)(w))
#define QOUT(acc, cs, sw, sa) (acc)
#define QK_SHAPE (12, 12, 1, 2, 4, 4)
#include "qgemm_body.h"

/* ---- int8, AVX2 (vpmaddubsw on |a|, sign(w, a)): 2 rows x 4 vectors --------------- */
#define QSUF _s8_avx2
#define QATTR Q_AVX2
#define QS8 1
#define QU8 0
#define VL 8
#define NV 4
#define VACC __v8si
#define VW __m256i
#define VA q_a8
#define QZERO() ((__v8si)_mm256_setzero_si256())
#define QWLOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define QABCAST(p) q_abcast_avx2(p)
#define QSTEP(acc, a, w) q_s8_step_avx2((acc), (a), (w))
#define QOUT(acc, cs, sw, sa) q_out_avx2((acc), (sw), (sa))
#define QK_SHAPE (4, 2, 1, 1, 1, 2)
#include "qgemm_body.h"

/* ---- int8, AVX-VNNI (vpdpbusd, 8 lanes): 3 rows x 4 vectors ------------------------- */
#define QSUF _s8_avxvnni
#define QATTR Q_AVXVNNI
#define QS8 1
#define QU8 1
#define VL 8
#define NV 4
#define VACC __v8si
#define VW __m256i
#define VA __m256i
#define QZERO() ((__v8si)_mm256_setzero_si256())
#define QWLOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define QABCAST(p) _mm256_set1_epi32((int)*(p))
#define QSTEP(acc, a, w) ((__v8si)_mm256_dpbusd_avx_epi32((__m256i)(acc), (a), (w)))
#define QOUT(acc, cs, sw, sa) q_out_vnni8((acc), (cs), (sw), (sa))
#define QK_SHAPE (4, 3, 1, 1, 1, 2)
#include "qgemm_body.h"

/* ---- int8, AVX512_VNNI (vpdpbusd, 16 lanes): 12 rows x 2 vectors ------------------- */
#define QSUF _s8_avx512vnni
#define QATTR Q_AVX512VNNI
#define QS8 1
#define QU8 1
#define VL 16
#define NV 2
#define VACC __v16si
#define VW __m512i
#define VA __m512i
#define QZERO() ((__v16si)_mm512_setzero_si512())
#define QWLOAD(p) _mm512_loadu_si512(p)
#define QABCAST(p) _mm512_set1_epi32((int)*(p))
#define QSTEP(acc, a, w) ((__v16si)_mm512_dpbusd_epi32((__m512i)(acc), (a), (w)))
#define QOUT(acc, cs, sw, sa) q_out_vnni16((acc), (cs), (sw), (sa))
#define QK_SHAPE (12, 12, 1, 2, 4, 4)
#include "qgemm_body.h"
#endif /* FR_QK_X86 */

/* ---- dispatch ------------------------------------------------------------------ */

typedef void (*q_gemm_fn)(float *C, int64_t ldc, const uint32_t *A, int64_t lda,
                          const uint32_t *W, int64_t ldp, const float *sa, int64_t M, int64_t N,
                          int64_t kg, int beta1);
typedef void (*q_prep_fn)(uint32_t *Aw, int64_t ldaw, float *sa, const float *A, int64_t lda,
                          int64_t M, int64_t K);
typedef struct {
    const char *name, *needs;
    q_gemm_fn gemm;
    q_prep_fn prep;
} q_path;

#ifdef FR_QK_X86
#define Q_X86(x) x
#else
#define Q_X86(x) NULL
#endif
/* [type - 1][isa] */
static const q_path q_paths[2][FR_QISA_COUNT] = {
    {{"generic", "", gemm_bf16_generic, prep_bf16_generic},
     {"avx2", "avx2+fma", Q_X86(gemm_bf16_avx2_any), Q_X86(prep_bf16_avx2)},
     {"avx512", "avx512f", Q_X86(gemm_bf16_avx512), Q_X86(prep_bf16_avx512)},
     {"avx512bf16", "avx512f+avx512bf16", Q_X86(gemm_bf16_avx512bf16),
      Q_X86(prep_bf16_avx512bf16)}},
    {{"generic", "", gemm_s8_generic, prep_s8_generic},
     {"avx2", "avx2+fma", Q_X86(gemm_s8_avx2), Q_X86(prep_s8_avx2)},
     {"avxvnni", "avx2+avxvnni", Q_X86(gemm_s8_avxvnni), Q_X86(prep_s8_avxvnni)},
     {"avx512vnni", "avx512f+avx512vnni", Q_X86(gemm_s8_avx512vnni),
      Q_X86(prep_s8_avx512vnni)}},
};

static int q_type_ok(int type) { return type == FR_QT_BF16 || type == FR_QT_INT8; }

const char *fr_qisa_name(int type, int isa) {
    if (!q_type_ok(type) || isa < 0 || isa >= FR_QISA_COUNT) return NULL;
    return q_paths[type - 1][isa].name;
}
const char *fr_qisa_needs(int type, int isa) {
    if (!q_type_ok(type) || isa < 0 || isa >= FR_QISA_COUNT) return NULL;
    return q_paths[type - 1][isa].needs;
}

int fr_qisa_supported(int type, int isa) {
    if (!q_type_ok(type) || isa < 0 || isa >= FR_QISA_COUNT) return 0;
    if (isa == FR_QISA_GENERIC) return 1;
#ifdef FR_QK_X86
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    if (isa == FR_QISA_AVX2) return avx2;
    if (type == FR_QT_BF16)
        return isa == FR_QISA_MID ? avx512 : avx512 && __builtin_cpu_supports("avx512bf16");
    return isa == FR_QISA_MID ? avx2 && __builtin_cpu_supports("avxvnni")
                              : avx512 && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

int fr_qbest_isa(int type) {
    for (int isa = FR_QISA_COUNT - 1; isa > 0; isa--)
        if (fr_qisa_supported(type, isa)) return isa;
    return FR_QISA_GENERIC;
}

static int g_qisa[2] = {-1, -1}; /* chosen on first use; fr_qset_isa overrides */

int fr_qget_isa(int type) {
    if (!q_type_ok(type)) return FR_EINVAL;
    int isa = __atomic_load_n(&g_qisa[type - 1], __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = fr_qbest_isa(type);
        __atomic_store_n(&g_qisa[type - 1], isa, __ATOMIC_RELAXED);
    }
    return isa;
}

int fr_qset_isa(int type, int isa) {
    if (!fr_qisa_supported(type, isa)) return FR_EINVAL;
    __atomic_store_n(&g_qisa[type - 1], isa, __ATOMIC_RELAXED);
    return FR_OK;
}

/* ---- the GEMM -------------------------------------------------------------------- */

/* Workspace: the row scales (M floats, int8), then the activation words (M, ldaw),
 * each region on a cache line. Rows of ldaw words: kg rounded up to 16 (64 bytes). */
static int64_t q_ldaw(int type, int64_t K) { return (q_kg(type, K) + 15) / 16 * 16; }

int fr_qgemm_workspace_bytes(size_t *bytes, int type, int64_t M, int64_t K) {
    if (bytes == NULL) return FR_ENULL;
    if (!q_type_ok(type) || M < 0 || K < 1) return FR_EINVAL;
    if (type == FR_QT_INT8 && K > FR_S8_MAX_K) return FR_EOVERFLOW;
    if ((uint64_t)M > FR_MAX_ELEMS || (uint64_t)K > FR_MAX_ELEMS) return FR_EOVERFLOW;
    size_t words, total;
    FR_CHECK(fr_mul(&words, (size_t)M, (size_t)q_ldaw(type, K)));
    FR_CHECK(fr_add(&words, words, (size_t)M)); /* the scales */
    FR_CHECK(fr_mul(&total, words, 4));
    FR_CHECK(fr_add(&total, total, 128)); /* two regions rounded up to cache lines */
    if (total > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *bytes = total;
    return FR_OK;
}

int fr_qcall_floats(size_t *qx, size_t *qr, int type, int64_t rows_x, int64_t I, int64_t B,
                    int64_t K_r) {
    size_t bx, br;
    FR_CHECK(fr_qgemm_workspace_bytes(&bx, type, rows_x, I));
    FR_CHECK(fr_qgemm_workspace_bytes(&br, type, B, K_r));
    *qx = (bx + sizeof(float) - 1) / sizeof(float);
    *qr = (br + sizeof(float) - 1) / sizeof(float);
    return FR_OK;
}

int fr_qpack_gates(void *dst, int type, const void *W, const float *scale, int64_t H, int64_t K,
                   int gates) {
    size_t per;
    FR_CHECK(fr_qpacked_bytes(&per, type, H, K));
    for (int q = 0; q < gates; q++) {
        const size_t rows = (size_t)q * (size_t)H;
        char *d = (char *)dst + q * per;
        if (type == FR_QT_BF16)
            FR_CHECK(fr_bf16_pack(d, (const uint16_t *)W + rows * (size_t)K, 1, H, K, K));
        else
            FR_CHECK(fr_s8_pack(d, (const int8_t *)W + rows * (size_t)K, scale + rows, 1, H, K, K));
    }
    return FR_OK;
}

int fr_qpack_cell(void *dst, int type, const void *W_x, const float *W_x_scale, const void *W_h,
                  const float *W_h_scale, int64_t H, int64_t I, int64_t K_h, int gates,
                  size_t wx_bytes) {
    if (!dst || !W_x || !W_h) return FR_ENULL;
    if (type == FR_QT_INT8 && (!W_x_scale || !W_h_scale)) return FR_ENULL;
    if ((uintptr_t)dst % 4 != 0) return FR_EINVAL;
    FR_CHECK(fr_qpack_gates(dst, type, W_x, W_x_scale, H, I, gates));
    return fr_qpack_gates((char *)dst + wx_bytes, type, W_h, W_h_scale, H, K_h, gates);
}

/* The workspace's regions for M rows: the row scales (M), the words (M, ldaw). */
static void q_work_regions(float **sa, uint32_t **Aw, void *work, int64_t M) {
    *sa = fr_align64(work);
    *Aw = fr_align64(*sa + M);
}

void fr_qprep(void *work, const float *A, int64_t lda, int type, int isa, int64_t M, int64_t K,
              int64_t m0, int64_t m1) {
    if (m1 <= m0) return;
    float *sa;
    uint32_t *Aw;
    q_work_regions(&sa, &Aw, work, M);
    const int64_t ldaw = q_ldaw(type, K);
    q_paths[type - 1][isa].prep(Aw + m0 * ldaw, ldaw, sa + m0, A + m0 * lda, lda, m1 - m0, K);
}

void fr_qgemm_prepped(float *C, int64_t ldc, const void *work, const void *Wp, int type,
                      int isa, int64_t M, int64_t N, int64_t K, int beta1) {
    if (M <= 0 || N <= 0) return;
    float *sa;
    uint32_t *Aw;
    q_work_regions(&sa, &Aw, (void *)work, M);
    q_paths[type - 1][isa].gemm(C, ldc, Aw, q_ldaw(type, K), Wp, q_panel_words(type, K), sa, M,
                                N, q_kg(type, K), beta1);
}

int fr_qgemm(float *C, int64_t ldc, void *work, const float *A, int64_t lda, const void *Wp,
             int type, int64_t M, int64_t N, int64_t K, int beta1) {
    size_t need;
    FR_CHECK(fr_qgemm_workspace_bytes(&need, type, M, K));
    if (N < 1) return FR_EINVAL;
    if (M == 0) return FR_OK;
    if (C == NULL || work == NULL || A == NULL || Wp == NULL) return FR_ENULL;
    if (ldc < N || lda < K || (uintptr_t)Wp % 4 != 0) return FR_EINVAL;
    const int isa = fr_qget_isa(type);
    fr_qprep(work, A, lda, type, isa, M, K, 0, M);
    fr_qgemm_prepped(C, ldc, work, Wp, type, isa, M, N, K, beta1);
    return FR_OK;
}
