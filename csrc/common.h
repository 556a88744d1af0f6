/* Internal helpers shared by the kernel files (not part of the public API). */
#ifndef FUSEDRNN_COMMON_H
#define FUSEDRNN_COMMON_H

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fusedrnn.h"
#include "vmath.h"

/* The element-wise passes are compiled for AVX-512, AVX2 and baseline x86-64
 * and picked at load time (ifunc), so a default build runs on any x86-64. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FR_NO_TARGET_CLONES)
#define FR_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FR_TARGET_CLONES
#endif

#define FR_CAT_(a, b) a##b
#define FR_CAT(a, b) FR_CAT_(a, b)

/* out = a * b, or FR_EOVERFLOW. Every size product in the kernel goes through
 * this (or fr_mul3), so no byte count can wrap. */
static inline int fr_mul(size_t *out, size_t a, size_t b) {
    if (__builtin_mul_overflow(a, b, out)) return FR_EOVERFLOW;
    return FR_OK;
}
static inline int fr_mul3(size_t *out, size_t a, size_t b, size_t c) {
    size_t ab;
    if (fr_mul(&ab, a, b) != FR_OK) return FR_EOVERFLOW;
    return fr_mul(out, ab, c);
}
static inline int fr_add(size_t *out, size_t a, size_t b) {
    if (__builtin_add_overflow(a, b, out)) return FR_EOVERFLOW;
    return FR_OK;
}
/* Element counts must also be addressable in bytes (x 8 for float64). */
#define FR_MAX_ELEMS ((size_t)PTRDIFF_MAX / 8)

/* GEMM dimensions reach BLAS as 32-bit int. */
static inline int fr_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

#define FR_CHECK(expr)                  \
    do {                                \
        int fr_rc_ = (expr);            \
        if (fr_rc_ != FR_OK) return fr_rc_; \
    } while (0)

/* Row b is active at step n: not past its length (lengths NULL: all T steps). */
static inline int fr_active(const int64_t *lengths, int64_t b, int64_t n) {
    return lengths == NULL || n < lengths[b];
}

/* Steps per chunk of the input GEMM in inference mode: the x-side product is
 * hoisted over a chunk of steps so the workspace stays O(B*H) while the GEMM
 * still has ~256 rows. */
static inline int64_t fr_inference_chunk(int64_t T, int64_t B) {
    int64_t tc = (256 + B - 1) / B;
    if (tc < 4) tc = 4;
    return tc < T ? tc : T;
}

/* ---- packed-weight GEMM (ukernel.c) -------------------------------------------
 * Panels of FR_PW columns (128 bytes), contiguous along K. */
#define FR_PW(real) ((int64_t)(128 / sizeof(real)))
enum { FR_ISA_GENERIC = 0, FR_ISA_AVX2 = 1, FR_ISA_AVX512 = 2 };
static inline int64_t fr_packed_elems(int64_t N, int64_t K, int64_t pw) {
    return (N + pw - 1) / pw * pw * K; /* callers bound N, K first */
}
/* Packed weights start on a cache line: a 64-byte load across two lines costs
 * two (a B = 1 step GEMM: 1.06 instead of 0.66 us). Workspace regions that hold
 * them reserve FR_ALIGN_SLACK elements (>= 64 bytes) for the round-up. */
#define FR_ALIGN_SLACK ((size_t)16)
static inline void *fr_align64(void *p) {
    return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}
/* Wp: the (K, N) operand W (transposed: W is (N, K)) with row stride ldw, packed. */
void fr_pack_f32(float *Wp, const float *W, int transposed, int64_t N, int64_t K, int64_t ldw);
void fr_pack_f64(double *Wp, const double *W, int transposed, int64_t N, int64_t K, int64_t ldw);
/* C (M, N) = op(A) (M, K) . W (K, N) (+ C when beta1). op(A) = A with row stride
 * lda, or A^T of A (K, M) (ta = 1). W from fr_pack_* (ldw = 0), or row-major
 * with row stride ldw. */
void fr_ugemm_f32(float *C, int64_t ldc, const float *A, int64_t lda, int ta, const float *W,
                  int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1);
void fr_ugemm_f64(double *C, int64_t ldc, const double *A, int64_t lda, int ta,
                  const double *W, int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1);
int fr_best_isa(void);
int fr_get_isa(void);
int fr_set_isa(int isa); /* FR_ISA_*, at most fr_best_isa(); for tests and benchmarks */

/* ---- a team of threads for one call (team.c) ---------------------------------
 * fr_team_run calls fn(ctx, id, n, team) on n members (id 0 is the caller) and
 * returns n, which may be smaller than asked when threads cannot be created (or
 * 1 where the platform has no threads here). fr_team_barrier waits for all n
 * members; with team == NULL (n == 1) it returns at once. */
#define FR_MAX_THREADS 64
typedef struct fr_team fr_team;
typedef void (*fr_team_fn)(void *ctx, int id, int n, fr_team *team);
int fr_team_run(int n, fr_team_fn fn, void *ctx);
void fr_team_barrier(fr_team *team);

/* [lo, hi) of member id's share of n_units, split in whole blocks of `block`. */
static inline void fr_share(int64_t *lo, int64_t *hi, int64_t n_units, int64_t block, int id,
                            int n) {
    const int64_t blocks = (n_units + block - 1) / block;
    const int64_t b0 = blocks * id / n, b1 = blocks * (id + 1) / n;
    *lo = b0 * block < n_units ? b0 * block : n_units;
    *hi = b1 * block < n_units ? b1 * block : n_units;
}

#endif
