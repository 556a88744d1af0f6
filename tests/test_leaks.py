"""Issue 7 (robustness), memory: 10,000 forward+backward calls keep resident
memory flat. RSS is read from /proc/self/statm after a warm-up; the bound
(RSS_BOUND_MB, 20 MB) is far below what one leaked buffer per call would cost
at these sizes (the activation store alone is ~70 KB per call, 700 MB over
10,000 calls; the input copy 5 KB, 50 MB), and far above allocator noise
(measured: < 1 MB). Error paths (the bindings raising) and inference calls are
measured too. Linux only (/proc)."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import fusedrnn as fr

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")

N_CALLS = int(os.environ.get("FUSEDRNN_LEAK_CALLS", "10000"))
RSS_BOUND_MB = 20.0
T, B, I, H = 20, 4, 8, 16
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def growth(step, n: int) -> float:
    for i in range(200):      # warm-up: allocator pools, caches, lazy imports
        step(i)
    gc.collect()
    before = rss_mb()
    for i in range(n):
        step(i)
    gc.collect()
    return rss_mb() - before


LAYERS = {
    "lstm-peep-f64": lambda: fr.LSTM(I, H, peepholes=True, dtype=np.float64, seed=0),
    "lstm-f32": lambda: fr.LSTM(I, H, peepholes=False, dtype=np.float32, seed=0),
    "rnn-feedback-f64": lambda: fr.RNN(I, H, state_feedback=True, dtype=np.float64, seed=0),
    "rnn-f32": lambda: fr.RNN(I, H, dtype=np.float32, seed=0),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_forward_backward_memory_is_flat(name):
    layer = LAYERS[name]()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))            # float64: the float32 layers cast (a copy)
    dy = rng.standard_normal((T, B, H))
    state = layer.initial_state(B)

    def step(i):
        nonlocal state
        y, st = layer.forward(x, state=state if i % 2 else None)
        layer.backward(dy, st if i % 3 == 0 else None)
        state = st
        if i % 100 == 0:
            layer.zero_grad()

    grew = growth(step, N_CALLS)
    print(f"{name}: RSS growth over {N_CALLS} forward+backward calls: {grew:.2f} MB")
    assert grew < RSS_BOUND_MB


def test_inference_and_error_paths_memory_is_flat():
    """Inference calls, and calls that raise in the validation and in the
    bindings (with buffers already allocated), release everything."""
    from fusedrnn import _kernel

    lstm = LAYERS["lstm-peep-f64"]()
    rnn = LAYERS["rnn-f32"]()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    bad_state = fr.LSTMState(np.zeros((1, B + 1, H)), np.zeros((1, B, H)))
    cfg = _kernel.LSTMConfig(T, B, I, H)
    z = np.zeros(10**4)

    def step(i):
        lstm.forward(x, training=False)
        rnn.forward(x, training=False)
        for call in (lambda: lstm.forward(x, state=bad_state),
                     lambda: rnn.forward(x[:, :, :3]),
                     lambda: rnn.backward(np.zeros((T + 1, B, H)))
                     if rnn._tape is not None else rnn.forward(x),
                     lambda: _kernel.lstm_forward(cfg, y_seq=z[:5], s_T=z[:B * H],
                                                  y_T=z[:B * H], acts=None, work=z, x=z,
                                                  s0=z[:B * H], y0=z[:B * H], W_x=z, W_v=z,
                                                  b=z, W_s=None, W_qv=None)):
            try:
                call()
            except ValueError:
                pass

    grew = growth(step, N_CALLS // 4)
    print(f"inference + error paths: RSS growth over {N_CALLS // 4} rounds: {grew:.2f} MB")
    assert grew < RSS_BOUND_MB
