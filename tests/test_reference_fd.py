"""The NumPy oracle (fusedrnn.reference) checked against itself: its backward against
central finite differences of its forward in float64, for every element of every
parameter array, of the input x and of the initial states; and, when torch is
available, its forward and backward against torch.nn.LSTM / torch.nn.RNN."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
import pytest

from conftest import central_differences
from fusedrnn import reference

T, B, I, H = 4, 3, 5, 4
EPS = 1e-6
FD_TOL = 1e-6


def make_params(kind: str, option: bool, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Random float64 parameters; `option` = peepholes (LSTM) or state feedback W_s (RNN)."""
    w = lambda *shape: 0.5 * rng.standard_normal(shape)
    if kind == "lstm":
        p = {"W_x": w(4 * H, I), "W_v": w(4 * H, H), "b": w(4 * H)}
        if option:
            p["w_s"] = w(3, H)
    else:
        p = {"W_x": w(H, I), "W_r": w(H, H), "theta_s": w(H)}
        if option:
            p["W_s"] = 0.3 * w(H, H)
    return p


def make_problem(kind: str, option: bool, seed: int):
    """Parameters, inputs (x, initial states) and the fixed loss weights."""
    rng = np.random.default_rng(seed)
    params = make_params(kind, option, rng)
    inputs = {"x": rng.standard_normal((T, B, I)),
              "s0": 0.5 * rng.standard_normal((B, H)),
              "o0": 0.5 * rng.uniform(-1, 1, (B, H))}  # v[-1] (LSTM) or r[-1] (RNN)
    weights = {"dy": rng.standard_normal((T, B, H)),
               "ds_T": rng.standard_normal((B, H)),
               "do_T": rng.standard_normal((B, H))}
    return params, inputs, weights


def fns(kind: str) -> Tuple[Callable, Callable]:
    if kind == "lstm":
        return reference.lstm_forward, reference.lstm_backward
    return reference.rnn_forward, reference.rnn_backward


def loss(kind: str, params, inputs, weights) -> float:
    """E = sum(dy * y_seq) + sum(ds_T * s_T) + sum(do_T * o_T), o = v (LSTM) or r (RNN)."""
    forward, _ = fns(kind)
    y, s_T, o_T, _ = forward(inputs["x"], params, inputs["s0"], inputs["o0"])
    return float(np.sum(weights["dy"] * y) + np.sum(weights["ds_T"] * s_T)
                 + np.sum(weights["do_T"] * o_T))


def analytic(kind: str, params, inputs, weights) -> Dict[str, np.ndarray]:
    forward, backward = fns(kind)
    _, _, _, cache = forward(inputs["x"], params, inputs["s0"], inputs["o0"])
    dx, ds0, do0, grads = backward(weights["dy"], weights["ds_T"], weights["do_T"], cache)
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape, k
    out = {"x": dx, "s0": ds0, "o0": do0}
    out.update(grads)
    return out


def numeric(kind: str, params, inputs, weights, name: str) -> np.ndarray:
    """Central differences of the loss for every element of params[name] or inputs[name]."""
    params = {k: v.copy() for k, v in params.items()}
    inputs = {k: v.copy() for k, v in inputs.items()}
    arr = params[name] if name in params else inputs[name]
    return central_differences(lambda: loss(kind, params, inputs, weights), arr, EPS)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| over the array."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


CASES = [("lstm", True), ("lstm", False), ("rnn", True), ("rnn", False)]
IDS = ["lstm-peepholes", "lstm-no-peepholes", "rnn-state-feedback", "rnn-no-feedback"]


