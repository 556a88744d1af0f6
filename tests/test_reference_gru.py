"""The GRU oracle (fusedrnn.reference.gru_*) checked against itself and against PyTorch: its
backward against central finite differences of its forward in float64 for every element of
every parameter, of x and of h[-1], in both formulations, with lengths and reverse; its
forward and backward against torch.nn.GRU (linear_before_reset=True) and against torch
autograd of the written-out original formulation (False), stacks, directions and packed
sequences included."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from conftest import central_differences
from fusedrnn import reference

T, B, I, H = 4, 3, 5, 4
EPS = 1e-6
FD_TOL = 1e-6


def make_params(lbr: bool, rng: np.random.Generator, I: int = I, H: int = H) -> Dict[str, np.ndarray]:
    w = lambda *shape: 0.5 * rng.standard_normal(shape)
    p = {"W_x": w(3 * H, I), "W_h": w(3 * H, H), "b": w(3 * H)}
    if lbr:
        p["b_hn"] = w(H)
    return p


def make_problem(lbr: bool, seed: int):
    rng = np.random.default_rng(seed)
    params = make_params(lbr, rng)
    inputs = {"x": rng.standard_normal((T, B, I)), "h0": 0.5 * rng.uniform(-1, 1, (B, H))}
    weights = {"dh": rng.standard_normal((T, B, H)), "dh_T": rng.standard_normal((B, H))}
    return params, inputs, weights


def loss(params, inputs, weights, **opts) -> float:
    h, h_T, _ = reference.gru_forward(inputs["x"], params, inputs["h0"], **opts)
    return float(np.sum(weights["dh"] * h) + np.sum(weights["dh_T"] * h_T))


def numeric(params, inputs, weights, name: str, **opts) -> np.ndarray:
    params = {k: v.copy() for k, v in params.items()}
    inputs = {k: v.copy() for k, v in inputs.items()}
    arr = params[name] if name in params else inputs[name]
    return central_differences(lambda: loss(params, inputs, weights, **opts), arr, EPS)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


@pytest.mark.parametrize("lbr", [True, False], ids=["linear-before-reset", "original"])
@pytest.mark.parametrize("variant", ["plain", "lengths", "reverse-lengths"])
def test_backward_matches_finite_differences(lbr, variant):
    params, inputs, weights = make_problem(lbr, 0 if variant == "plain" else 1)
    opts = dict(linear_before_reset=lbr)
    if variant != "plain":
        opts.update(lengths=np.array([T, 2, 0]), reverse=variant.startswith("reverse"))
    _, _, cache = reference.gru_forward(inputs["x"], params, inputs["h0"], **opts)
    dx, dh0, grads = reference.gru_backward(weights["dh"], weights["dh_T"], cache)
    assert set(grads) == set(params)
    analytic = dict(grads, x=dx, h0=dh0)
    for name, g in analytic.items():
        assert g.shape == (params[name] if name in params else inputs[name]).shape, name
        fd = numeric(params, inputs, weights, name, **opts)
        assert np.max(np.abs(fd)) > 1e-3, f"{name}: finite differences are all ~0"
        err = rel_err(g, fd)
        assert err <= FD_TOL, f"lbr={lbr} {variant} d{name}: relative error {err:.2e}"


@pytest.mark.parametrize("lbr", [True, False])
def test_padding_holds_the_state(lbr):
    params, inputs, _ = make_problem(lbr, 2)
    lens = np.array([T, 2, 0])
    h, h_T, _ = reference.gru_forward(inputs["x"], params, inputs["h0"], linear_before_reset=lbr,
                                      lengths=lens)
    for b, n in enumerate(lens):
        sub, sub_T, _ = reference.gru_forward(inputs["x"][:n, b:b + 1], params, inputs["h0"][b:b + 1],
                                              linear_before_reset=lbr)
        np.testing.assert_allclose(h[:n, b], sub[:, 0], rtol=1e-13, atol=1e-14)   # BLAS order only
        np.testing.assert_array_equal(h[n:, b], 0)
        if n:
            np.testing.assert_allclose(h_T[b], sub_T[0], rtol=1e-13, atol=1e-14)
        else:
            np.testing.assert_array_equal(h_T[b], inputs["h0"][b])


@pytest.mark.parametrize("lbr", [True, False])
def test_float32_computes_in_float32(lbr):
    params, inputs, weights = make_problem(lbr, 3)
    f32 = lambda d: {k: v.astype(np.float32) for k, v in d.items()}
    out32 = reference.gru_forward(f32(inputs)["x"], f32(params), f32(inputs)["h0"], linear_before_reset=lbr)
    out64 = reference.gru_forward(inputs["x"], params, inputs["h0"], linear_before_reset=lbr)
    g32 = reference.gru_backward(f32(weights)["dh"], f32(weights)["dh_T"], out32[2])
    g64 = reference.gru_backward(weights["dh"], weights["dh_T"], out64[2])
    pairs = list(zip(out32[:2] + g32[:2], out64[:2] + g64[:2])) + [(g32[2][k], g64[2][k]) for k in params]
    for a, b in pairs:
        assert a.dtype == np.float32
        assert rel_err(a, b) < 1e-4


def test_params_must_match_the_formulation():
    params, inputs, _ = make_problem(True, 4)
    with pytest.raises(ValueError, match="b_hn"):
        reference.gru_forward(inputs["x"], params, linear_before_reset=False)
    with pytest.raises(ValueError, match="W_x"):
        reference.gru_forward(inputs["x"][:, :, :2], params)


def test_split_gru_params_are_views():
    params = make_params(True, np.random.default_rng(5))
    views = reference.split_gru_params(params)
    assert set(views) == {f"{p}{g}" for p in ("W_x", "W_h", "b_") for g in "rzn"} | {"b_hn"}
    np.testing.assert_array_equal(views["W_xz"], params["W_x"][H:2 * H])
    views["W_hn"][...] = 7.0
    assert (params["W_h"][2 * H:] == 7.0).all()


# ---- against PyTorch -------------------------------------------------------------------------

def _close_all(ours, theirs) -> None:
    """Every oracle array equals its torch tensor to 1e-10 (float64)."""
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-10)


def _torch_original_gru(torch, x, layers, h0, lengths):
    """The original formulation written out in torch ops (autograd gives its gradients):
    n = tanh(W_xn x + W_hn (r * h) + b_n), padding holding the state."""
    T = x.shape[0]
    inp, h_T = x, []
    for l, p in enumerate(layers):
        Wx, Wh, b = p["W_x"], p["W_h"], p["b"]
        Hh = Wh.shape[1]
        h = h0[l]
        outs = []
        for n in range(T):
            gx, gh = inp[n] @ Wx.T + b, h @ Wh[:2 * Hh].T
            r = torch.sigmoid(gx[:, :Hh] + gh[:, :Hh])
            z = torch.sigmoid(gx[:, Hh:2 * Hh] + gh[:, Hh:])
            u = torch.tanh(gx[:, 2 * Hh:] + (r * h) @ Wh[2 * Hh:].T)
            h_new = (1 - z) * u + z * h
            valid = torch.tensor(n < lengths, dtype=torch.bool)[:, None]
            h = torch.where(valid, h_new, h)
            outs.append(torch.where(valid, h_new, torch.zeros_like(h_new)))
        inp = torch.stack(outs)
        h_T.append(h)
    return inp, torch.stack(h_T)


def _to_torch_params(net, layers, D, t):
    import torch
    with torch.no_grad():
        for i, p in enumerate(layers):
            sfx = f"_l{i // D}" + ("_reverse" if i % D else "")
            Hh = p["W_h"].shape[1]
            getattr(net, "weight_ih" + sfx).copy_(t(p["W_x"]))
            getattr(net, "weight_hh" + sfx).copy_(t(p["W_h"]))
            getattr(net, "bias_ih" + sfx).copy_(t(p["b"]))
            bhh = np.zeros(3 * Hh)
            bhh[2 * Hh:] = p["b_hn"]
            getattr(net, "bias_hh" + sfx).copy_(t(bhh))


@pytest.mark.parametrize("L,bidirectional,packed", [(1, False, False), (2, True, False),
                                                     (2, False, True), (1, True, True)])
def test_matches_torch_gru(L, bidirectional, packed):
    """linear_before_reset=True is torch.nn.GRU (weight_ih = W_x, weight_hh = W_h,
    bias_ih = b, bias_hh = [0, 0, b_hn]): outputs, final states and every gradient to 1e-10."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    D = 2 if bidirectional else 1
    layers = [make_params(True, rng, I if i < D else D * H) for i in range(L * D)]
    x = rng.standard_normal((T, B, I))
    h0 = 0.5 * rng.standard_normal((L * D, B, H))
    dh, dh_T = rng.standard_normal((T, B, D * H)), rng.standard_normal((L * D, B, H))
    lens = np.array([T, 3, 1]) if packed else None

    t = lambda a, grad=False: torch.tensor(a, dtype=torch.float64, requires_grad=grad)
    net = torch.nn.GRU(I, H, num_layers=L, bidirectional=bidirectional).double()
    _to_torch_params(net, layers, D, t)
    xt, h0t = t(x, True), t(h0, True)
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lens), enforce_sorted=False)
        out, hT = net(seq, h0t)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        y, hT = net(xt, h0t)
    E = (t(dh) * y).sum() + (t(dh_T) * hT).sum()
    E.backward()

    y_ref, hT_ref, cache = reference.gru_network_forward(x, layers, h0, bidirectional=bidirectional,
                                                         lengths=lens)
    dx, dh0, grads = reference.gru_network_backward(dh, dh_T, cache)
    _close_all([y_ref, hT_ref, dx, dh0], [y, hT, xt.grad, h0t.grad])
    for i, g in enumerate(grads):
        sfx = f"_l{i // D}" + ("_reverse" if i % D else "")
        gb = getattr(net, "bias_hh" + sfx).grad.numpy()
        close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        close(g["W_x"], getattr(net, "weight_ih" + sfx).grad.numpy())
        close(g["W_h"], getattr(net, "weight_hh" + sfx).grad.numpy())
        close(g["b"], getattr(net, "bias_ih" + sfx).grad.numpy())
        close(g["b_hn"], gb[2 * H:])
        close(g["b"][:2 * H], gb[:2 * H])   # the r, z biases of torch's two add up


def test_original_formulation_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    L = 2
    layers = [make_params(False, rng, I if l == 0 else H) for l in range(L)]
    x, h0 = rng.standard_normal((T, B, I)), 0.5 * rng.standard_normal((L, B, H))
    dh, dh_T = rng.standard_normal((T, B, H)), rng.standard_normal((L, B, H))
    lens = np.array([T, 2, 0])
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)
    tl = [{k: t(v) for k, v in p.items()} for p in layers]
    xt, h0t = t(x), t(h0)
    y, hT = _torch_original_gru(torch, xt, tl, h0t, lens)
    ((torch.tensor(dh) * y).sum() + (torch.tensor(dh_T) * hT).sum()).backward()

    y_ref, hT_ref, cache = reference.gru_network_forward(x, layers, h0, linear_before_reset=False,
                                                         lengths=lens)
    dx, dh0, grads = reference.gru_network_backward(dh, dh_T, cache)
    _close_all([y_ref, hT_ref, dx, dh0], [y, hT, xt.grad, h0t.grad])
    for g, p in zip(grads, tl):
        _close_all([g[k] for k in g], [p[k].grad for k in g])
