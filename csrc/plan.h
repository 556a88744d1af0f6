/* The kernel's one tuning owner: the process-wide settings (fr_tuning) and the
 * plan of a call made from them (fr_plan_cell): whether the time loop's GEMMs
 * run on the packed micro-kernel or the GEMM provider, on how many threads, and
 * where the gradient GEMMs run. Internal: fusedrnn._tuning (through the
 * bindings) and the C tests are its users; the public API has none of it. */
#ifndef FUSEDRNN_PLAN_H
#define FUSEDRNN_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "fusedrnn.h"

typedef struct {
    /* threads of a call (fusedrnn.set_num_threads); a call may ask for fewer */
    int64_t threads;
    /* batches of at most this many rows run on the micro-kernel (0: never) ... */
    int64_t packed_max_rows;
    /* ... and sequences of at least this many steps: a call packs the weights
     * once, which a few steps do not repay (T = 1, B = 1, H = 128: 42 us on the
     * BLAS, 63 us packed; even at T = 10); with prepacked weights any T, but
     * on one thread below it (waking a team for a few steps does not repay) */
    int64_t team_min_steps;
    /* a thread only for at least this many flops of recurrent GEMM per step
     * (below that a barrier per step costs more than it saves; tests use 0), or
     * for at least this many bytes of recurrent weights: beyond L1 each step
     * streams them from L2, and every core adds its own L2 bandwidth (B = 1,
     * H = 128, f32: 256 KB of W_v, 65k flops a thread; inference 0.28 -> 0.20 ms
     * on 2 threads; at 32 KB a thread, H = 64, two threads were slower) */
    int64_t min_step_flops;
    int64_t min_step_bytes;
    /* the backward's gradient GEMMs over all T B rows run on the micro-kernel,
     * split over the team, up to this many rows T B, beyond on the provider
     * after the team. With more than one thread a BLAS call leaves its pool
     * spinning (OpenBLAS: ~0.1 s) on the cores the team's next steps need; on
     * one thread the micro-kernel was level with SciPy's OpenBLAS on an AVX-512
     * Xeon and 17-26% faster on an AMD EPYC (Zen 5) (bench/README.md) */
    int64_t grad_rows;
} fr_tuning;

/* A consistent copy of the settings. */
void fr_tuning_get(fr_tuning *t);
/* Replace the settings: FR_EINVAL (nothing changed) for threads < 1 or a
 * negative value. Calls that have made their plan keep it. */
int fr_tuning_set(const fr_tuning *t);

/* What the plan needs to know of a call. */
typedef struct {
    int64_t T, B;
    int64_t units;       /* hidden units H, split over the threads in whole panels */
    int64_t rec_cols;    /* columns of the per-step recurrent GEMM (4H for the LSTM) */
    int64_t rec_depth;   /* its depth K (R; H, or 2H with state feedback) */
    size_t elem;         /* sizeof(real) */
    int ukernel_ok;      /* the loop can run on the micro-kernel with these options */
    int prepacked;       /* the caller passed packed weights */
} fr_plan_input;

typedef struct {
    int ukernel;       /* per-step GEMMs on the packed micro-kernel, else the provider */
    int threads;       /* the team's size (1 on the provider) */
    int grads_in_team; /* the gradient GEMMs on the micro-kernel inside the team */
} fr_plan;

fr_plan fr_plan_cell(const fr_plan_input *in, const fr_call *call);
/* Whether a call of T steps and B rows without packed weights runs on the
 * micro-kernel (and packs its weights) when its options allow that path: the
 * rule fr_plan_cell applies, for callers that keep packed weights between calls. */
int fr_plan_packs(int64_t T, int64_t B);

#endif