@pytest.mark.parametrize("kind,option", CASES, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_backward_matches_finite_differences(kind, option, seed):
    params, inputs, weights = make_problem(kind, option, seed)
    grads = analytic(kind, params, inputs, weights)
    assert set(grads) == set(params) | {"x", "s0", "o0"}
    for name, g in grads.items():
        fd = numeric(kind, params, inputs, weights, name)
        if kind == "rnn" and not option and name == "s0":  # s[-1] feeds nothing without W_s
            assert not g.any() and not fd.any()
            continue
        assert np.max(np.abs(fd)) > 1e-3, f"{name}: finite differences are all ~0"
        err = rel_err(g, fd)
        assert err <= FD_TOL, f"{kind} option={option} d{name}: relative error {err:.2e}"


@pytest.mark.parametrize("kind,option", CASES, ids=IDS)
def test_final_state_gradients_none_means_zero(kind, option):
    params, inputs, weights = make_problem(kind, option, 2)
    forward, backward = fns(kind)
    cache = forward(inputs["x"], params, inputs["s0"], inputs["o0"])[3]
    zeros = np.zeros((B, H))
    with_none = backward(weights["dy"], None, None, cache)
    with_zeros = backward(weights["dy"], zeros, zeros, cache)
    for a, b in zip(with_none[:3], with_zeros[:3]):
        np.testing.assert_array_equal(a, b)
    for k in params:
        np.testing.assert_array_equal(with_none[3][k], with_zeros[3][k])


@pytest.mark.parametrize("kind,option", CASES, ids=IDS)
def test_float32_computes_in_float32(kind, option):
    params, inputs, weights = make_problem(kind, option, 3)
    forward, backward = fns(kind)
    f32 = lambda d: {k: v.astype(np.float32) for k, v in d.items()}
    p32, in32, w32 = f32(params), f32(inputs), f32(weights)
    out32 = forward(in32["x"], p32, in32["s0"], in32["o0"])
    out64 = forward(inputs["x"], params, inputs["s0"], inputs["o0"])
    g32 = backward(w32["dy"], w32["ds_T"], w32["do_T"], out32[3])
    g64 = backward(weights["dy"], weights["ds_T"], weights["do_T"], out64[3])
    for a, b in list(zip(out32[:3] + g32[:3], out64[:3] + g64[:3])) + [
            (g32[3][k], g64[3][k]) for k in params]:
        assert a.dtype == np.float32
        assert rel_err(a, b) < 1e-4


def test_split_lstm_params_are_views_with_paper_names():
    params = make_params("lstm", True, np.random.default_rng(4))
    views = reference.split_lstm_params(params)
    assert set(views) == {f"{p}{g}" for p in ("W_x", "W_v", "b_") for g in reference.GATES} | {
        "w_scu", "w_scs", "w_scr"}
    np.testing.assert_array_equal(views["W_xcs"], params["W_x"][H:2 * H])
    np.testing.assert_array_equal(views["b_cr"], params["b"][3 * H:])
    np.testing.assert_array_equal(views["w_scr"], params["w_s"][2])
    views["W_vdu"][...] = 7.0
    assert (params["W_v"][2 * H:3 * H] == 7.0).all()
    del params["w_s"]
    assert "w_scu" not in reference.split_lstm_params(params)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_matches_torch(kind):
    """Without peepholes / state feedback the oracle equals torch.nn.LSTM / torch.nn.RNN
    (weight_ih = W_x, weight_hh = W_v or W_r, bias_ih = b or theta_s, bias_hh = 0),
    forward and backward, in float64."""
    torch = pytest.importorskip("torch")
    params, inputs, weights = make_problem(kind, False, 5)
    t = lambda a, grad=False: torch.tensor(a, dtype=torch.float64, requires_grad=grad)
    if kind == "lstm":
        net = torch.nn.LSTM(I, H).double()
        W_h, bias = params["W_v"], params["b"]
    else:
        net = torch.nn.RNN(I, H, nonlinearity="tanh").double()
        W_h, bias = params["W_r"], params["theta_s"]
    with torch.no_grad():
        net.weight_ih_l0.copy_(t(params["W_x"]))
        net.weight_hh_l0.copy_(t(W_h))
        net.bias_ih_l0.copy_(t(bias))
        net.bias_hh_l0.zero_()
    x, s0, o0 = t(inputs["x"], True), t(inputs["s0"][None], True), t(inputs["o0"][None], True)
    if kind == "lstm":
        y, (h_T, c_T) = net(x, (o0, s0))
        s_T = c_T[0]
    else:
        y, h_T = net(x, o0)
        s_T = None  # torch does not expose the pre-activation state
    E = (t(weights["dy"]) * y).sum() + (t(weights["do_T"]) * h_T[0]).sum()
    if s_T is not None:
        E = E + (t(weights["ds_T"]) * s_T).sum()
    E.backward()

    forward, backward = fns(kind)
    y_ref, s_T_ref, o_T_ref, cache = forward(inputs["x"], params, inputs["s0"], inputs["o0"])
    ds_T = weights["ds_T"] if kind == "lstm" else None
    dx, ds0, do0, g = backward(weights["dy"], ds_T, weights["do_T"], cache)

    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    close(y_ref, y.detach().numpy())
    close(o_T_ref, h_T[0].detach().numpy())
    if kind == "lstm":
        close(s_T_ref, s_T.detach().numpy())
        close(ds0, s0.grad[0].numpy())
    close(dx, x.grad.numpy())
    close(do0, o0.grad[0].numpy())
    close(g["W_x"], net.weight_ih_l0.grad.numpy())
    close(g["W_v" if kind == "lstm" else "W_r"], net.weight_hh_l0.grad.numpy())
    close(g["b" if kind == "lstm" else "theta_s"], net.bias_ih_l0.grad.numpy())
