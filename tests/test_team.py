"""The team path (packed micro-kernel for every GEMM of the forward and the
per-step GEMMs of the backward, steps split over the kernel's own threads)
gives the results of the step-by-step GEMM-provider path, for every option it
serves, with 1, 2 and 3 threads and uneven splits of the hidden units."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _kernel, _tuning

OPTS = [  # (layer class, options)
    (fr.LSTM, dict(peepholes=False)),
    (fr.LSTM, dict(peepholes="diagonal", proj_size=40)),
    (fr.LSTM, dict(peepholes="diagonal", coupled_gates=True, cell_clip=0.5, accumulation_clip=1.5,
                   bidirectional=True)),
    (fr.LSTM, dict(peepholes=False, proj_size=7, num_layers=2, bidirectional=True)),
    (fr.GRU, dict(linear_before_reset=True, num_layers=2)),
    (fr.GRU, dict(linear_before_reset=False, bidirectional=True)),
    (fr.GRU, dict(linear_before_reset=False, gate_activation=("hard_sigmoid", 0.3, 0.5),
                  cell_activation="softsign", accumulation_clip=1.5)),
    (fr.GRU, dict(linear_before_reset=True, cell_activation=("scaled_tanh", 1.3, 0.7),
                  accumulation_clip=2.0, bidirectional=True)),
]


def _kernel_settings(packed_rows, threads):
    """Process-wide: the packed (team) path up to `packed_rows` rows, `threads`
    threads (the count the layers' kernel calls use)."""
    return _tuning.override(packed_max_rows=packed_rows, num_threads=threads)


def _calls(layer, x, dy, lengths):
    """An inference forward, a training forward and its backward: their results."""
    y_inf, st_inf = layer.forward(x, training=False, lengths=lengths)
    layer.zero_grad()
    y, st = layer.forward(x, lengths=lengths)
    dx, dst = layer.backward(dy)
    return dict(y_inf=y_inf.copy(), s_inf=np.array(st_inf[0]), y=np.array(y), dx=dx,
                s=np.array(st[0]), ds0=np.array(dst[0]),
                **{"grad " + k: g.copy() for k, g in layer.grads.items()})


def _run(layer, x, dy, lengths, packed_rows, threads):
    with _kernel_settings(packed_rows, threads):
        return _calls(layer, x, dy, lengths)


@pytest.fixture
def split_everything():
    """Every team-path call uses as many threads as it is given, whatever T."""
    with _tuning.override(min_step_flops=0, team_min_steps=1):
        yield


@pytest.fixture(params=["grads in team", "grads on BLAS"])
def grad_place(request):
    """The backward's gradient GEMMs inside the team (micro-kernel) or after it
    (the BLAS), whatever the number of rows."""
    with _tuning.override(grad_rows=1 << 40 if request.param == "grads in team" else 0):
        yield request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cls,opts", OPTS, ids=[f"{c.__name__}{i}" for i, (c, _) in enumerate(OPTS)])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("T,B,ragged", [(6, 5, True), (70, 13, False)])
def test_team_equals_provider(split_everything, grad_place, cls, opts, threads, dtype, T, B, ragged):
    I, H = 45, 70  # partial panels everywhere; 3 f32 / 5 f64 panels of units
    layer = cls(I, H, dtype=dtype, seed=threads, **opts)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, layer.num_directions * layer.output_size)).astype(dtype)
    lengths = rng.integers(0, T + 1, size=B) if ragged else None
    ref = _run(layer, x, dy, lengths, 0, 1)
    got = _run(layer, x, dy, lengths, 1 << 30, threads)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], **tol, err_msg=k)


@pytest.mark.parametrize("make", [lambda: fr.LSTM(33, 96, peepholes="diagonal", dtype=np.float32, seed=0),
                                  lambda: fr.GRU(33, 96, linear_before_reset=False,
                                                 dtype=np.float32, seed=0)], ids=["lstm", "gru"])
