"""The NumPy oracle's augmented LSTM (spec §3), variable lengths, reverse direction and
networks (§4) checked against themselves: every backward against central finite
differences of its forward in float64, for every parameter array (all elements, or a
random subset of >= 15 for the networks), x, the initial states and the context frames;
plus semantic checks (lengths, reverse, context layout, streaming) and, with torch,
the projected bidirectional stack against torch.nn.LSTM over packed sequences."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import pytest

from fusedrnn import reference

T, B, I, H, P = 5, 3, 3, 4, 2
EPS = 1e-6
FD_TOL = 1e-6
KINK = 1e-4          # no clipped value may sit this close to +-c (FD would straddle the kink)
SUBSET = 20          # elements per array for the network cases (>= 15)
LENGTHS = np.array([0, 3, 5])   # an empty, a partial and a full row


# -- problem construction -----------------------------------------------------------------------

def w(rng, *shape, scale=0.5):
    return scale * rng.standard_normal(shape)


def lstm_params(rng, in_size, *, K=1, proj=False, peep=None, hidden=H) -> Dict[str, np.ndarray]:
    R = P if proj else hidden
    p = {"W_x": w(rng, 4 * hidden, K * in_size), "W_v": w(rng, 4 * hidden, R), "b": w(rng, 4 * hidden)}
    if peep == "diagonal":
        p["w_s"] = w(rng, 3, hidden)
    elif peep == "full":
        p["W_s"] = w(rng, 3, hidden, hidden, scale=0.3)
    if proj:
        p["W_qv"] = w(rng, P, hidden)
    return p


def rnn_params(rng, in_size, *, feedback=False) -> Dict[str, np.ndarray]:
    p = {"W_x": w(rng, H, in_size), "W_r": w(rng, H, H), "theta_s": w(rng, H)}
    if feedback:
        p["W_s"] = w(rng, H, H, scale=0.3)
    return p


class Problem:
    """All differentiable arrays in one flat dict `var`, a forward closure, the backward
    closure returning gradients under the same keys, and the fixed loss weights."""

    def __init__(self, var, forward: Callable, backward: Callable, out_width: int,
                 state_shape, out_state_shape, rng, lengths=None):
        self.var, self.forward, self.backward = var, forward, backward
        dy = rng.standard_normal((T, B, out_width))
        if lengths is not None:  # outputs at padding positions are 0: a weight there must not matter
            dy[np.arange(T)[:, None] >= lengths[None, :]] = 7.0
        self.weights = {"dy": dy, "ds_T": rng.standard_normal(state_shape),
                        "do_T": rng.standard_normal(out_state_shape)}

    def loss(self, var) -> float:
        y, s_T, o_T, _ = self.forward(var)
        wt = self.weights
        return float(np.sum(wt["dy"] * y) + np.sum(wt["ds_T"] * s_T) + np.sum(wt["do_T"] * o_T))

    def analytic(self) -> Dict[str, np.ndarray]:
        cache = self.forward(self.var)[3]
        return self.backward(self.weights["dy"], self.weights["ds_T"], self.weights["do_T"], cache)

    def numeric(self, name: str, idx_list):
        var = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.var.items()}
        arr = var[name]
        out = np.empty(len(idx_list))
        for j, idx in enumerate(idx_list):
            old = arr[idx]
            arr[idx] = old + EPS
            e_plus = self.loss(var)
            arr[idx] = old - EPS
            e_minus = self.loss(var)
            arr[idx] = old
            out[j] = (e_plus - e_minus) / (2 * EPS)
        return out


def check_fd(prob: Problem, subset: Optional[int] = None, seed: int = 0,
             zero_ok=()) -> Dict[str, np.ndarray]:
    """Analytic gradients of every array in prob.var against central differences."""
    grads = prob.analytic()
    assert set(grads) == set(prob.var), (set(grads) ^ set(prob.var))
    rng = np.random.default_rng(seed)
    for name, arr in prob.var.items():
        g = grads[name]
        assert g.shape == arr.shape, (name, g.shape, arr.shape)
        all_idx = list(np.ndindex(arr.shape))
        if subset is not None and len(all_idx) > subset:
            pick = rng.choice(len(all_idx), subset, replace=False)
            all_idx = [all_idx[i] for i in pick]
        fd = prob.numeric(name, all_idx)
        an = np.array([g[idx] for idx in all_idx])
        if name not in zero_ok:
            assert np.max(np.abs(fd)) > 1e-3, f"{name}: finite differences are all ~0"
        err = float(np.max(np.abs(an - fd)) / max(float(np.max(np.abs(fd))), 1e-12))
        assert err <= FD_TOL, f"d{name}: relative error {err:.2e}"
    return grads


def lstm_cell_problem(seed, *, proj=False, peep=None, context=(0, 0), past=False, future=False,
                      lengths=None, reverse=False, **opts) -> Problem:
    rng = np.random.default_rng(seed)
    K = context[0] + 1 + context[1]
    R = P if proj else H
    params = lstm_params(rng, I, K=K, proj=proj, peep=peep)
    var = dict(params)
    var["x"] = rng.standard_normal((T, B, I))
    var["s0"] = w(rng, B, H)
    var["o0"] = w(rng, B, R)
    if past:
        var["x_past"] = rng.standard_normal((context[0], B, I))
    if future:
        var["x_future"] = rng.standard_normal((context[1], B, I))
    keys = list(params)

    def forward(v):
        return reference.lstm_forward(v["x"], {k: v[k] for k in keys}, v["s0"], v["o0"],
                                      context=context, x_past=v.get("x_past"),
                                      x_future=v.get("x_future"), lengths=lengths,
                                      reverse=reverse, **opts)

    def backward(dy, ds_T, do_T, cache):
        dx, ds0, do0, g = reference.lstm_backward(dy, ds_T, do_T, cache)
        out = dict(g, x=dx, s0=ds0, o0=do0)
        assert cache["dx_past"].shape == (context[0], B, I)
        assert cache["dx_future"].shape == (context[1], B, I)
        if past:
            out["x_past"] = cache["dx_past"]
        if future:
            out["x_future"] = cache["dx_future"]
        return out

    return Problem(var, forward, backward, R, (B, H), (B, R), rng, lengths)


def clip_margins(caches, cell_clip=None, accumulation_clip=None):
    """(min distance of a pre-clip value to +-c, #clipped, #unclipped) over the real steps."""
    dist, n_clip, n_free = np.inf, 0, 0
    for c in caches:
        valid = (c["order"] >= 0)[:, :, None]
        vals = []
        if cell_clip is not None:
            vals.append((c["s_pre"], cell_clip))
        if accumulation_clip is not None:
            gates = ("cu", "du", "cr") if c["coupled_gates"] else reference.GATES
            vals += [(c["a"][g], accumulation_clip) for g in gates]
        for a, cc in vals:
            a = np.abs(a[np.broadcast_to(valid, a.shape)])
            dist = min(dist, float(np.min(np.abs(a - cc))))
            n_clip += int(np.sum(a > cc))
            n_free += int(np.sum(a < cc))
    return dist, n_clip, n_free


def with_clean_clips(make: Callable[[int], Problem], caches_of: Callable, seeds=range(40), **clips):
    """The first problem whose clipped values all stay > KINK away from the kink, with some
    values clipped and some not (re-drawing the random problem otherwise)."""
    for seed in seeds:
        prob = make(seed)
        dist, n_clip, n_free = clip_margins(caches_of(prob.forward(prob.var)[3]), **clips)
        if dist > KINK and n_clip > 0 and n_free > 0:
            return prob
    raise AssertionError("no random draw without values next to the clip kink")


def cell_caches(cache):
    return [cache]


def net_caches(cache):
    return cache["caches"]


# -- single layer-direction: each feature alone -------------------------------------------------

FEATURES = {
    "projection": dict(proj=True),
    "full-peepholes": dict(peep="full"),
    "diagonal-peepholes": dict(peep="diagonal"),
    "no-peepholes": dict(),
    "coupled": dict(coupled_gates=True, peep="diagonal"),
    "coupled-full-peepholes": dict(coupled_gates=True, peep="full"),
    "context-zeros": dict(context=(2, 1)),
    "context-frames": dict(context=(2, 1), past=True, future=True),
    "context-frames-lengths": dict(context=(1, 2), past=True, future=True, lengths=np.array([0, 4, 5])),
    "lengths": dict(lengths=LENGTHS, peep="diagonal"),
    "reverse": dict(reverse=True, peep="diagonal"),
    "reverse-lengths": dict(reverse=True, lengths=LENGTHS),
}


@pytest.mark.parametrize("name", list(FEATURES), ids=list(FEATURES))
def test_lstm_feature_fd(name):
    opts = FEATURES[name]
    prob = lstm_cell_problem(10, **opts)
    grads = check_fd(prob)
    if opts.get("coupled_gates"):  # the cs rows and the cs peephole are unused
        for k in ("W_x", "W_v", "b"):
            assert not grads[k][H:2 * H].any()
        assert not grads["w_s" if opts["peep"] == "diagonal" else "W_s"][1].any()
    if opts.get("lengths") is not None:  # padding positions get no input gradient
        lens = opts["lengths"]
        assert not grads["x"][np.arange(T)[:, None] >= lens[None, :]].any()
        if opts.get("future"):  # only a full row still sees x_future
            assert not grads["x_future"][:, lens < T].any() and grads["x_future"][:, lens == T].all()


def test_lstm_cell_clip_fd():
    prob = with_clean_clips(lambda s: lstm_cell_problem(s, peep="diagonal", cell_clip=0.3),
                            cell_caches, cell_clip=0.3)
    check_fd(prob)


def test_lstm_accumulation_clip_fd():
    prob = with_clean_clips(lambda s: lstm_cell_problem(s, peep="full", accumulation_clip=0.8),
                            cell_caches, accumulation_clip=0.8)
    check_fd(prob)


def test_lstm_all_features_combined_fd():
    """projection + context (2, 1) with frames + full peepholes + coupled + both clips +
    lengths + reverse."""
    opts = dict(proj=True, peep="full", context=(2, 1), past=True, future=True, lengths=LENGTHS,
                reverse=True, coupled_gates=True, cell_clip=0.3, accumulation_clip=0.9)
    prob = with_clean_clips(lambda s: lstm_cell_problem(s, **opts), cell_caches,
                            cell_clip=0.3, accumulation_clip=0.9)
    # row 0 has length 0: its x_past / x_future frames feed nothing; row 1 (3 < T) drops x_future
    grads = check_fd(prob)
    assert not grads["x_future"][:, :2].any() and grads["x_future"][:, 2].any()
    assert not grads["x_past"][:, 0].any() and grads["x_past"][:, 1:].any()


def test_rnn_lengths_reverse_fd():
    for reverse in (False, True):
        rng = np.random.default_rng(3)
        params = rnn_params(rng, I, feedback=True)
        var = dict(params, x=rng.standard_normal((T, B, I)), s0=w(rng, B, H), o0=w(rng, B, H))
        keys = list(params)

        def forward(v, reverse=reverse):
            return reference.rnn_forward(v["x"], {k: v[k] for k in keys}, v["s0"], v["o0"],
                                         lengths=LENGTHS, reverse=reverse)

        def backward(dy, ds_T, do_T, cache):
            dx, ds0, do0, g = reference.rnn_backward(dy, ds_T, do_T, cache)
            return dict(g, x=dx, s0=ds0, o0=do0)

        check_fd(Problem(var, forward, backward, H, (B, H), (B, H), rng, LENGTHS))


# -- networks -----------------------------------------------------------------------------------

def network_problem(seed, kind, *, L=2, bidirectional=True, lengths=LENGTHS, dropout=True,
                    proj=False, peep=None, context=(0, 0), **opts) -> Problem:
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    R = P if (kind == "lstm" and proj) else H
    K = context[0] + 1 + context[1]
    layers = []
    for l in range(L):
        for d in range(D):
            if kind == "lstm":
                layers.append(lstm_params(rng, I if l == 0 else D * R, K=K if l == 0 else 1,
                                          proj=proj, peep=peep))
            else:
                layers.append(rnn_params(rng, I if l == 0 else D * H, feedback=True))
    masks = None
    if dropout:
        keep = 0.7
        masks = [(rng.random((T, B, D * R)) < keep) / keep for _ in range(L - 1)]
        assert all((m == 0).any() for m in masks)
    var = {f"l{i // D}d{i % D}:{k}": a for i, p in enumerate(layers) for k, a in p.items()}
    var["x"] = rng.standard_normal((T, B, I))
    var["s0"] = w(rng, L * D, B, H)
    var["o0"] = w(rng, L * D, B, R)

    def unpack(v):
        return [{k: v[f"l{i // D}d{i % D}:{k}"] for k in p} for i, p in enumerate(layers)]

    def forward(v):
        if kind == "lstm":
            return reference.lstm_network_forward(v["x"], unpack(v), v["s0"], v["o0"],
                                                  bidirectional=bidirectional, lengths=lengths,
                                                  dropout_masks=masks, context=context, **opts)
        return reference.rnn_network_forward(v["x"], unpack(v), v["s0"], v["o0"],
                                             bidirectional=bidirectional, lengths=lengths,
                                             dropout_masks=masks)

    def backward(dy, ds_T, do_T, cache):
        bwd = reference.lstm_network_backward if kind == "lstm" else reference.rnn_network_backward
        dx, ds0, do0, grads = bwd(dy, ds_T, do_T, cache)
        out = {f"l{i // D}d{i % D}:{k}": a for i, g in enumerate(grads) for k, a in g.items()}
        out.update(x=dx, s0=ds0, o0=do0)
        return out

    return Problem(var, forward, backward, D * R, (L * D, B, H), (L * D, B, R), rng, lengths)


def test_lstm_network_bidirectional_dropout_lengths_fd():
    """2 layers x 2 directions, dropout masks, lengths, projection, diagonal peepholes, a
    context window on layer 0 and a cell clip."""
    prob = with_clean_clips(
        lambda s: network_problem(s, "lstm", proj=True, peep="diagonal", context=(1, 1),
                                  cell_clip=0.3), net_caches, cell_clip=0.3)
    check_fd(prob, subset=SUBSET)


def test_lstm_network_plain_fd():
    check_fd(network_problem(5, "lstm", L=2, bidirectional=True), subset=SUBSET)


def test_rnn_network_bidirectional_lengths_feedback_fd():
    check_fd(network_problem(6, "rnn"), subset=SUBSET)


def test_network_of_one_cell_is_the_cell():
    rng = np.random.default_rng(7)
    p = lstm_params(rng, I, K=4, proj=True, peep="full")
    x, s0, v0 = rng.standard_normal((T, B, I)), w(rng, B, H), w(rng, B, P)
    xp, xf = rng.standard_normal((2, B, I)), rng.standard_normal((1, B, I))
    opts = dict(context=(2, 1), coupled_gates=True, cell_clip=0.5, accumulation_clip=2.0)
    y, s_T, y_T, c = reference.lstm_forward(x, p, s0, v0, x_past=xp, x_future=xf,
                                            lengths=LENGTHS, **opts)
    yn, sn, ynT, cn = reference.lstm_network_forward(x, [p], s0[None], v0[None], x_past=xp,
                                                     x_future=xf, lengths=LENGTHS, **opts)
    np.testing.assert_array_equal(y, yn)
    np.testing.assert_array_equal(s_T, sn[0])
    np.testing.assert_array_equal(y_T, ynT[0])
    dy = rng.standard_normal(y.shape)
    g1 = reference.lstm_backward(dy, None, None, c)
    g2 = reference.lstm_network_backward(dy, None, None, cn)
    np.testing.assert_array_equal(g1[0], g2[0])
    np.testing.assert_array_equal(cn["dx_past"], c["dx_past"])
    np.testing.assert_array_equal(cn["dx_future"], c["dx_future"])
    for k in p:
        np.testing.assert_array_equal(g1[3][k], g2[3][0][k])
    with pytest.raises(ValueError):
        reference.lstm_network_forward(x, [p, p], x_past=xp, bidirectional=True, context=(2, 1))


def test_network_is_the_composition_of_cells():
    """Layer l > 0 reads [forward outputs, reverse outputs] of layer l-1 times its dropout
    mask; states are stacked layer-major, direction-minor; context only on layer 0."""
    rng = np.random.default_rng(17)
    prob = network_problem(18, "lstm", proj=True, peep="full", context=(1, 1))
    v = prob.var
    layers = [{k.split(":")[1]: a for k, a in v.items() if k.startswith(f"l{l}d{d}:")}
              for l in range(2) for d in range(2)]
    masks = [(rng.random((T, B, 2 * P)) < 0.5) * 2.0]
    opts = dict(coupled_gates=True, cell_clip=0.7)
    y, s_T, y_T, _ = reference.lstm_network_forward(v["x"], layers, v["s0"], v["o0"],
                                                    bidirectional=True, lengths=LENGTHS,
                                                    dropout_masks=masks, context=(1, 1), **opts)
    inp, outs = v["x"], []
    for l in range(2):
        cells = [reference.lstm_forward(inp, layers[2 * l + d], v["s0"][2 * l + d],
                                        v["o0"][2 * l + d], lengths=LENGTHS, reverse=d == 1,
                                        context=(1, 1) if l == 0 else (0, 0), **opts)
                 for d in range(2)]
        outs += cells
        inp = np.concatenate([cells[0][0], cells[1][0]], axis=2)
        if l == 0:
            inp = inp * masks[0]
    np.testing.assert_array_equal(y, inp)
    np.testing.assert_array_equal(s_T, np.stack([c[1] for c in outs]))
    np.testing.assert_array_equal(y_T, np.stack([c[2] for c in outs]))


# -- semantics ----------------------------------------------------------------------------------

def test_defaults_are_the_vanilla_lstm():
    """Keyword defaults (and explicit neutral options) give the positional call's result."""
    rng = np.random.default_rng(8)
    p = lstm_params(rng, I, peep="diagonal")
    x, s0, v0 = rng.standard_normal((T, B, I)), w(rng, B, H), w(rng, B, H)
    ref = reference.lstm_forward(x, p, s0, v0)
    same = reference.lstm_forward(x, p, s0, v0, coupled_gates=False, cell_clip=None,
                                  accumulation_clip=None, context=(0, 0), lengths=np.full(B, T),
                                  reverse=False)
    for a, b in zip(ref[:3], same[:3]):
        np.testing.assert_array_equal(a, b)
    # a clip larger than every value changes nothing
    big = reference.lstm_forward(x, p, s0, v0, cell_clip=1e3, accumulation_clip=1e3)
    for a, b in zip(ref[:3], big[:3]):
        np.testing.assert_array_equal(a, b)


def test_full_peepholes_with_diagonal_matrices_equal_diagonal_peepholes():
    rng = np.random.default_rng(9)
    p = lstm_params(rng, I, peep="diagonal", proj=True)
    q = {k: v for k, v in p.items() if k != "w_s"}
    q["W_s"] = np.stack([np.diag(d) for d in p["w_s"]])
    x, s0, v0 = rng.standard_normal((T, B, I)), w(rng, B, H), w(rng, B, P)
    a = reference.lstm_forward(x, p, s0, v0, coupled_gates=True)
    b = reference.lstm_forward(x, q, s0, v0, coupled_gates=True)
    for u, v in zip(a[:3], b[:3]):
        np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-15)
    dy = rng.standard_normal(a[0].shape)
    ga = reference.lstm_backward(dy, None, None, a[3])[3]
    gb = reference.lstm_backward(dy, None, None, b[3])[3]
    np.testing.assert_allclose(np.stack([np.diag(m) for m in gb["W_s"]]), ga["w_s"], rtol=1e-13)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_lengths_and_reverse_are_per_row_truncation_and_flip(kind):
    """Row b with lengths: the forward over x[:len_b] alone (reversed: over the flipped
    x[:len_b], outputs flipped back); zeros after the end; final state = after the last
    visited step (the initial state for len 0)."""
    rng = np.random.default_rng(11)
    if kind == "lstm":
        p, fwd, R = lstm_params(rng, I, proj=True, peep="full"), reference.lstm_forward, P
    else:
        p, fwd, R = rnn_params(rng, I, feedback=True), reference.rnn_forward, H
    x, s0, o0 = rng.standard_normal((T, B, I)), w(rng, B, H), w(rng, B, R)
    for reverse in (False, True):
        y, s_T, o_T, _ = fwd(x, p, s0, o0, lengths=LENGTHS, reverse=reverse)
        for b, n in enumerate(LENGTHS):
            assert not y[n:, b].any()
            if n == 0:
                np.testing.assert_array_equal(s_T[b], s0[b])
                np.testing.assert_array_equal(o_T[b], o0[b])
                continue
            xb = x[:n, b:b + 1]
            yb, sb, ob, _ = fwd(xb[::-1] if reverse else xb, p, s0[b:b + 1], o0[b:b + 1])
            np.testing.assert_allclose(y[:n, b], (yb[::-1] if reverse else yb)[:, 0], rtol=1e-13)
            np.testing.assert_allclose(s_T[b], sb[0], rtol=1e-13)
            np.testing.assert_allclose(o_T[b], ob[0], rtol=1e-13)


