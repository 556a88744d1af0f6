"""A child process forked after (or during) any threaded path of the parent
computes what the parent computes: the directions' thread pool (bidirectional
layers at small batch), the kernel's worker pool (the team path on 2 threads),
SciPy's BLAS threads (large batches, the RNN), and the package's locks. Each
child runs under a timeout, so a hang fails the test instead of blocking it.

multiprocessing and DataLoader workers fork on Linux; a pool whose workers
exist only in the parent, or a lock held by a parent thread, would make the
child wait forever."""
from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from typing import Any, Callable, Dict

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _tuning

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMEOUT = 60.0  # seconds a child may take; a hang is killed and fails the test


def in_child(fn: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """fn() in a forked child; its result (pickled through a pipe), or a failure
    if the child raises, dies or does not answer within `timeout` seconds."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            try:
                data = pickle.dumps(("ok", fn()))
            except BaseException as exc:  # reported by the parent
                data = pickle.dumps(("error", repr(exc)))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the forked child did not finish within {timeout} s (a hang)")
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
    assert chunks, "the child wrote no result"
    kind, value = pickle.loads(b"".join(chunks))
    assert kind == "ok", f"the child raised {value}"
    return value


@pytest.fixture
def two_threads():
    with _tuning.override(num_threads=2):
        yield


@pytest.fixture
def team_everywhere(two_threads):
    """Every call on the team path with 2 threads, whatever T and size."""
    with _tuning.override(packed_max_rows=1 << 30, team_min_steps=1, min_step_flops=0):
        yield


def inference(layer, x) -> Dict[str, np.ndarray]:
    y, st = layer.forward(x, training=False)
    return {"y": np.array(y), "s": np.array(st[0]), "o": np.array(st[1])}


def training(layer, x) -> Dict[str, np.ndarray]:
    layer.zero_grad()
    y, st = layer.forward(x)
    dy = np.random.default_rng(9).standard_normal(y.shape).astype(layer.dtype)
    dx, dst = layer.backward(dy)
    out = {"y": np.array(y), "s": np.array(st[0]), "dx": dx, "ds0": np.array(dst[0])}
    out.update({"grad " + k: g.copy() for k, g in layer.grads.items()})
    return out


def data(T: int, B: int, I: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((T, B, I)).astype(dtype)


def check_child_equals_parent(run: Callable[[], Dict[str, np.ndarray]]) -> None:
    want = run()  # the parent's threads and pools exist now
    got = in_child(run)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_bidirectional_inference(two_threads):
    layer = fr.LSTM(8, 16, bidirectional=True, seed=0)
    x = data(20, 2, 8)
    check_child_equals_parent(lambda: inference(layer, x))


def test_two_layer_bidirectional_training(two_threads):
    layer = fr.LSTM(8, 16, num_layers=2, bidirectional=True, seed=1)
    x = data(20, 2, 8)
    check_child_equals_parent(lambda: training(layer, x))


def test_team_path(team_everywhere):
    layer = fr.LSTM(24, 40, peepholes="diagonal", proj_size=12, dtype=np.float64, seed=2)
    x = data(12, 5, 24, np.float64)
    check_child_equals_parent(lambda: training(layer, x))


def test_team_path_bidirectional(team_everywhere):
    layer = fr.LSTM(24, 40, num_layers=2, bidirectional=True, seed=3)
    x = data(12, 40, 24)  # batch above the directions' pool: each cell on 2 kernel threads
    check_child_equals_parent(lambda: training(layer, x))


@pytest.mark.parametrize("B", [2, 40], ids=["directions pool", "BLAS threads"])
def test_rnn(two_threads, B):
    layer = fr.RNN(8, 32, num_layers=2, bidirectional=True, state_feedback=True,
                   dtype=np.float64, seed=4)
    x = data(15, B, 8, np.float64)
    check_child_equals_parent(lambda: training(layer, x))


def test_fork_while_another_thread_computes(team_everywhere):
    """The fork lands while a parent thread is inside kernel calls (the worker
    pool owned, the layer's locks possibly held)."""
    layer = fr.LSTM(16, 32, bidirectional=True, seed=5)
    x = data(30, 3, 16)
    want = training(layer, x)
    busy = fr.LSTM(16, 32, bidirectional=True, seed=5)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            training(busy, x)

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.2)
        got = [in_child(lambda: training(layer, x)), in_child(lambda: training(busy, x))]
    finally:
        stop.set()
        t.join()
    for g in got:
        for k in want:
            np.testing.assert_array_equal(g[k], want[k], err_msg=k)


def test_fork_with_layer_locks_held(two_threads):
    """A lock of a layer held by a parent thread at the fork is free in the child."""
    layer = fr.LSTM(8, 16, bidirectional=True, seed=6)
    x = data(10, 2, 8)
    want = training(layer, x)
    held, release = threading.Event(), threading.Event()

    def hold():
        with layer._grad_lock, layer._scratch._lock:
            held.set()
            release.wait()

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    try:
        got = in_child(lambda: training(layer, x))
    finally:
        release.set()
        t.join()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_grandchild(two_threads):
    """A child's own pools survive a second fork."""
    layer = fr.LSTM(8, 16, num_layers=2, bidirectional=True, seed=7)
    x = data(10, 2, 8)
    want = training(layer, x)

    def child():
        training(layer, x)
        return in_child(lambda: training(layer, x))

    got = in_child(child)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
