"""fr.GRU: the layer (kernel) against torch.nn.GRU and the NumPy oracle in float64 with
stacks, directions and packed sequences, gradients included; the weight mapping to and
from torch; lengths; the State; bad input; checkpoints. (The shape grid against the
oracle, chunked == whole and the team path are in the tests shared with the LSTM.)"""
from __future__ import annotations

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference

T, B, I, H = 6, 3, 5, 7


def _cells(layer, store):
    D = layer.num_directions
    return [layer._cell_dict(store, l, d) for l in range(layer.num_layers) for d in range(D)]


def _problem(layer, seed=0):
    rng = np.random.default_rng(seed)
    LD, R = layer.num_layers * layer.num_directions, layer.num_directions * H
    return (rng.standard_normal((T, B, I)), 0.5 * rng.standard_normal((LD, B, H)),
            rng.standard_normal((T, B, R)), rng.standard_normal((LD, B, H)))


@pytest.mark.parametrize("lbr", [True, False], ids=["linear-before-reset", "original"])
@pytest.mark.parametrize("L,bidirectional,reverse", [(1, False, False), (2, True, False),
                                                     (2, False, True)])
def test_layer_equals_the_oracle(lbr, L, bidirectional, reverse):
    """Every output, final state and gradient of a stack with lengths, in float64."""
    g = fr.GRU(I, H, linear_before_reset=lbr, num_layers=L, bidirectional=bidirectional,
               reverse=reverse, dtype=np.float64, seed=1)
    x, h0, dy, dh_T = _problem(g)
    lens = np.array([T, 2, 0])
    y, st = g.forward(x, g.State(h0), lengths=lens)
    dx, dst = g.backward(dy, g.State(dh_T))
    if reverse:  # a reverse stack: every layer one reversed direction
        layers = _cells(g, g.params)
        inp, caches, hT = x, [], []
        for p in layers:
            inp, h_l, c = reference.gru_forward(inp, p, h0[len(caches)], linear_before_reset=lbr,
                                                lengths=lens, reverse=True)
            caches.append(c)
            hT.append(h_l)
        np.testing.assert_allclose(y, inp, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(st.h, np.stack(hT), rtol=1e-10, atol=1e-12)
        return
    y_r, hT_r, cache = reference.gru_network_forward(x, _cells(g, g.params), h0,
                                                     linear_before_reset=lbr,
                                                     bidirectional=bidirectional, lengths=lens)
    dx_r, dh0_r, grads_r = reference.gru_network_backward(dy, dh_T, cache)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    close(y, y_r)
    close(st.h, hT_r)
    close(dx, dx_r)
    close(dst.h, dh0_r)
    for got, want in zip(_cells(g, g.grads), grads_r, strict=True):
        for k in want:
            close(got[k], want[k])


@pytest.mark.parametrize("L,bidirectional,packed,batch_first",
                         [(1, False, False, False), (2, True, False, True),
                          (3, False, True, False), (2, True, True, True)])
def test_matches_torch_gru(L, bidirectional, packed, batch_first):
    """fr.GRU.from_torch(m) computes m: outputs, final states, dx, dh0 and every
    weight gradient to 1e-10 in float64, packed sequences as lengths."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.GRU(I, H, num_layers=L, bidirectional=bidirectional,
                     batch_first=batch_first).double()
    g = fr.GRU.from_torch(m)
    assert (g.num_layers, g.bidirectional, g.batch_first, g.dtype) == (L, bidirectional,
                                                                       batch_first, np.float64)
    x, h0, dy, dh_T = _problem(g, seed=L)
    if batch_first:
        x, dy = x.transpose(1, 0, 2).copy(), dy.transpose(1, 0, 2).copy()
    lens = np.array([T, 4, 1]) if packed else None
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lens), batch_first=batch_first,
                                                      enforce_sorted=False)
        out, hT = m(seq, h0t)
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        yt, hT = m(xt, h0t)
    ((torch.tensor(dy) * yt).sum() + (torch.tensor(dh_T) * hT).sum()).backward()

    y, st = g.forward(x, g.State(h0), lengths=lens)
    dx, dst = g.backward(dy, g.State(dh_T))
    close = lambda a, b: np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)
    close(y, yt)
    close(st.h, hT)
    close(dx, xt.grad)
    close(dst.h, h0t.grad)
    for l in range(L):
        for d in range(g.num_directions):
            ts, fs = f"_l{l}" + ("_reverse" if d else ""), fr.core._layer.suffix(l, d)
            gih, ghh = getattr(m, "bias_ih" + ts).grad, getattr(m, "bias_hh" + ts).grad
            close(g.grads["W_x" + fs], getattr(m, "weight_ih" + ts).grad)
            close(g.grads["W_h" + fs], getattr(m, "weight_hh" + ts).grad)
            close(g.grads["b" + fs], gih)                 # dE/db_ih = dE/db (every row)
            close(g.grads["b" + fs][:2 * H], ghh[:2 * H])  # r, z rows of b_hh add into b
            close(g.grads["b_hn" + fs], ghh[2 * H:])


def test_torch_weights_both_ways():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    m = torch.nn.GRU(I, H, num_layers=2, bidirectional=True, dropout=0.25)
    g = fr.GRU.from_torch(m)
    assert g.dtype == np.float32 and g.dropout == 0.25
    np.testing.assert_array_equal(g.params["b_l1_reverse"][:2 * H],
                                  (m.bias_ih_l1_reverse + m.bias_hh_l1_reverse)[:2 * H].detach())
    np.testing.assert_array_equal(g.params["b_hn_l1_reverse"], m.bias_hh_l1_reverse[2 * H:].detach())
    back = g.to_torch()
    x = torch.randn(T, B, I)
    torch.testing.assert_close(back.eval()(x)[0], m.eval()(x)[0], rtol=1e-6, atol=1e-6)
    nobias = torch.nn.GRU(I, H, bias=False)
    g0 = fr.GRU.from_torch(nobias)
    assert not g0.params["b"].any() and not g0.params["b_hn"].any()
    with pytest.raises(ValueError, match="linear_before_reset=False"):
        fr.GRU(I, H, linear_before_reset=False).to_torch()
    with pytest.raises(ValueError, match="reverse"):
        fr.GRU(I, H, reverse=True).to_torch()
    with pytest.raises(TypeError, match="expected a torch.nn.GRU"):
        fr.GRU.from_torch(torch.nn.LSTM(I, H))
    bad = torch.nn.GRU(I, H)
    with torch.no_grad():
        bad.weight_hh_l0 = torch.nn.Parameter(torch.zeros(H, H))
    with pytest.raises(ValueError, match="weight_hh_l0 must have shape"):
        fr.GRU.from_torch(bad)


@pytest.mark.parametrize("lbr", [True, False])
def test_lengths_hold_the_state(lbr):
    """Padding steps output zero and hold h; the final state of each row is its state
    after its own last step; no gradient reaches padded inputs."""
    g = fr.GRU(I, H, linear_before_reset=lbr, bidirectional=True, dtype=np.float64, seed=3)
    x, h0, dy, _ = _problem(g, seed=3)
    lens = np.array([T, 3, 0])
    y, st = g.forward(x, g.State(h0), lengths=lens)
    dx, _ = g.backward(dy)
    for b, n in enumerate(lens):
        assert not y[n:, b].any() and not dx[n:, b].any()
        y_b, st_b = g.forward(x[:n, b:b + 1], g.State(h0[:, b:b + 1]), training=False) if n else (
            None, g.State(h0[:, b:b + 1]))
        if n:
            np.testing.assert_allclose(y[:n, b], y_b[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(st.h[:, b], st_b.h[:, 0], rtol=1e-12, atol=1e-14)


def test_float32_is_close_to_float64():
    g64 = fr.GRU(I, H, linear_before_reset=False, num_layers=2, dtype=np.float64, seed=4)
    g32 = fr.GRU(I, H, linear_before_reset=False, num_layers=2, dtype=np.float32, seed=4)
    for k in g32.params:
        g32.params[k][...] = g64.params[k]
    x, h0, dy, dh_T = _problem(g64, seed=4)
    y64, s64 = g64.forward(x, g64.State(h0))
    dx64, d64 = g64.backward(dy, g64.State(dh_T))
    y32, s32 = g32.forward(x, g32.State(h0))
    dx32, d32 = g32.backward(dy, g32.State(dh_T))
    assert y32.dtype == dx32.dtype == s32.h.dtype == np.float32
    for a, b in [(y32, y64), (s32.h, s64.h), (dx32, dx64), (d32.h, d64.h)] + [
            (g32.grads[k], g64.grads[k]) for k in g64.grads]:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_state_and_parameters():
    g = fr.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
    assert fr.GRU.State is fr.GRUState and fr.GRUState._fields == ("h",)
    assert g.initial_state(B).h.shape == (4, B, H)
    assert set(g.params) == {k + s for k in ("W_x", "W_h", "b", "b_hn")
                             for s in ("", "_reverse", "_l1", "_l1_reverse")}
    assert g.params["W_x_l1"].shape == (3 * H, 2 * H) and g.params["W_h"].shape == (3 * H, H)
    assert "b_hn" not in fr.GRU(I, H, linear_before_reset=False).params
    views = g.paper_params
    np.testing.assert_array_equal(views["W_hz_l1"], g.params["W_h_l1"][H:2 * H])
    views["b_n_reverse"][...] = 3.0
    assert (g.params["b_reverse"][2 * H:] == 3.0).all()
    assert set(g.paper_grads) == set(views)
    y, st = g(np.zeros((T, B, I), np.float32), training=False)
    assert y.shape == (T, B, 2 * H) and isinstance(st, fr.GRUState)
    assert repr(g) == ("GRU(input_size=5, hidden_size=7, linear_before_reset=True, num_layers=2, "
                       "bidirectional=True, dtype=float32)")


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="linear_before_reset must be a bool"):
        fr.GRU(I, H, linear_before_reset="yes")
    with pytest.raises(ValueError, match="hidden_size"):
        fr.GRU(I, 0)
    with pytest.raises(ValueError, match="reverse=True is for a unidirectional"):
        fr.GRU(I, H, bidirectional=True, reverse=True)
    g = fr.GRU(I, H, dtype=np.float64, seed=0)
    x = np.zeros((T, B, I))
    with pytest.raises(ValueError, match="feature size 5"):
        g.forward(np.zeros((T, B, 4)))
    with pytest.raises(ValueError, match=r"state.h must have shape \(1, 3, 7\)"):
        g.forward(x, g.State(np.zeros((1, 2, H))))
    with pytest.raises(TypeError, match=r"state must be None or an GRUState \(h\).*plain tuple.*"
                                        r"fr\.GRU\.State\(h=h0\)"):
        g.forward(x, (np.zeros((1, B, H)),))
    with pytest.raises(TypeError, match="state must be None or an GRUState"):
        g.forward(x, fr.RNNState(np.zeros((1, B, H)), np.zeros((1, B, H))))
    with pytest.raises(ValueError, match="training=True"):
        g.backward(np.zeros((T, B, H)))
    g.forward(x)
    with pytest.raises(ValueError, match=r"dstate.h must have shape \(1, 3, 7\)"):
        g.backward(None, g.State(np.zeros((B, H))))
    with pytest.raises(ValueError, match=r"dy must have shape|feature size 7"):
        g.backward(np.zeros((T, B, H + 1)))
    with pytest.raises(ValueError, match="lengths"):
        g.forward(x, lengths=[T + 1, 0, 0])
    g.params["b_hn"] = np.zeros(H + 1)
    with pytest.raises(ValueError, match=r"params\['b_hn'\] must have shape \(7,\)"):
        g.forward(x)
    del g.params["b_hn"]
    with pytest.raises(ValueError, match="b_hn"):
        g.forward(x)


def test_checkpoint_round_trip(tmp_path):
    g = fr.GRU(I, H, linear_before_reset=False, num_layers=2, dropout=0.1, dtype=np.float64, seed=5)
    fr.save(tmp_path / "gru.npz", g)
    back = fr.load(tmp_path / "gru.npz")
    assert isinstance(back, fr.GRU) and repr(back) == repr(g)
    x = np.random.default_rng(5).standard_normal((T, B, I))
    np.testing.assert_array_equal(back.forward(x, training=False)[0], g.forward(x, training=False)[0])
