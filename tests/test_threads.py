"""Issue 7 (robustness), threads: 8 Python threads x 200 forward/backward pairs
each, on one shared layer and on one layer per thread, give what a serial run
gives: outputs, final states and dx bit-identical; the gradients of separate
layers bit-identical; the gradients accumulated into a shared layer equal the
serial sum within 1e-12 relative in float64 (the summation order differs).

The layer keeps a training forward's activations per thread and serialises
the += into `grads` with a lock (_layer.py), so concurrent forward/backward
pairs on one layer pair up per thread. FUSEDRNN_THREAD_CALLS overrides the 200
calls per thread (tests/asan/run.sh uses fewer)."""
from __future__ import annotations

import copy
import os
import sys
import threading

import numpy as np
import pytest

import fusedrnn as fr

N_THREADS = 8
N_CALLS = int(os.environ.get("FUSEDRNN_THREAD_CALLS", "200"))
T, B, I, H = 4, 3, 5, 6

CONFIGS = {
    "lstm-peep-f64": lambda: fr.LSTM(I, H, peepholes=True, dtype=np.float64, seed=1),
    "lstm-f32": lambda: fr.LSTM(I, H, peepholes=False, dtype=np.float32, seed=2),
    "rnn-feedback-f64": lambda: fr.RNN(I, H, state_feedback=True, dtype=np.float64, seed=3),
    "rnn-f32": lambda: fr.RNN(I, H, dtype=np.float32, seed=4),
    "lstm-2layer-bidir-f64": lambda: fr.LSTM(I, H, num_layers=2, bidirectional=True,
                                             dtype=np.float64, seed=5),
    "gru-f64": lambda: fr.GRU(I, H, dtype=np.float64, seed=6),
    "gru-original-bidir-f32": lambda: fr.GRU(I, H, linear_before_reset=False, bidirectional=True,
                                             dtype=np.float32, seed=7),
}


def problem(layer, t: int, j: int):
    rng = np.random.default_rng([t, j])
    D = layer.num_directions
    x = rng.standard_normal((T, B, I)).astype(layer.dtype)
    dy = rng.standard_normal((T, B, D * layer.output_size)).astype(layer.dtype)
    return x, dy


def thread_work(layer, t: int, out: list, start: threading.Barrier = None, log: list = None):
    """200 calls of one thread: an inference forward every 4th call, the state
    carried from call to call, a training forward and its backward."""
    if start is not None:
        start.wait()
    state = None
    for j in range(N_CALLS):
        x, dy = problem(layer, t, j)
        if j % 4 == 3:
            y_inf, _ = layer.forward(x, state=state, training=False)
        y, new_state = layer.forward(x, state=state)
        if log is not None:
            log.append(t)
        dx, dstate = layer.backward(dy)
        if j % 4 == 3:
            np.testing.assert_array_equal(y_inf, y)
        out.append((y.copy(), [s.copy() for s in new_state[:2]], dx.copy(),
                    [d.copy() for d in dstate[:2]]))
        state = new_state if j % 7 != 6 else None


def run_concurrently(layers, outs, log=None):
    start = threading.Barrier(N_THREADS)
    errors = []

    def target(t):
        try:
            thread_work(layers[t], t, outs[t], start, log)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            start.abort()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: many interleavings
    try:
        threads = [threading.Thread(target=target, args=(t,)) for t in range(N_THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]


def assert_same_results(got, want):
    assert len(got) == len(want) == N_CALLS
    for (y, st, dx, dst), (y2, st2, dx2, dst2) in zip(got, want):
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(dx, dx2)
        for a, b in zip(st + dst, st2 + dst2):
            np.testing.assert_array_equal(a, b)


@pytest.fixture(params=sorted(CONFIGS))
def factory(request):
    return CONFIGS[request.param]


def test_shared_layer_concurrent_equals_serial(factory):
    serial_layer = factory()
    serial = [[] for _ in range(N_THREADS)]
    for t in range(N_THREADS):
        thread_work(serial_layer, t, serial[t])

    shared = factory()
    outs = [[] for _ in range(N_THREADS)]
    log: list = []
    run_concurrently([shared] * N_THREADS, outs, log)

    switches = sum(a != b for a, b in zip(log, log[1:]))
    assert switches > N_THREADS, "the threads did not interleave; the test proved nothing"
    for t in range(N_THREADS):
        assert_same_results(outs[t], serial[t])
    for k, g in serial_layer.grads.items():
        err = np.max(np.abs(shared.grads[k] - g)) / np.max(np.abs(g))
        tol = 1e-12 if shared.dtype == np.float64 else 1e-5
        assert err <= tol, f"grads[{k!r}]: relative difference {err:.2e} > {tol:.0e}"


def test_separate_layers_concurrent_equal_serial(factory):
    base = factory()
    serial_layers = [copy.deepcopy(base) for _ in range(N_THREADS)]
    serial = [[] for _ in range(N_THREADS)]
    for t in range(N_THREADS):
        thread_work(serial_layers[t], t, serial[t])

    layers = [copy.deepcopy(base) for _ in range(N_THREADS)]
    outs = [[] for _ in range(N_THREADS)]
    run_concurrently(layers, outs)
    for t in range(N_THREADS):
        assert_same_results(outs[t], serial[t])
        for k, g in serial_layers[t].grads.items():
            np.testing.assert_array_equal(layers[t].grads[k], g)


@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN, fr.GRU])
def test_backward_pairs_with_the_same_threads_forward(cls):
    """Thread A's forward, then thread B's forward and backward, then A's
    backward: A gets the gradients of its own forward; a thread that made no
    training forward gets the documented ValueError, whatever other threads did."""
    layer = cls(I, H, dtype=np.float64, seed=0)
    xa, dya = problem(layer, 0, 0)
    xb, dyb = problem(layer, 1, 0)
    ref = copy.deepcopy(layer)
    ref.forward(xa)
    dx_ref, _ = ref.backward(dya)

    a_forward_done, b_done = threading.Event(), threading.Event()
    result = {}

    def thread_a():
        layer.forward(xa)
        a_forward_done.set()
        b_done.wait(10)
        result["dx"] = layer.backward(dya)[0]

    def thread_b():
        a_forward_done.wait(10)
        layer.forward(xb)
        layer.backward(dyb)
        b_done.set()

    def thread_c():
        try:
            layer.backward(dya)
        except ValueError as exc:
            result["c"] = str(exc)

    ths = [threading.Thread(target=f) for f in (thread_a, thread_b)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    th = threading.Thread(target=thread_c)
    th.start()
    th.join()
    np.testing.assert_array_equal(result["dx"], dx_ref)
    assert "training=True" in result["c"]


# ---- a shared float32 layer: the grads differ from the serial sum by summation order only ------

class _OrderLog:
    """A layer's gradient lock that records which thread takes it: the order in
    which the backward calls add into `grads`."""

    def __init__(self, lock) -> None:
        self.lock, self.order = lock, []

    def __enter__(self):
        self.lock.acquire()
        self.order.append(int(threading.current_thread().name))
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _bidir_data(dtype, n_threads: int, n_calls: int):
    Tb, Bb, Ib, Hb = 20, 40, 16, 32  # B = 40: the directions run one after the other
    return [[(np.random.default_rng([t, j]).standard_normal((Tb, Bb, Ib)).astype(dtype),
              np.random.default_rng([t, j, 1]).standard_normal((Tb, Bb, 2 * Hb)).astype(dtype))
             for j in range(n_calls)] for t in range(n_threads)]


def _bidir_layer(dtype, params=None):
    layer = fr.LSTM(16, 32, bidirectional=True, dtype=dtype, seed=8)
    for k, v in (params or {}).items():
        layer.params[k][...] = v
    return layer


def _threaded(layer, data) -> list:
    """Every thread runs its calls (training forward + backward) on the shared
    layer; returns the order in which the backward calls took the grads lock."""
    log = _OrderLog(layer._grad_lock)
    layer._grad_lock = log
    start = threading.Barrier(len(data))
    errors = []

    def work(t):
        try:
            start.wait()
            for x, dy in data[t]:
                layer.forward(x)
                layer.backward(dy)
        except BaseException as exc:
            errors.append(exc)
            start.abort()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(t,), name=str(t)) for t in range(len(data))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
        layer._grad_lock = log.lock
    if errors:
        raise errors[0]
    return log.order


