"""Shared helpers: run a layer and the NumPy oracle on the same data and compare."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference

TOL = {np.float64: 1e-10, np.float32: 1e-4}


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (with a floor so exact zeros compare absolutely)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-6))


def central_differences(loss, arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d loss() / d arr by central differences, one element of `arr` at a time (arr is
    perturbed in place and restored)."""
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + eps
        e_plus = loss()
        arr[idx] = old - eps
        e_minus = loss()
        arr[idx] = old
        grad[idx] = (e_plus - e_minus) / (2 * eps)
    return grad


def assert_close(a, b, tol: float, what: str = "") -> None:
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def make_layer(kind: str, T: int, B: int, I: int, H: int, dtype, option: bool, seed: int = 0):
    """option: peepholes (LSTM), state_feedback (RNN), linear_before_reset (GRU)."""
    if kind == "lstm":
        return fr.LSTM(I, H, peepholes=option, dtype=dtype, seed=seed)
    if kind == "gru":
        return fr.GRU(I, H, linear_before_reset=option, dtype=dtype, seed=seed)
    return fr.RNN(I, H, state_feedback=option, dtype=dtype, seed=seed)


def state_of(layer, s, o):
    """The layer's State from the two channels (the GRU's h is the output o; it has no s)."""
    return layer.State(o) if isinstance(layer, fr.GRU) else layer.State(s, o)


def random_problem(layer, T: int, B: int, seed: int = 1) -> Dict[str, np.ndarray]:
    """Inputs, initial state, dE/dy and final-state gradients, in the layer dtype."""
    rng = np.random.default_rng(seed)
    H, I, dt = layer.hidden_size, layer.input_size, layer.dtype
    return {
        "x": rng.standard_normal((T, B, I)).astype(dt),
        "s0": (0.5 * rng.standard_normal((1, B, H))).astype(dt),
        "o0": (0.5 * rng.uniform(-1, 1, (1, B, H))).astype(dt),
        "dy": rng.standard_normal((T, B, H)).astype(dt),
        "ds_T": rng.standard_normal((1, B, H)).astype(dt),
        "do_T": rng.standard_normal((1, B, H)).astype(dt),
    }


def run_kernel(layer, prob) -> Tuple[dict, dict]:
    """Forward + backward through the layer; returns (outputs, gradients)."""
    layer.zero_grad()
    y, st = layer.forward(prob["x"], state=state_of(layer, prob["s0"], prob["o0"]))
    dx, dst = layer.backward(prob["dy"], state_of(layer, prob["ds_T"], prob["do_T"]))
    if isinstance(layer, fr.GRU):
        return {"y": y, "o_T": st.h[0]}, dict(dx=dx, do0=dst.h[0], **_copies(layer.grads))
    out = {"y": y, "s_T": st[0][0], "o_T": st[1][0]}
    grads = {"dx": dx, "ds0": dst[0][0], "do0": dst[1][0]}
    grads.update(_copies(layer.grads))
    return out, grads


def _copies(d: dict) -> dict:
    return {k: v.copy() for k, v in d.items()}


def run_reference(layer, prob) -> Tuple[dict, dict]:
    """The same through fusedrnn.reference in float64."""
    p = {k: v.astype(np.float64) for k, v in layer.params.items()}
    f = lambda a: a.astype(np.float64)
    if isinstance(layer, fr.GRU):
        y, o_T, cache = reference.gru_forward(f(prob["x"]), p, f(prob["o0"][0]),
                                              linear_before_reset=layer.linear_before_reset)
        dx, do0, g = reference.gru_backward(f(prob["dy"]), f(prob["do_T"][0]), cache)
        return {"y": y, "o_T": o_T}, dict(dx=dx, do0=do0, **g)
    if isinstance(layer, fr.LSTM):
        fwd, bwd = reference.lstm_forward, reference.lstm_backward
    else:
        fwd, bwd = reference.rnn_forward, reference.rnn_backward
    y, s_T, o_T, cache = fwd(f(prob["x"]), p, f(prob["s0"][0]), f(prob["o0"][0]))
    dx, ds0, do0, g = bwd(f(prob["dy"]), f(prob["ds_T"][0]), f(prob["do_T"][0]), cache)
    out = {"y": y, "s_T": s_T, "o_T": o_T}
    grads = {"dx": dx, "ds0": ds0, "do0": do0}
    grads.update(g)
    return out, grads


def compare_all(a: dict, b: dict, tol: float, label: str = "") -> None:
    assert set(a) == set(b), (set(a), set(b))
    for k in a:
        assert_close(a[k], b[k], tol, f"{label} {k}")


@pytest.fixture(autouse=True)
def _blas_backend():
    """Every test starts and ends on the default (SciPy BLAS) GEMM."""
    fr.set_gemm("blas")
    yield
    fr.set_gemm("blas")
