"""reverse=True: a unidirectional fr.LSTM / fr.RNN that reads each row's valid
part backwards. Checked against fusedrnn.reference run FORWARD on the inputs
with each row's valid part flipped (outputs and input gradients flipped back),
against the reference cell's own reverse visit order (context windows), finite
differences in float64, chunked state carry, the torch modules (vs torch.nn on
flipped inputs), checkpoints and ONNX (direction="reverse", ONNX Runtime)."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference

from conftest import assert_close, central_differences


def flip_valid(seq, lens):
    """seq (T, B, ...) with each row's first lens[b] steps reversed; padding kept."""
    out = np.array(seq, copy=True)
    for b, n in enumerate(lens):
        out[:n, b] = seq[:n, b][::-1]
    return out


def _cells(layer):
    D = layer.num_directions
    return [layer._cell_dict(layer.params, l, d) for l in range(layer.num_layers) for d in range(D)]


LSTM_CASES = {
    "diagonal-2layers": dict(peepholes="diagonal", num_layers=2),
    "plain": dict(peepholes=None),
    "full-proj-coupled-clips": dict(peepholes="full", proj_size=3, coupled_gates=True,
                                    cell_clip=0.8, accumulation_clip=1.5),
}
LSTM_REF_OPTS = ("coupled_gates", "cell_clip", "accumulation_clip")


def _problem(layer, T, B, seed=0):
    rng = np.random.default_rng(seed)
    LD = layer.num_layers
    H, R, I, dt = layer.hidden_size, layer.output_size, layer.input_size, layer.dtype
    return dict(x=rng.standard_normal((T, B, I)).astype(dt),
                s0=(0.5 * rng.standard_normal((LD, B, H))).astype(dt),
                o0=rng.uniform(-0.8, 0.8, (LD, B, R)).astype(dt),
                dy=rng.standard_normal((T, B, R)).astype(dt),
                ds=rng.standard_normal((LD, B, H)).astype(dt),
                do=rng.standard_normal((LD, B, R)).astype(dt))


def _check_vs_flipped_reference(layer, lens, T=7, B=4):
    """fr reverse == reference forward on flipped valid parts, outputs and gradients."""
    p = _problem(layer, T, B)
    layer.zero_grad()
    y, st = layer.forward(p["x"], state=layer.State(p["s0"], p["o0"]), lengths=lens)
    dx, dst = layer.backward(p["dy"], layer.State(p["ds"], p["do"]))
    full = np.full(B, T) if lens is None else lens
    if isinstance(layer, fr.LSTM):
        opts = {k: getattr(layer, k) for k in LSTM_REF_OPTS}
        fwd, bwd = reference.lstm_network_forward, reference.lstm_network_backward
    else:
        opts = {}
        fwd, bwd = reference.rnn_network_forward, reference.rnn_network_backward
    y_r, s_r, o_r, cache = fwd(flip_valid(p["x"], full), _cells(layer), p["s0"], p["o0"],
                               lengths=lens, **opts)
    dx_r, ds0_r, do0_r, g_r = bwd(flip_valid(p["dy"], full), p["ds"], p["do"], cache)
    tol = 1e-10
    assert_close(y, flip_valid(y_r, full), tol, "y")
    assert_close(st[0], s_r, tol, "final s")
    assert_close(st[1], o_r, tol, "final output")
    assert_close(dx, flip_valid(dx_r, full), tol, "dx")
    assert_close(dst[0], ds0_r, tol, "ds0")
    assert_close(dst[1], do0_r, tol, "do0")
    assert len(g_r) == layer.num_layers
    for l, g in enumerate(g_r):
        for name, arr in g.items():
            sfx = "" if l == 0 else f"_l{l}"
            assert_close(layer.grads[name + sfx], arr, tol, f"grad {name}{sfx}")
    # the oracle is not trivially satisfied: a forward layer differs
    fwd_layer = type(layer)(**{**_config(layer), "reverse": False})
    for k in layer.params:
        fwd_layer.params[k][...] = layer.params[k]
    y_f, _ = fwd_layer.forward(p["x"], state=layer.State(p["s0"], p["o0"]), lengths=lens,
                               training=False)
    assert np.abs(y_f - y).max() > 1e-3


def _config(layer):
    """The constructor arguments of a layer (as checkpoints store them)."""
    from fusedrnn.checkpoint import _from_json, model_config
    return {k: _from_json(v) for k, v in model_config(layer)["config"].items()}


@pytest.mark.parametrize("case", list(LSTM_CASES))
@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm_reverse_vs_reference(case, with_lengths):
    layer = fr.LSTM(3, 5, dtype=np.float64, seed=1, reverse=True, **LSTM_CASES[case])
    for v in layer.params.values():
        v *= 2.0  # the clips active
    lens = np.array([7, 3, 0, 5]) if with_lengths else None
    _check_vs_flipped_reference(layer, lens)


