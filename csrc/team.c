/* A team of threads for one kernel call: the caller is member 0, the others
 * come from a process-wide pool of workers that persist between calls. The
 * members meet at a barrier once or twice per time step: a sense-reversing
 * counter that spins briefly (a step is tens of microseconds) and then yields
 * the core.
 *
 * Why a pool: a thread created for each call starts wherever the scheduler puts
 * it, often on the caller's own core, and the per-step barriers then wait for
 * context switches until the load balancer moves it (2-thread calls took 2-4x
 * their one-thread time at random on a 2-vCPU host). Pool workers stay on their
 * cores: between calls they spin for FR_TEAM_SPIN_NS, then sleep on a condition
 * variable.
 *
 * One call at a time owns the pool (a trylock); a call made while another holds
 * it creates threads of its own for its duration, as before, so concurrent calls
 * never share threads. A child process after fork() starts with an empty pool. */
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
#include <time.h>
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
    _Alignas(64) atomic_int go; /* 0: wait; > 0: the team size, start (own threads) */
    fr_team_fn fn;
    void *ctx;
};

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

/* ---- the pool -------------------------------------------------------------- */
#define FR_TEAM_SPIN_NS 200000 /* a worker's spin between calls before it sleeps */

static struct {
    pthread_mutex_t owner;     /* held by the call using the pool */
    pthread_mutex_t sleep_mu;  /* with wake: sleeping workers */
    pthread_cond_t wake;
    int workers;               /* started; worker i is member i + 1 */
    unsigned born;             /* the epoch when the last workers were created */
    int sleepers;              /* under sleep_mu */
    fr_team *job;              /* the current call's team (job->n members) */
    _Alignas(64) atomic_uint epoch; /* one more per call */
    _Alignas(64) atomic_int acks;   /* workers done with the current call */
} g_pool = {.owner = PTHREAD_MUTEX_INITIALIZER,
            .sleep_mu = PTHREAD_MUTEX_INITIALIZER,
            .wake = PTHREAD_COND_INITIALIZER};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wait until the epoch moves past `seen`: spin, then sleep. */
static unsigned pool_wait(unsigned seen) {
    unsigned e;
    const int64_t until = now_ns() + FR_TEAM_SPIN_NS;
    for (long spin = 1;; spin++) {
        if ((e = atomic_load_explicit(&g_pool.epoch, memory_order_acquire)) != seen) return e;
        FR_PAUSE();
        if (spin % 64 == 0 && now_ns() > until) break;
    }
    pthread_mutex_lock(&g_pool.sleep_mu);
    g_pool.sleepers++;
    while ((e = atomic_load_explicit(&g_pool.epoch, memory_order_acquire)) == seen)
        pthread_cond_wait(&g_pool.wake, &g_pool.sleep_mu);
    g_pool.sleepers--;
    pthread_mutex_unlock(&g_pool.sleep_mu);
    return e;
}

static void *pool_worker(void *arg) {
    const int id = (int)(intptr_t)arg; /* member id, >= 1 */
    unsigned seen = g_pool.born;        /* the call that created it is still to come */
    for (;;) {
        seen = pool_wait(seen);
        fr_team *team = g_pool.job; /* published before the epoch (release/acquire) */
        if (id < team->n) team->fn(team->ctx, id, team->n, team);
        atomic_fetch_add_explicit(&g_pool.acks, 1, memory_order_acq_rel);
    }
    return NULL;
}

/* fork(): the child has none of the workers; it starts with an empty pool. */
static void pool_after_fork_child(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    g_pool.owner = m;
    g_pool.sleep_mu = m;
    g_pool.wake = c;
    g_pool.workers = 0;
    g_pool.born = 0;
    g_pool.sleepers = 0;
    g_pool.job = NULL;
    atomic_store(&g_pool.epoch, 0);
    atomic_store(&g_pool.acks, 0);
}

static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;
static void pool_init_once(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

/* Run the team on the pool (the caller owns it). Returns the team size. */
static int pool_run(int n, fr_team *team) {
    g_pool.born = atomic_load_explicit(&g_pool.epoch, memory_order_relaxed);
    while (g_pool.workers < n - 1) { /* workers persist: create the missing ones */
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&tid, &attr, pool_worker,
                                      (void *)(intptr_t)(g_pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_pool.workers++;
    }
    if (n > g_pool.workers + 1) n = g_pool.workers + 1; /* fewer if creation failed */
    team->n = n;
    if (n < 2) {
        team->fn(team->ctx, 0, 1, NULL);
        return 1;
    }
    g_pool.job = team;
    atomic_store_explicit(&g_pool.acks, 0, memory_order_relaxed);
    pthread_mutex_lock(&g_pool.sleep_mu); /* no worker can miss the new epoch */
    atomic_fetch_add_explicit(&g_pool.epoch, 1, memory_order_release);
    if (g_pool.sleepers) pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.sleep_mu);
    team->fn(team->ctx, 0, n, team);
    /* every worker has read the job and left it before the team goes out of scope */
    for (long spin = 0; atomic_load_explicit(&g_pool.acks, memory_order_acquire) < g_pool.workers;
         spin++) {
        if (spin < 2000) FR_PAUSE();
        else sched_yield();
    }
    return n;
}

/* ---- threads of the call's own (the pool is busy) ---------------------------- */
typedef struct {
    fr_team *team;
    int id;
} member;

static void *member_main(void *arg) {
    member *m = arg;
    fr_team *team = m->team;
    int n;
    for (long spin = 0; (n = atomic_load_explicit(&team->go, memory_order_acquire)) == 0; spin++)
        if (spin >= 1000) sched_yield();
    if (m->id < n) team->fn(team->ctx, m->id, n, team);
    return NULL;
}

static int own_threads_run(int n, fr_team *team) {
    pthread_t tid[FR_MAX_THREADS];
    member mem[FR_MAX_THREADS];
    int started = 1;
    for (int i = 1; i < n; i++) {
        mem[i].team = team;
        mem[i].id = i;
        if (pthread_create(&tid[i], NULL, member_main, &mem[i]) != 0) break;
        started++;
    }
    team->n = started; /* fewer threads if creation failed; the work splits by team.n */
    atomic_store_explicit(&team->go, started, memory_order_release);
    team->fn(team->ctx, 0, started, started > 1 ? team : NULL);
    for (int i = 1; i < started; i++) pthread_join(tid[i], NULL);
    return started;
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
    pthread_once(&g_pool_once, pool_init_once);
    if (pthread_mutex_trylock(&g_pool.owner) != 0) return own_threads_run(n, &team);
    const int ran = pool_run(n, &team);
    pthread_mutex_unlock(&g_pool.owner);
    return ran;
}
#else
void fr_team_barrier(fr_team *team) { (void)team; }
int fr_team_run(int n, fr_team_fn fn, void *ctx) {
    (void)n;
    fn(ctx, 0, 1, NULL);
    return 1;
}
#endif
