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

#endif
