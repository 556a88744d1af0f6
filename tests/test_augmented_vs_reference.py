"""Issue 3, group 1: the C kernel against the NumPy oracle for every augmented
feature alone and in combination: float64 to 1e-10, float32 to 1e-4, every
output, final state and gradient (parameters, input, initial state, context
frames)."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference
from fusedrnn.core._layer import suffix
from conftest import TOL, assert_close

FEATURES = {
    "projection": dict(proj_size=3),
    "full-peepholes": dict(peepholes="full"),
    "diagonal-peepholes": dict(peepholes="diagonal"),
    "no-peepholes": dict(peepholes=None),
    "coupled": dict(coupled_gates=True),
    "cell-clip": dict(cell_clip=0.4),
    "accumulation-clip": dict(accumulation_clip=0.5),
    "context-causal": dict(context=(2, 0)),
    "context-lookahead": dict(context=(1, 2)),
    "lengths": dict(lengths=True),
    "bidirectional": dict(bidirectional=True),
    "two-layers-dropout": dict(num_layers=2, dropout=0.3),
    "everything": dict(proj_size=3, context=(2, 1), peepholes="full", coupled_gates=True,
                       cell_clip=0.4, accumulation_clip=1.5, num_layers=2, bidirectional=True,
                       dropout=0.25, lengths=True),
    "everything-diagonal": dict(proj_size=2, context=(1, 1), peepholes="diagonal",
                                cell_clip=0.6, accumulation_clip=1.0, num_layers=3,
                                lengths=True),
}

LENGTHS = np.array([6, 0, 3, 1])  # a full row, an empty one, partial ones


def _cells(layer):
    D = layer.num_directions
    return [{name: layer.params[name + suffix(l, d)].astype(np.float64)
             for name in layer._cell_param_shapes(layer._cell_input_size(l))}
            for l in range(layer.num_layers) for d in range(D)]


def _run(layer, x, s0, v0, dy, ds_T, dv_T, lengths, x_past=None, x_future=None):
    state = fr.LSTMState(s0, v0, x_past)
    y, st = layer.forward(x, state=state, lengths=lengths, x_future=x_future)
    masks = layer._tape.masks
    layer.zero_grad()
    dx, dst = layer.backward(dy, fr.LSTMState(ds_T, dv_T))
    return y, st, dx, dst, masks


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("feature", list(FEATURES))
def test_lstm_feature_matches_oracle(feature, dtype):
    opts = dict(FEATURES[feature])
    lengths = LENGTHS if opts.pop("lengths", False) else None
    T, B, I, H = 6, 4, 3, 5
    layer = fr.LSTM(I, H, dtype=dtype, seed=7, **opts)
    for v in layer.params.values():  # larger weights, so that the clips act
        v *= 2.5
    LD, R, D = layer.num_layers * layer.num_directions, layer.output_size, layer.num_directions
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    s0 = (0.3 * rng.standard_normal((LD, B, H))).astype(dtype)
    v0 = (0.3 * rng.standard_normal((LD, B, R))).astype(dtype)
    dy = rng.standard_normal((T, B, D * R)).astype(dtype)
    ds_T = rng.standard_normal((LD, B, H)).astype(dtype)
    dv_T = rng.standard_normal((LD, B, R)).astype(dtype)
    L_past, L_future = layer.context
    streaming = layer.context != (0, 0) and not layer.bidirectional
    x_past = rng.standard_normal((L_past, B, I)).astype(dtype) if streaming and L_past else None
    x_future = rng.standard_normal((L_future, B, I)).astype(dtype) if streaming and L_future else None

    y, st, dx, dst, masks = _run(layer, x, s0, v0, dy, ds_T, dv_T, lengths, x_past, x_future)

    f = lambda a: None if a is None else np.asarray(a, np.float64)
    cell_opts = dict(coupled_gates=layer.coupled_gates, cell_clip=layer.cell_clip,
                     accumulation_clip=layer.accumulation_clip, context=layer.context)
    y_r, s_r, v_r, cache = reference.lstm_network_forward(
        f(x), _cells(layer), f(s0), f(v0), bidirectional=layer.bidirectional, lengths=lengths,
        dropout_masks=[f(m) for m in masks] if masks and masks[0] is not None else None,
        x_past=f(x_past), x_future=f(x_future), **cell_opts)
    dx_r, ds0_r, dv0_r, grads_r = reference.lstm_network_backward(f(dy), f(ds_T), f(dv_T), cache)

    tol = TOL[dtype]
    assert_close(y, y_r, tol, "y")
    assert_close(st.s, s_r, tol, "s_T")
    assert_close(st.v, v_r, tol, "v_T")
    assert_close(dx, dx_r, tol, "dx")
    assert_close(dst.s, ds0_r, tol, "ds0")
    assert_close(dst.v, dv0_r, tol, "dv0")
    if x_past is not None:
        assert_close(dst.x_past, cache["dx_past"], tol, "dx_past")
    for i, g_r in enumerate(grads_r):
        l, d = divmod(i, D)
        for name, g in g_r.items():
            assert_close(layer.grads[name + suffix(l, d)], g, tol, f"grad {name}{suffix(l, d)}")
    # a clip must have acted somewhere, or this case would not test it
    for clip in ("cell_clip", "accumulation_clip"):
        if getattr(layer, clip) is not None:
            y_unclipped, *_ = reference.lstm_network_forward(
                f(x), _cells(layer), f(s0), f(v0), bidirectional=layer.bidirectional,
                lengths=lengths, dropout_masks=cache["dropout_masks"], x_past=f(x_past),
                x_future=f(x_future), **{**cell_opts, clip: None})
            assert np.abs(y_unclipped - y_r).max() > 1e-3, f"{clip} never acted"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("opts", [dict(num_layers=2, bidirectional=True, state_feedback=True),
                                  dict(bidirectional=True), dict(num_layers=3, dropout=0.5)],
                         ids=["2x-bidir-feedback", "bidir", "3-layers-dropout"])
def test_rnn_network_matches_oracle(opts, dtype):
    T, B, I, H = 6, 4, 3, 5
    layer = fr.RNN(I, H, dtype=dtype, seed=5, **opts)
    LD, D = layer.num_layers * layer.num_directions, layer.num_directions
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    s0, r0, ds_T, dr_T = (rng.standard_normal((LD, B, H)).astype(dtype) for _ in range(4))
    dy = rng.standard_normal((T, B, D * H)).astype(dtype)
    y, st = layer.forward(x, state=fr.RNNState(s0, r0), lengths=LENGTHS)
    masks = layer._tape.masks
    dx, dst = layer.backward(dy, fr.RNNState(ds_T, dr_T))
    f = lambda a: np.asarray(a, np.float64)
    cells = [{name: layer.params[name + suffix(l, d)].astype(np.float64)
              for name in layer._cell_param_shapes(layer._cell_input_size(l))}
             for l in range(layer.num_layers) for d in range(D)]
    y_r, s_r, r_r, cache = reference.rnn_network_forward(
        f(x), cells, f(s0), f(r0), bidirectional=layer.bidirectional, lengths=LENGTHS,
        dropout_masks=[f(m) for m in masks] if masks and masks[0] is not None else None)
    dx_r, ds0_r, dr0_r, grads_r = reference.rnn_network_backward(f(dy), f(ds_T), f(dr_T), cache)
    tol = TOL[dtype]
    for a, b, what in [(y, y_r, "y"), (st.s, s_r, "s_T"), (st.r, r_r, "r_T"), (dx, dx_r, "dx"),
                       (dst.s, ds0_r, "ds0"), (dst.r, dr0_r, "dr0")]:
        assert_close(a, b, tol, what)
    for i, g_r in enumerate(grads_r):
        l, d = divmod(i, D)
        for name, g in g_r.items():
            assert_close(layer.grads[name + suffix(l, d)], g, tol, f"grad {name}{suffix(l, d)}")