@pytest.mark.parametrize("state_feedback", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_rnn_reverse_vs_reference(state_feedback, with_lengths):
    layer = fr.RNN(3, 5, state_feedback, num_layers=2, dtype=np.float64, seed=2, reverse=True)
    lens = np.array([7, 1, 0, 4]) if with_lengths else None
    _check_vs_flipped_reference(layer, lens)


def test_reverse_float32_matches_float64():
    for kind in (fr.LSTM, fr.RNN):
        l32 = kind(3, 6, dtype=np.float32, seed=3, reverse=True, num_layers=2)
        l64 = kind(3, 6, dtype=np.float64, seed=3, reverse=True, num_layers=2)
        for k in l32.params:
            l64.params[k][...] = l32.params[k]
        x = np.random.default_rng(0).standard_normal((8, 3, 3))
        lens = np.array([8, 2, 5])
        y32, _ = l32.forward(x, lengths=lens, training=False)
        y64, _ = l64.forward(x, lengths=lens, training=False)
        assert_close(y32, y64, 1e-5, f"{kind.__name__} f32 vs f64")


def test_lstm_reverse_context_vs_reference_cell():
    """With a context window the frames stay in time order; the cell's visit is
    reversed (the reference cell's reverse=True, not a flipped input)."""
    layer = fr.LSTM(2, 4, dtype=np.float64, seed=4, context=(1, 2), reverse=True)
    T, B = 6, 3
    p = _problem(layer, T, B, seed=5)
    lens = np.array([6, 4, 3])
    y, st = layer.forward(p["x"], state=layer.State(p["s0"], p["o0"]), lengths=lens)
    dx, dst = layer.backward(p["dy"], layer.State(p["ds"], p["do"]))
    y_r, s_r, o_r, cache = reference.lstm_forward(p["x"], layer.params, p["s0"][0], p["o0"][0],
                                                  context=(1, 2), lengths=lens, reverse=True)
    dx_r, ds0_r, do0_r, g = reference.lstm_backward(p["dy"], p["ds"][0], p["do"][0], cache)
    for a, b, what in ((y, y_r, "y"), (st.s[0], s_r, "s"), (st.v[0], o_r, "v"), (dx, dx_r, "dx"),
                       (dst.s[0], ds0_r, "ds0"), (dst.v[0], do0_r, "dv0")):
        assert_close(a, b, 1e-10, what)
    for k, v in g.items():
        assert_close(layer.grads[k], v, 1e-10, k)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_reverse_finite_differences(kind):
    """dE/dx and dE/dW of E = sum(w * y) + sum(w_s * s_T) by central differences."""
    T, B, I, H = 5, 2, 2, 3
    layer = (fr.LSTM(I, H, dtype=np.float64, seed=6, reverse=True, num_layers=2) if kind == "lstm"
             else fr.RNN(I, H, True, dtype=np.float64, seed=6, reverse=True, num_layers=2))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, I))
    lens = np.array([5, 3])
    wy = rng.standard_normal((T, B, H))
    ws = rng.standard_normal((2, B, H))

    def energy():
        y, st = layer.forward(x, lengths=lens, training=False)
        return float((wy * y).sum() + (ws * st[0]).sum())

    layer.zero_grad()
    layer.forward(x, lengths=lens)
    dx, _ = layer.backward(wy, layer.State(ws, None))
    eps = 1e-6
    num = central_differences(energy, x, eps)
    assert_close(dx, num, 1e-6, "dx")
    assert np.all(dx[3:, 1] == 0)  # padding of row 1 gets no gradient
    for name in ("W_x", "W_x_l1"):
        w = layer.params[name]
        g = layer.grads[name]
        for idx in [(0, 0), (1, 1), (w.shape[0] - 1, w.shape[1] - 1)]:
            old = w[idx]
            w[idx] = old + eps
            ep = energy()
            w[idx] = old - eps
            em = energy()
            w[idx] = old
            assert abs(g[idx] - (ep - em) / (2 * eps)) <= 1e-6 * max(1.0, abs(g[idx])), (name, idx)


