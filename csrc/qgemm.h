/* Reduced-precision GEMM for inference (qgemm.c): the per-step and input
 * products of a forward pass with weights packed once in bfloat16 or int8.
 *
 *   C (M, N) (+)= A (M, K) . W (K, N)      C, A float32; W reduced
 *
 * bf16 (docs/equations.md, "Reduced precision"): W and A rounded to bfloat16
 * (round to nearest even, values below 2^-126 flushed to zero), the products
 * summed in float32. int8: W quantised once per output column n with a
 * symmetric scale sw[n], A per row m with sa[m] at every call (fr_s8_quantize),
 * the integer products summed exactly in int32, then
 *   C[m][n] (+)= (float)acc[m][n] * (sa[m] * sw[n]).
 *
 * Packed weights: panels of FR_QPW = 32 columns, contiguous along K, for every
 * ISA path alike (fr_qset_isa switches paths without repacking). Along K the
 * values go in groups of 4 bytes per column: bf16 pairs (k, k+1) as
 * vdpbf16ps reads them, int8 quads (k .. k+3) as vpdpbusd does; a panel is
 * (ceil(K / G), 32) such words (G = 2 or 4, zero past N and K), an int8 panel
 * is followed by its 32 column sums of W (int32) and 32 scales sw (float),
 * zero past N. Panel p starts at byte p * fr_qpanel_bytes(type, K), so the
 * columns [32 p, N) are a GEMM of their own from there. */
#ifndef FUSEDRNN_QGEMM_H
#define FUSEDRNN_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FR_QPW 32 /* columns per panel */
enum { FR_QT_BF16 = 1, FR_QT_INT8 = 2 };
/* int8: K at most this, so that no int32 sum can overflow (255 * 127 * K < 2^31). */
#define FR_S8_MAX_K ((int64_t)65536)

/* ISA paths, per type (FR_QISA_* levels; each needs the features named by
 * fr_qisa_name). bf16: generic C; AVX2+FMA (bf16 widened to float32 by
 * shifts); AVX-512F (the same, 16 lanes); AVX512_BF16 (vdpbf16ps).
 * int8: generic C; AVX2 (vpmaddubsw/vpmaddwd on |a| and sign(w, a): an int16
 * pair sum is at most 2 * 127 * 127, no saturation); AVX-VNNI (vpdpbusd, 8
 * lanes); AVX512_VNNI (vpdpbusd, 16 lanes). The VNNI paths feed u8 = a + 128
 * and subtract 128 * (column sum of W). */
enum { FR_QISA_GENERIC = 0, FR_QISA_AVX2 = 1, FR_QISA_MID = 2, FR_QISA_TOP = 3, FR_QISA_COUNT = 4 };
/* "generic", "avx2", "avx512" / "avxvnni", "avx512bf16" / "avx512vnni";
 * NULL for an unknown type or level. */
const char *fr_qisa_name(int type, int isa);
/* The CPU features a path needs, e.g. "avx512f+avx512bf16". */
const char *fr_qisa_needs(int type, int isa);
/* 1 when this CPU (and OS) can run the path. */
int fr_qisa_supported(int type, int isa);
/* The fastest supported path (chosen on first use). */
int fr_qbest_isa(int type);
int fr_qget_isa(int type);
/* Force a path (tests and benchmarks): FR_EINVAL when unknown or unsupported. */
int fr_qset_isa(int type, int isa);
/* The bf16 AVX2 path runs its wide tile (weights widened once per block) for
 * M >= FR_QWIDE_MIN_ROWS rows, its 2-row tile below (the same sums either way). */
#define FR_QWIDE_MIN_ROWS 16

/* ---- bfloat16 -------------------------------------------------------------------- */
/* dst[i] = bf16 bits of src[i]: round to nearest even; |x| < 2^-126 -> signed
 * zero; NaN stays NaN (quiet); overflow rounds to inf as IEEE does. */
void fr_bf16_round(uint16_t *dst, const float *src, int64_t n);
/* Wp (panels): op(W) (K, N) from bf16 bits W, which is (N, K) when transposed
 * (the forward's weights, read as W^T), else (K, N); row stride ldw. */
int fr_bf16_pack(void *Wp, const uint16_t *W, int transposed, int64_t N, int64_t K,
                 int64_t ldw);

