/* A team of threads for one kernel call: the caller is member 0, the others
 * are created for the call and joined at its end, so the kernel keeps no
 * global pool and concurrent calls never share threads. The members meet at
 * a barrier once or twice per time step: a sense-reversing counter that spins
 * briefly (a step is tens of microseconds) and then yields the core. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "common.h"

#if !defined(_WIN32) && !defined(__STDC_NO_ATOMICS__)
#define FR_HAVE_TEAM 1
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FR_PAUSE() _mm_pause()
#else
#define FR_PAUSE() ((void)0)
#endif
#endif

#ifdef FR_HAVE_TEAM
struct fr_team {
    int n;                     /* members */
    _Alignas(64) atomic_int count;
    _Alignas(64) atomic_int sense;
    _Alignas(64) atomic_int go; /* 0: wait; > 0: the team size, start */
    fr_team_fn fn;
    void *ctx;
};

typedef struct {
    fr_team *team;
    int id;
} member;

void fr_team_barrier(fr_team *team) {
    if (team == NULL || team->n < 2) return;
    const int my = !atomic_load_explicit(&team->sense, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&team->count, 1, memory_order_acq_rel) == team->n - 1) {
        atomic_store_explicit(&team->count, 0, memory_order_relaxed);
        atomic_store_explicit(&team->sense, my, memory_order_release);
        return;
    }
    for (long spin = 0; atomic_load_explicit(&team->sense, memory_order_acquire) != my; spin++) {
        if (spin < 2000) FR_PAUSE();
        else sched_yield(); /* the other member lost its core: let it run */
    }
}

static void *member_main(void *arg) {
    member *m = arg;
    fr_team *team = m->team;
    int n;
    for (long spin = 0; (n = atomic_load_explicit(&team->go, memory_order_acquire)) == 0; spin++)
        if (spin >= 1000) sched_yield();
    if (m->id < n) team->fn(team->ctx, m->id, n, team);
    return NULL;
}

int fr_team_run(int n, fr_team_fn fn, void *ctx) {
    if (n > FR_MAX_THREADS) n = FR_MAX_THREADS;
    if (n < 2) {
        fn(ctx, 0, 1, NULL);
        return 1;
    }
    fr_team team;
    team.n = n;
    atomic_init(&team.count, 0);
    atomic_init(&team.sense, 0);
    atomic_init(&team.go, 0);
    team.fn = fn;
    team.ctx = ctx;
    pthread_t tid[FR_MAX_THREADS];
    member mem[FR_MAX_THREADS];
    int started = 1;
    for (int i = 1; i < n; i++) {
        mem[i].team = &team;
        mem[i].id = i;
        if (pthread_create(&tid[i], NULL, member_main, &mem[i]) != 0) break;
        started++;
    }
    team.n = started; /* fewer threads if creation failed; the work splits by team.n */
    atomic_store_explicit(&team.go, started, memory_order_release);
    fn(ctx, 0, started, started > 1 ? &team : NULL);
    for (int i = 1; i < started; i++) pthread_join(tid[i], NULL);
    return started;
}
#else
void fr_team_barrier(fr_team *team) { (void)team; }
int fr_team_run(int n, fr_team_fn fn, void *ctx) {
    (void)n;
    fn(ctx, 0, 1, NULL);
    return 1;
}
#endif
