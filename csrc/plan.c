/* The tuning settings and the plan of a call (plan.h). */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "common.h"

#include <time.h>

/* Each field is read and written atomically; a plan reads them once. */
static fr_tuning g_tuning = {
    .threads = 1,
    .packed_max_rows = (int64_t)1 << 30, /* the micro-kernel is faster than OpenBLAS on
                                            every shape the benchmark has */
    .team_min_steps = 8,
    .min_step_flops = 200000,
    .min_step_bytes = 64 * 1024,
    .grad_rows = INT64_MAX,
};

#define FR_TUNING_EACH(X) \
    X(threads) X(packed_max_rows) X(team_min_steps) X(min_step_flops) X(min_step_bytes) X(grad_rows)

void fr_tuning_get(fr_tuning *t) {
#define FR_GET(f) t->f = __atomic_load_n(&g_tuning.f, __ATOMIC_RELAXED);
    FR_TUNING_EACH(FR_GET)
#undef FR_GET
}

int fr_tuning_set(const fr_tuning *t) {
    if (t == NULL) return FR_ENULL;
#define FR_NEG(f) || t->f < 0
    if (t->threads < 1 FR_TUNING_EACH(FR_NEG)) return FR_EINVAL;
#undef FR_NEG
#define FR_SET(f) __atomic_store_n(&g_tuning.f, t->f, __ATOMIC_RELAXED);
    FR_TUNING_EACH(FR_SET)
#undef FR_SET
    return FR_OK;
}

static int plan_packs(const fr_tuning *t, int64_t T, int64_t B) {
    return B <= t->packed_max_rows && T >= t->team_min_steps;
}

int fr_plan_packs(int64_t T, int64_t B) {
    fr_tuning t;
    fr_tuning_get(&t);
    return plan_packs(&t, T, B);
}

fr_plan fr_plan_cell(const fr_plan_input *in, const fr_call *call) {
    fr_tuning t;
    fr_tuning_get(&t);
    fr_plan p = {.ukernel = 0, .threads = 1, .grads_in_team = 0};
    p.ukernel = in->ukernel_ok && (in->prepacked || plan_packs(&t, in->T, in->B));
    if (!p.ukernel) return p;
    int64_t n = call && call->max_threads > 0 ? call->max_threads : t.threads;
    if (n > FR_MAX_THREADS) n = FR_MAX_THREADS;
    const int64_t pw = (int64_t)(128 / in->elem), panels = (in->units + pw - 1) / pw;
    if (n > panels) n = panels;
    /* a team for a few steps does not repay waking it (prepacked weights reach here at
     * any T: one int8 step at B = 1, H = 128 took 490 us of CPU on 2 threads, 67 us on 1) */
    if (in->T < t.team_min_steps) n = 1;
    const double flops = 2.0 * (double)in->B * (double)in->rec_cols * (double)in->rec_depth;
    const double bytes = (double)in->rec_cols * (double)in->rec_depth * (double)in->elem;
    while (n > 1 && flops / (double)n < (double)t.min_step_flops &&
           bytes / (double)n < (double)t.min_step_bytes)
        n--;
    p.threads = (int)n;
    p.grads_in_team = in->T * in->B <= t.grad_rows; /* T B fits int (the config checks) */
    return p;
}

int64_t fr_clock_ns(void) {
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* vDSO, a few ns; 1-4 ms resolution */
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