@pytest.mark.parametrize("kind", [fr.LSTM, fr.RNN])
def test_reverse_state_carry(kind):
    """A reverse layer over [A, B] equals B first, then A with B's final state;
    the backward of the chunks, joined through dstate, equals the whole backward."""
    T, t = 9, 4
    whole = kind(3, 4, dtype=np.float64, seed=8, reverse=True, num_layers=2)
    first = kind(3, 4, dtype=np.float64, seed=8, reverse=True, num_layers=2)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((T, 2, 3))
    dy = rng.standard_normal((T, 2, 4))
    y, st = whole.forward(x)
    dx, dst = whole.backward(dy)
    y_b, st_b = first.forward(x[t:])          # the tail is read first
    y_a, st_a = whole.forward(x[:t], state=st_b)
    assert_close(np.concatenate([y_a, y_b]), y, 1e-12, "y")
    for a, b in zip(st_a[:2], st[:2]):
        assert_close(a, b, 1e-12, "final state")
    grads_whole = {k: v.copy() for k, v in whole.grads.items()}
    whole.zero_grad()
    first.zero_grad()
    dx_a, dst_a = whole.backward(dy[:t])
    dx_b, dst_b = first.backward(dy[t:], dst_a)
    assert_close(np.concatenate([dx_a, dx_b]), dx, 1e-12, "dx")
    for a, b in zip(dst_b[:2], dst[:2]):
        assert_close(a, b, 1e-12, "dstate0")
    for k in grads_whole:
        assert_close(whole.grads[k] + first.grads[k], grads_whole[k], 1e-12, k)


def test_reverse_batch_first_and_zero_lengths():
    layer = fr.LSTM(2, 3, dtype=np.float64, seed=10, reverse=True, batch_first=True)
    tm = fr.LSTM(2, 3, dtype=np.float64, seed=10, reverse=True)
    x = np.random.default_rng(11).standard_normal((3, 5, 2))   # (B, T, I)
    lens = np.array([5, 0, 2])
    s0 = np.random.default_rng(12).standard_normal((1, 3, 3))
    v0 = np.random.default_rng(13).uniform(-1, 1, (1, 3, 3))
    y, st = layer.forward(x, state=fr.LSTMState(s0, v0), lengths=lens, training=False)
    y_t, st_t = tm.forward(x.transpose(1, 0, 2), state=fr.LSTMState(s0, v0), lengths=lens,
                           training=False)
    np.testing.assert_array_equal(y, y_t.transpose(1, 0, 2))
    assert np.all(y[1] == 0) and np.all(y[2, 2:] == 0)
    np.testing.assert_array_equal(st.s[0, 1], s0[0, 1])   # a row of length 0 keeps its state
    np.testing.assert_array_equal(st.v[0, 1], v0[0, 1])


def test_reverse_options_refused():
    with pytest.raises(ValueError, match="reverse"):
        fr.LSTM(2, 3, reverse=True, bidirectional=True)
    with pytest.raises(ValueError, match="reverse"):
        fr.RNN(2, 3, reverse=True, bidirectional=True)
    with pytest.raises(TypeError, match="reverse"):
        fr.LSTM(2, 3, reverse="yes")
    layer = fr.LSTM(2, 3, context=(1, 1), reverse=True)
    x = np.zeros((4, 1, 2), np.float32)
    with pytest.raises(ValueError, match="x_future"):
        layer.forward(x, x_future=np.zeros((1, 1, 2), np.float32))
    with pytest.raises(ValueError, match="x_past"):
        layer.forward(x, state=fr.LSTMState(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)),
                                            np.zeros((1, 1, 2))))
    with pytest.raises(ValueError, match="reverse"):
        fr.LSTM(2, 3, peepholes=None, reverse=True).to_torch()
    with pytest.raises(ValueError, match="reverse"):
        fr.RNN(2, 3, reverse=True).to_torch()


def test_reverse_checkpoint_round_trip(tmp_path):
    for layer in (fr.LSTM(2, 3, seed=14, reverse=True, num_layers=2), fr.RNN(2, 3, seed=15, reverse=True)):
        path = tmp_path / f"{type(layer).__name__}.npz"
        fr.save(path, layer)
        back = fr.load(path)
        assert back.reverse is True and repr(back) == repr(layer)
        x = np.random.default_rng(16).standard_normal((5, 2, 2)).astype(np.float32)
        lens = np.array([5, 2])
        np.testing.assert_array_equal(back.forward(x, lengths=lens, training=False)[0],
                                      layer.forward(x, lengths=lens, training=False)[0])


# -- torch modules --------------------------------------------------------------------------