/* ---- int8 ------------------------------------------------------------------------ */
/* Per-row symmetric quantisation of X (rows, K), row stride ldx:
 *   amax = max_k |X[r][k]|;  scale[r] = amax / 127;  inv = 127 / amax
 *   Q[r][k] = rint(clamp(X[r][k] * inv, -127, 127))    (float32 ops, RNE)
 * A row with amax < 2^-120 gets scale 0 and Q = 0; a row with a NaN or inf
 * gets scale NaN and Q = 0 (its products come out NaN). Q (rows, K) dense. */
void fr_s8_quantize(int8_t *Q, float *scale, const float *X, int64_t ldx, int64_t rows,
                    int64_t K);
/* Wp (panels with column sums and scales): op(W) (K, N) from int8 W ((N, K)
 * when transposed, else (K, N), row stride ldw) with scale[n] (N) of column n.
 * FR_EINVAL if a weight is -128 (the symmetric range is [-127, 127]).
 * Packed buffers (Wp) are 4-byte aligned (64 is best); FR_EINVAL otherwise. */
int fr_s8_pack(void *Wp, const int8_t *W, const float *scale, int transposed, int64_t N,
               int64_t K, int64_t ldw);

/* ---- sizes (overflow-checked; FR_EINVAL for N, K < 1 or M < 0) ---------------------- */
int fr_qpacked_bytes(size_t *bytes, int type, int64_t N, int64_t K);
/* A cell's gated weight (gates H, K) (bf16 bits, or int8 with its row scales):
 * the rows [q H, q H + H) of each gate q packed as op(W) = W^T panels, gate
 * after gate, fr_qpacked_bytes(type, H, K) bytes each. */
int fr_qpack_gates(void *dst, int type, const void *W, const float *scale, int64_t H, int64_t K,
                   int gates);
/* A cell's input and recurrent weights one after the other: W_x (gates H, I) at
 * dst, W_h (gates H, K_h) at dst + wx_bytes (fr_qpack_gates each; the scales for
 * int8 only). FR_ENULL for a missing weight or scale, FR_EINVAL for an unaligned dst. */
int fr_qpack_cell(void *dst, int type, const void *W_x, const float *W_x_scale, const void *W_h,
                  const float *W_h_scale, int64_t H, int64_t I, int64_t K_h, int gates,
                  size_t wx_bytes);
size_t fr_qpanel_bytes(int type, int64_t K); /* K already checked by fr_qpacked_bytes */
/* Scratch of fr_qgemm for M rows of A (the rounded or quantised activations). */
int fr_qgemm_workspace_bytes(size_t *bytes, int type, int64_t M, int64_t K);
/* A cell's two shared activation buffers of its reduced GEMMs (fr_qcall.qx, .qr
 * in common.h), in floats: an inference chunk of input rows (rows_x rows of K = I)
 * and one step's recurrent rows (B rows of K = K_r, the widest recurrent input). */
int fr_qcall_floats(size_t *qx, size_t *qr, int type, int64_t rows_x, int64_t I, int64_t B,
                    int64_t K_r);

/* C (M, N) (+ C when beta1) = A . W over packed Wp of the type; A (M, K) with
 * row stride lda, C row stride ldc; work of fr_qgemm_workspace_bytes. */
int fr_qgemm(float *C, int64_t ldc, void *work, const float *A, int64_t lda, const void *Wp,
             int type, int64_t M, int64_t N, int64_t K, int beta1);

/* fr_qgemm in two parts, for a team sharing one workspace (arguments checked by
 * the caller; isa = fr_qget_isa(type) taken once for both): fr_qprep rounds or
 * quantises rows [m0, m1) of A (M, K) into work (each member its rows), then,
 * once all rows are there, fr_qgemm_prepped computes C (M, N) (+)= A . W from
 * Wp (a member its panels: Wp + p fr_qpanel_bytes, C + 32 p). */
void fr_qprep(void *work, const float *A, int64_t lda, int type, int isa, int64_t M, int64_t K,
              int64_t m0, int64_t m1);
void fr_qgemm_prepped(float *C, int64_t ldc, const void *work, const void *Wp, int type,
                      int isa, int64_t M, int64_t N, int64_t K, int beta1);

#ifdef __cplusplus
}
#endif
#endif
