/* Branch-free exp for the element-wise passes, written so that gcc/clang
 * auto-vectorise loops that call it (no libm call, no float->int conversion):
 * range reduction x = n ln2 + r with n rounded by the 1.5*2^k magic-number add,
 * a polynomial for e^r, and 2^n built in the exponent bits with integer adds.
 * Accuracy: float ~2 ulp, double ~2 ulp over the clamped range; NaN propagates
 * (the clamps use comparisons that are false for NaN). No -ffast-math needed:
 * it relies on round-to-nearest, the IEEE default. */
#ifndef FUSEDRNN_VMATH_H
#define FUSEDRNN_VMATH_H

#include <stdint.h>
#include <string.h>

static inline uint32_t fr_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float fr_f32_from(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint64_t fr_f64_bits(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }
static inline double fr_f64_from(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }

static inline float fr_exp_f32(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;   /* e^x < FLT_MAX */
    x = x < -87.3365447505531f ? -87.3365447505531f : x; /* e^x >= FLT_MIN */
    const float magic = 12582912.0f;                     /* 1.5 * 2^23 */
    float kd = x * 1.44269504088896341f + magic;         /* round(x / ln2) + magic */
    float n = kd - magic;
    float r = x - n * 0.693359375f;                      /* Cody-Waite ln2 = hi + lo */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;                          /* Cephes expf minimax */
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t scale = (fr_f32_bits(kd) - fr_f32_bits(magic) + 127u) << 23; /* 2^n */
    return p * fr_f32_from(scale);
}

static inline double fr_exp_f64(double x) {
    x = x > 709.0 ? 709.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double magic = 6755399441055744.0;             /* 1.5 * 2^52 */
    double kd = x * 1.4426950408889634074 + magic;
    double n = kd - magic;
    double r = x - n * 6.93147180369123816490e-01;       /* ln2 hi */
    r = r - n * 1.90821492927058770002e-10;              /* ln2 lo */
    /* Taylor series to r^13: |r| <= 0.347, truncation < 2e-17 */
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    uint64_t scale = (fr_f64_bits(kd) - fr_f64_bits(magic) + 1023u) << 52;
    return p * fr_f64_from(scale);
}

#endif