def _torch_flipped(frt_layer, x, lens, hx):
    """torch.nn.LSTM / RNN on the flipped valid parts (weights of frt_layer), flipped back."""
    import torch
    ref = frt_layer.to_fusedrnn()
    fwd = type(ref)(**{**_config(ref), "reverse": False})
    for k in ref.params:
        fwd.params[k][...] = ref.params[k]
    tm = fwd.to_torch()
    idx = torch.as_tensor(np.stack([np.r_[np.arange(n)[::-1], np.arange(n, x.shape[0])]
                                    for n in lens], 1))           # (T, B) flipped order
    gather = idx[:, :, None].expand(-1, -1, x.shape[2])
    xf = torch.gather(x, 0, gather)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xf, torch.as_tensor(lens), enforce_sorted=False)
    out, st = tm(packed, hx)
    yf, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    y = torch.zeros_like(yf).scatter(0, idx[:, :, None].expand(-1, -1, yf.shape[2]), yf)
    return y, st, tm


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_torch_module_reverse_vs_torch_on_flipped_input(kind):
    torch = pytest.importorskip("torch")
    import fusedrnn.torch as frt
    T, B, I, H = 6, 3, 2, 4
    if kind == "lstm":
        m = frt.LSTM(I, H, peepholes=None, num_layers=2, reverse=True, dtype=torch.float64, seed=17)
    else:
        m = frt.RNN(I, H, num_layers=2, reverse=True, dtype=torch.float64, seed=17)
    assert m.reverse and "reverse=True" in repr(m)
    g = torch.Generator().manual_seed(18)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g)
    h0 = torch.randn(2, B, H, dtype=torch.float64, generator=g)
    c0 = torch.randn(2, B, H, dtype=torch.float64, generator=g)
    lens = np.array([6, 2, 4])
    x1 = x.clone().requires_grad_(True)
    hx = (h0, c0) if kind == "lstm" else h0
    y, st = m(x1, hx, lengths=lens)
    x2 = x.clone().requires_grad_(True)
    y_t, st_t, tm = _torch_flipped(m, x2, lens, hx)
    torch.testing.assert_close(y, y_t, rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        torch.testing.assert_close(st[0], st_t[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(st[1], st_t[1], rtol=1e-10, atol=1e-12)
        loss_st, loss_st_t = (st[0] ** 2).sum() + st[1].sum(), (st_t[0] ** 2).sum() + st_t[1].sum()
    else:
        torch.testing.assert_close(st, st_t, rtol=1e-10, atol=1e-12)
        loss_st, loss_st_t = (st ** 2).sum(), (st_t ** 2).sum()
    w = torch.randn(T, B, H, dtype=torch.float64, generator=g)
    ((y * w).sum() + loss_st).backward()
    ((y_t * w).sum() + loss_st_t).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-12)
    names = {"W_x": "weight_ih", "W_v": "weight_hh", "W_r": "weight_hh"}
    for name, prm in m.named_parameters():
        base, _, layer = name.partition("_l")
        layer = int(layer or 0)
        if base in ("b", "theta_s"):
            ref = getattr(tm, f"bias_ih_l{layer}").grad
        else:
            ref = getattr(tm, f"{names[base]}_l{layer}").grad
        torch.testing.assert_close(prm.grad, ref, rtol=1e-9, atol=1e-12)


# -- ONNX -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "rnn", "lstm-scan"])
def test_onnx_reverse_export_matches_onnxruntime_and_round_trips(tmp_path, kind):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if kind == "lstm":
        layer = fr.LSTM(3, 5, peepholes="diagonal", num_layers=2, coupled_gates=True,
                        accumulation_clip=1.2, reverse=True, seed=19)
    elif kind == "rnn":
        layer = fr.RNN(3, 5, num_layers=2, reverse=True, seed=19)
    else:
        layer = fr.LSTM(3, 5, proj_size=2, reverse=True, seed=19)
    for v in layer.params.values():
        v *= 2.0
    path = tmp_path / "m.onnx"
    m = fr.onnx.export(layer, path, sequence_lens=True, initial_state=True,
                       unsupported="scan" if kind == "lstm-scan" else "raise")
    ops = {n.op_type for n in m.graph.node}
    if kind == "lstm-scan":
        assert "Scan" in ops
    else:
        directions = [a.s for n in m.graph.node if n.op_type in ("LSTM", "RNN")
                      for a in n.attribute if a.name == "direction"]
        assert directions == [b"reverse"] * layer.num_layers
    rng = np.random.default_rng(20)
    T, B = 7, 4
    L, H, R = layer.num_layers, layer.hidden_size, layer.output_size
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    lens = np.array([7, 3, 1, 5], np.int32)
    h0 = rng.uniform(-1, 1, (L, B, R)).astype(np.float32)
    c0 = rng.standard_normal((L, B, H)).astype(np.float32)
    feeds = {"X": x, "sequence_lens": lens, "initial_h": h0}
    if isinstance(layer, fr.LSTM):
        feeds["initial_c"] = c0
        state = fr.LSTMState(c0, h0)
    else:
        state = fr.RNNState(np.zeros_like(c0), h0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    y, st = layer.forward(x, state=state, lengths=lens, training=False)
    assert_close(out["Y"], y, 1e-5, "Y")
    assert_close(out["Y_h"], st[1], 1e-5, "Y_h")
    if isinstance(layer, fr.LSTM):
        assert_close(out["Y_c"], st[0], 1e-5, "Y_c")
    if kind != "lstm-scan":
        back = fr.onnx.load(path)
        assert back.reverse and repr(back) == repr(layer)
        for k in layer.params:
            np.testing.assert_array_equal(back.params[k], layer.params[k])