def _in_order(layer, data, order):
    """The same calls on one thread, the backward calls in `order` (thread indices)."""
    done = [0] * len(data)
    for t in order:
        x, dy = data[t][done[t]]
        done[t] += 1
        layer.forward(x)
        layer.backward(dy)
    return layer


def _rel(a, b) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b.astype(np.float64))))


def test_shared_float32_grads_differ_only_by_summation_order():
    """8 threads x 50 forward+backward on one bidirectional float32 LSTM (B = 40):
    `grads` differ from the serial sum by ~1e-5 relative. That is float32
    summation order, shown three ways:
    1. the same calls on one thread, their backward calls in the order the
       threads took the grads lock, give the threaded grads bit for bit (no lost
       or torn update, nothing else differs);
    2. in float64 the threaded grads equal the serial sum within 1e-12;
    3. the same two orders (serial and the recorded one) in float64 differ by
       as many float64 roundoffs (u = 2^-53) as the float32 grads differ by
       float32 roundoffs (u = 2^-24): the difference scales with the precision as
       rounding does (measured: ratios 0.4 to 3; allowed: 10)."""
    n_calls = max(10, N_CALLS // 4)
    data32 = _bidir_data(np.float32, N_THREADS, n_calls)
    serial_order = [t for t in range(N_THREADS) for _ in range(n_calls)]

    shared32 = _bidir_layer(np.float32)
    order = _threaded(shared32, data32)
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert switches > N_THREADS, "the threads did not interleave; the test proved nothing"
    replay32 = _in_order(_bidir_layer(np.float32), data32, order)
    serial32 = _in_order(_bidir_layer(np.float32), data32, serial_order)

    p64 = {k: v.astype(np.float64) for k, v in shared32.params.items()}
    data64 = [[(x.astype(np.float64), dy.astype(np.float64)) for x, dy in calls] for calls in data32]
    shared64 = _bidir_layer(np.float64, p64)
    order64 = _threaded(shared64, data64)
    serial64 = _in_order(_bidir_layer(np.float64, p64), data64, serial_order)
    replay64 = _in_order(_bidir_layer(np.float64, p64), data64, order)   # float32's order
    again64 = _in_order(_bidir_layer(np.float64, p64), data64, order64)

    u32, u64 = 2.0**-24, 2.0**-53
    for k in shared32.grads:
        np.testing.assert_array_equal(replay32.grads[k], shared32.grads[k], err_msg=k)
        np.testing.assert_array_equal(again64.grads[k], shared64.grads[k], err_msg=k)
        err64 = _rel(shared64.grads[k], serial64.grads[k])
        assert err64 <= 1e-12, f"float64 grads[{k!r}]: {err64:.2e} from the serial sum"
        d32 = _rel(shared32.grads[k], serial32.grads[k]) / u32
        d64 = _rel(replay64.grads[k], serial64.grads[k]) / u64
        assert d32 <= 10 * max(d64, 1.0), \
            f"grads[{k!r}]: float32 {d32:.0f} u32 vs float64 {d64:.0f} u64 for the same two orders"