def test_team_threads_are_deterministic(split_everything, grad_place, make):
    """Each output element is computed by one thread in a fixed order: two
    threads give the same bits as one. (The BLAS, which takes the gradient GEMMs
    in the "grads on BLAS" case, blocks differently with more threads: it keeps
    one thread here, so that only the team's threads change.)"""
    from threadpoolctl import threadpool_limits

    layer = make()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 9, 33)).astype(np.float32)
    dy = rng.standard_normal((20, 9, 96)).astype(np.float32)
    results = []
    for threads in (1, 2):
        with _kernel_settings(1 << 30, threads), threadpool_limits(1, "blas"):
            results.append(_calls(layer, x, dy, None))
    one, two = results
    for k in one:
        np.testing.assert_array_equal(two[k], one[k], err_msg=k)


@pytest.mark.parametrize("isa", range(_kernel.best_isa() + 1))
def test_every_isa_tile_matches_numpy(isa):
    """The micro-kernel's tiles for baseline x86-64, AVX2 and AVX-512 (those this
    CPU has) against NumPy, packed and row-major W, op(A) = A and A^T (copied in
    blocks of rows), over several K chunks."""
    old = _kernel.set_isa(isa)
    try:
        rng = np.random.default_rng(isa)
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
            # M beyond the 96-row copy blocks (96 + 96 + 9, 97) of the A^T path and of
            # the copied strips of a plain A with rows >= 2 KB apart (K = 600; 257 f64),
            # K over chunks
            for M, N, K in [(1, 1, 1), (13, 45, 300), (29, 100, 7), (4, 130, 513),
                            (201, 70, 600), (97, 33, 257)]:
                for ta in (False, True):
                    for packed in (False, True):
                        A = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
                        W = rng.standard_normal((K, N)).astype(dtype)
                        C0 = rng.standard_normal((M, N)).astype(dtype)
                        C = C0.copy()
                        _kernel.ugemm(C, A, W, ta, packed, True)
                        want = C0 + (A.T if ta else A).astype(np.float64) @ W
                        np.testing.assert_allclose(C, want, rtol=tol, atol=tol * K)
    finally:
        _kernel.set_isa(old)


def _team_problem(seed, kind="lstm"):
    if kind == "gru":  # the formulation with the second per-step GEMM W_hn (r h)
        layer = fr.GRU(45, 40, linear_before_reset=False, dtype=np.float64, seed=seed)
    else:
        layer = fr.LSTM(45, 70, peepholes="diagonal", proj_size=40, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20, 9, 45))
    dy = rng.standard_normal((20, 9, 40))
    return layer, x, dy


def _team_results(seed, calls=1, kind="lstm"):
    """`calls` rounds of team-path calls (forward inference, training forward,
    backward); the last round's results. The caller sets 2 threads."""
    layer, x, dy = _team_problem(seed, kind)
    for _ in range(calls):
        got = _calls(layer, x, dy, None)
    return got


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_concurrent_team_calls_equal_serial(split_everything, kind):
    """Team calls from several Python threads at once: one call holds the
    kernel's persistent worker pool, the others run on threads of their own;
    every call gets its serial results, bit for bit."""
    import threading

    got, errors = {}, []
    start = threading.Barrier(4)

    def work(seed):
        try:
            start.wait()
            got[seed] = _team_results(seed, calls=5, kind=kind)
        except BaseException as exc:  # reported below
            errors.append(exc)

    # the settings are process-wide: set once, not by each thread
    with _kernel_settings(1 << 30, 2):
        want = {seed: _team_results(seed, kind=kind) for seed in range(4)}
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors, errors
    for seed, ref in want.items():
        for k in ref:
            np.testing.assert_array_equal(got[seed][k], ref[k], err_msg=f"seed {seed}: {k}")


def _child_team_results(queue):
    queue.put(_team_results(7))


def test_team_after_fork(split_everything):
    """A child forked after the parent's team calls (its worker pool exists in
    the parent only) runs team calls of its own and gets the parent's results."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with _kernel_settings(1 << 30, 2):  # the child inherits them
        want = _team_results(7)  # the parent's pool is running now
        child = ctx.Process(target=_child_team_results, args=(queue,))
        child.start()
        try:
            got = queue.get(timeout=60)  # a child waiting for the parent's workers never answers
            child.join(60)
        finally:
            if child.is_alive():
                child.kill()
    assert child.exitcode == 0
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