def test_context_layout_is_unfolded_input():
    """W_x column block k multiplies x[n + k - L_past], in original time order also for the
    reverse direction; x_past / x_future fill the frames outside the chunk."""
    rng = np.random.default_rng(12)
    Lp, Lf = 2, 1
    K = Lp + 1 + Lf
    p = lstm_params(rng, I, K=K, peep="diagonal")
    x, xp, xf = (rng.standard_normal((n, B, I)) for n in (T, Lp, Lf))
    ext = np.concatenate([xp, x, xf])
    X = np.concatenate([ext[k:k + T] for k in range(K)], axis=2)   # (T, B, K*I)
    for reverse in (False, True):
        a = reference.lstm_forward(x, p, context=(Lp, Lf), x_past=xp, x_future=xf, reverse=reverse)
        b = reference.lstm_forward(X, p, reverse=reverse)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-14, atol=1e-15)
        dy = rng.standard_normal(a[0].shape)
        dx_a = reference.lstm_backward(dy, None, None, a[3])[0]
        dX = reference.lstm_backward(dy, None, None, b[3])[0]
        dext = np.zeros_like(ext)
        for k in range(K):
            dext[k:k + T] += dX[:, :, k * I:(k + 1) * I]
        np.testing.assert_allclose(dx_a, dext[Lp:Lp + T], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(a[3]["dx_past"], dext[:Lp], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(a[3]["dx_future"], dext[Lp + T:], rtol=1e-13, atol=1e-15)


def test_lengths_end_the_context_window():
    """With lengths, row b's sequence ends at lengths[b]: a partial row equals the call over
    x[:len_b] alone without x_future (frames after its end are zero, x_future included),
    forward and reversed; a full row still sees x_future."""
    rng = np.random.default_rng(16)
    Lp, Lf = 1, 2
    lens = np.array([0, 4, 5])                     # row 1's last step looks at x_future[0]
    p = lstm_params(rng, I, K=Lp + 1 + Lf, proj=True, peep="diagonal")
    x, xp, xf = (rng.standard_normal((n, B, I)) for n in (T, Lp, Lf))
    s0, v0 = w(rng, B, H), w(rng, B, P)
    for reverse in (False, True):
        y, s_T, y_T, c = reference.lstm_forward(x, p, s0, v0, context=(Lp, Lf), x_past=xp,
                                                x_future=xf, lengths=lens, reverse=reverse)
        for b, n in enumerate(lens):
            if n == 0:
                continue
            row = lambda a: a[:, b:b + 1]
            yb, sb, qb, _ = reference.lstm_forward(
                row(x[:n]), p, s0[b:b + 1], v0[b:b + 1], context=(Lp, Lf), x_past=row(xp),
                x_future=row(xf) if n == T else None, reverse=reverse)
            np.testing.assert_allclose(y[:n, b], yb[:, 0], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(s_T[b], sb[0], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(y_T[b], qb[0], rtol=1e-13, atol=1e-15)
        g = reference.lstm_backward(rng.standard_normal(y.shape), None, None, c)
        assert not c["dx_future"][:, :2].any() and c["dx_future"][:, 2].all()
        assert not c["dx_past"][:, 0].any() and not g[0][:, 0].any()


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_streaming_two_chunks_equal_one_call(with_lengths):
    """Chunk 1 gets x_future = the first L_future frames of chunk 2; chunk 2 gets the state
    and x_past = the last L_past frames of chunk 1.  Forward and backward (chunk 2's
    initial-state and x_past gradients fed into chunk 1) equal one call over the whole."""
    rng = np.random.default_rng(13)
    Tw, T1, Lp, Lf = 9, 5, 2, 1
    p = lstm_params(rng, I, K=Lp + 1 + Lf, proj=True, peep="full")
    opts = dict(context=(Lp, Lf), coupled_gates=False, cell_clip=0.5, accumulation_clip=2.5)
    x, s0, v0 = rng.standard_normal((Tw, B, I)), w(rng, B, H), w(rng, B, P)
    lens = np.array([Tw, 7, 3]) if with_lengths else None
    l1 = None if lens is None else np.minimum(lens, T1)
    l2 = None if lens is None else np.maximum(lens - T1, 0)

    y, s_T, y_T, c = reference.lstm_forward(x, p, s0, v0, lengths=lens, **opts)
    y1, s1, q1, c1 = reference.lstm_forward(x[:T1], p, s0, v0, x_future=x[T1:T1 + Lf],
                                            lengths=l1, **opts)
    y2, s2, q2, c2 = reference.lstm_forward(x[T1:], p, s1, q1, x_past=x[T1 - Lp:T1],
                                            lengths=l2, **opts)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(s2, s_T, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(q2, y_T, rtol=1e-13, atol=1e-15)

    dy, ds_T, dy_T = rng.standard_normal(y.shape), w(rng, B, H), w(rng, B, P)
    dx, ds0, dv0, g = reference.lstm_backward(dy, ds_T, dy_T, c)
    dx2, ds1, dq1, g2 = reference.lstm_backward(dy[T1:], ds_T, dy_T, c2)
    dx1, ds0_c, dv0_c, g1 = reference.lstm_backward(dy[:T1], ds1, dq1, c1)
    dx_chunked = np.concatenate([dx1, dx2])
    dx_chunked[T1 - Lp:T1] += c2["dx_past"]
    dx_chunked[T1:T1 + Lf] += c1["dx_future"]
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    close(dx_chunked, dx)
    close(ds0_c, ds0)
    close(dv0_c, dv0)
    for k in p:
        close(g1[k] + g2[k], g[k])


# -- torch --------------------------------------------------------------------------------------

def _torch_run(torch, net, x, h0_c0, lens):
    """torch forward over pack_padded_sequence and the backward of the weighted loss."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    packed = pack_padded_sequence(x, torch.tensor(lens), enforce_sorted=False)
    out, st = net(packed, h0_c0)
    y, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return y, st


def test_lstm_network_matches_torch_projection_packed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    L, D = 2, 2
    lens = np.array([5, 2, 4])
    net = torch.nn.LSTM(I, H, num_layers=L, bidirectional=True, proj_size=P).double()
    layers = []
    for l in range(L):
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            g = lambda n: getattr(net, n + sfx).detach().numpy().copy()
            layers.append({"W_x": g("weight_ih"), "W_v": g("weight_hh"),
                           "b": g("bias_ih") + g("bias_hh"), "W_qv": g("weight_hr")})
    x, s0, v0 = rng.standard_normal((T, B, I)), w(rng, L * D, B, H), w(rng, L * D, B, P)
    dy, ds_T, dy_T = (rng.standard_normal(s) for s in ((T, B, D * P), (L * D, B, H), (L * D, B, P)))

    y, s_T, y_T, cache = reference.lstm_network_forward(x, layers, s0, v0, bidirectional=True,
                                                        lengths=lens)
    dx, ds0, dv0, grads = reference.lstm_network_backward(dy, ds_T, dy_T, cache)

    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)
    xt, h0, c0 = t(x), t(v0), t(s0)
    yt, (h_n, c_n) = _torch_run(torch, net, xt, (h0, c0), lens)
    E = ((torch.tensor(dy) * yt).sum() + (torch.tensor(ds_T) * c_n).sum()
         + (torch.tensor(dy_T) * h_n).sum())
    E.backward()
    close = lambda a, b: np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-11, atol=1e-13)
    close(y, yt)
    close(s_T, c_n)
    close(y_T, h_n)
    close(dx, xt.grad)
    close(ds0, c0.grad)
    close(dv0, h0.grad)
    for l in range(L):
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            gr = grads[l * D + d]
            close(gr["W_x"], getattr(net, "weight_ih" + sfx).grad)
            close(gr["W_v"], getattr(net, "weight_hh" + sfx).grad)
            close(gr["W_qv"], getattr(net, "weight_hr" + sfx).grad)
            close(gr["b"], getattr(net, "bias_ih" + sfx).grad)
            close(gr["b"], getattr(net, "bias_hh" + sfx).grad)


def test_rnn_network_matches_torch_packed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    L, D = 2, 2
    lens = np.array([3, 5, 1])
    net = torch.nn.RNN(I, H, num_layers=L, bidirectional=True, nonlinearity="tanh").double()
    layers = []
    for l in range(L):
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            g = lambda n: getattr(net, n + sfx).detach().numpy().copy()
            layers.append({"W_x": g("weight_ih"), "W_r": g("weight_hh"),
                           "theta_s": g("bias_ih") + g("bias_hh")})
    x, r0 = rng.standard_normal((T, B, I)), w(rng, L * D, B, H)
    dy, dr_T = rng.standard_normal((T, B, D * H)), rng.standard_normal((L * D, B, H))
    y, _, r_T, cache = reference.rnn_network_forward(x, layers, None, r0, bidirectional=True,
                                                     lengths=lens)
    dx, _, dr0, grads = reference.rnn_network_backward(dy, None, dr_T, cache)

    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)
    xt, h0 = t(x), t(r0)
    yt, h_n = _torch_run(torch, net, xt, h0, lens)
    ((torch.tensor(dy) * yt).sum() + (torch.tensor(dr_T) * h_n).sum()).backward()
    close = lambda a, b: np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-11, atol=1e-13)
    close(y, yt)
    close(r_T, h_n)
    close(dx, xt.grad)
    close(dr0, h0.grad)
    for l in range(L):
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            close(grads[l * D + d]["W_x"], getattr(net, "weight_ih" + sfx).grad)
            close(grads[l * D + d]["W_r"], getattr(net, "weight_hh" + sfx).grad)
            close(grads[l * D + d]["theta_s"], getattr(net, "bias_ih" + sfx).grad)
