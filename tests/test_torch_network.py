"""Issue 3, group 2: stacked, bidirectional, projected LSTMs and RNNs with
variable lengths against torch (float64): outputs, final states, all gradients."""
import numpy as np
import pytest

import fusedrnn as fr

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-11)


def _run_torch(module, x, h0, c0, lengths, dy, dh, dc):
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = None if c0 is None else torch.tensor(c0, requires_grad=True)
    inp = xt if lengths is None else pack_padded_sequence(xt, torch.tensor(lengths),
                                                          enforce_sorted=False)
    state = h0t if c0t is None else (h0t, c0t)
    out, st = module(inp, state)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    hT, cT = (st, None) if c0t is None else st
    loss = (out * torch.tensor(dy)).sum() + (hT * torch.tensor(dh)).sum()
    if cT is not None:
        loss = loss + (cT * torch.tensor(dc)).sum()
    loss.backward()
    res = {"y": out, "hT": hT, "dx": xt.grad, "dh0": h0t.grad}
    if cT is not None:
        res.update(cT=cT, dc0=c0t.grad)
    return {k: v.detach().numpy() for k, v in res.items()}


def _grads_match(layer, module):
    for name, p in module.named_parameters():
        kind, _, rest = name.partition("_l")
        layer_idx, _, rev = rest.partition("_")
        sfx = ("" if layer_idx == "0" else f"_l{layer_idx}") + ("_reverse" if rev else "")
        ours = {"weight_ih": "W_x", "weight_hh": "W_v" if "b" in layer.grads else "W_r",
                "weight_hr": "W_qv", "bias_ih": "b" if "b" in layer.grads else "theta_s",
                "bias_hh": "b" if "b" in layer.grads else "theta_s"}[kind]
        np.testing.assert_allclose(layer.grads[ours + sfx], p.grad.numpy(), **TOL, err_msg=name)


CASES = [  # (num_layers, bidirectional, proj_size, with lengths)
    (1, False, 3, False),
    (3, False, 0, False),
    (1, True, 0, False),
    (2, True, 3, True),
    (3, True, 0, True),
    (1, False, 0, True),
]


@pytest.mark.parametrize("L,bidir,P,with_lengths", CASES)
def test_lstm_network_matches_torch(L, bidir, P, with_lengths):
    T, B, I, H = 7, 4, 5, 6
    torch.manual_seed(L * 10 + P)
    module = torch.nn.LSTM(I, H, num_layers=L, bidirectional=bidir, proj_size=P, dtype=torch.float64)
    layer = fr.LSTM.from_torch(module)
    D, R = (2 if bidir else 1), (P or H)
    assert layer.proj_size == P and layer.num_layers == L and layer.bidirectional == bidir
    rng = np.random.default_rng(L + P)
    x = rng.standard_normal((T, B, I))
    h0, dh = rng.standard_normal((2, L * D, B, R))
    c0, dc = rng.standard_normal((2, L * D, B, H))
    dy = rng.standard_normal((T, B, D * R))
    lengths = np.array([7, 3, 1, 5]) if with_lengths else None
    if lengths is not None:  # torch gives zero gradient to padded outputs; so must we
        dy = dy * (np.arange(T)[:, None] < lengths[None, :])[:, :, None]

    ref = _run_torch(module, x, h0, c0, lengths, dy, dh, dc)
    y, st = layer.forward(x, state=fr.LSTMState(c0, h0), lengths=lengths)
    dx, dst = layer.backward(dy, fr.LSTMState(dc, dh))
    np.testing.assert_allclose(y, ref["y"], **TOL)
    np.testing.assert_allclose(st.v, ref["hT"], **TOL)
    np.testing.assert_allclose(st.s, ref["cT"], **TOL)
    np.testing.assert_allclose(dx, ref["dx"], **TOL)
    np.testing.assert_allclose(dst.v, ref["dh0"], **TOL)
    np.testing.assert_allclose(dst.s, ref["dc0"], **TOL)
    _grads_match(layer, module)


@pytest.mark.parametrize("L,bidir,with_lengths", [(3, False, False), (2, True, True), (1, True, True)])
def test_rnn_network_matches_torch(L, bidir, with_lengths):
    T, B, I, H = 6, 3, 4, 5
    torch.manual_seed(L)
    module = torch.nn.RNN(I, H, num_layers=L, bidirectional=bidir, dtype=torch.float64)
    layer = fr.RNN.from_torch(module)
    D = 2 if bidir else 1
    rng = np.random.default_rng(L)
    x = rng.standard_normal((T, B, I))
    h0, dh = rng.standard_normal((2, L * D, B, H))
    dy = rng.standard_normal((T, B, D * H))
    lengths = np.array([2, 6, 4]) if with_lengths else None
    if lengths is not None:
        dy = dy * (np.arange(T)[:, None] < lengths[None, :])[:, :, None]
    ref = _run_torch(module, x, h0, None, lengths, dy, dh, None)
    y, st = layer.forward(x, state=fr.RNNState(np.zeros_like(h0), h0), lengths=lengths)
    dx, dst = layer.backward(dy, fr.RNNState(None, dh))
    np.testing.assert_allclose(y, ref["y"], **TOL)
    np.testing.assert_allclose(st.r, ref["hT"], **TOL)
    np.testing.assert_allclose(dx, ref["dx"], **TOL)
    np.testing.assert_allclose(dst.r, ref["dh0"], **TOL)
    _grads_match(layer, module)


def test_network_to_torch_round_trip():
    layer = fr.LSTM(4, 6, peepholes=None, proj_size=2, num_layers=2, bidirectional=True,
                    dtype=np.float64, seed=1)
    module = layer.to_torch()
    back = fr.LSTM.from_torch(module)
    assert set(back.params) == set(layer.params)
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k])
    x = np.random.default_rng(0).standard_normal((5, 3, 4))
    with torch.no_grad():
        y_t = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(layer.forward(x, training=False)[0], y_t, **TOL)


def test_dropout_is_seeded_and_matches_masks():
    """Dropout between layers: same seed, same masks, same outputs; the masks
    scale by 1/(1-p) and inference uses none."""
    a = fr.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, seed=3)
    b = fr.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, seed=3)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    ya, _ = a.forward(x)
    yb, _ = b.forward(x)
    np.testing.assert_array_equal(ya, yb)
    mask = a._tape.masks[0]
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < mask.mean() < 2
    y_inf, _ = a.forward(x, training=False)
    c = fr.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=3)  # same weights, no dropout
    np.testing.assert_array_equal(y_inf, c.forward(x, training=False)[0])
    assert not np.allclose(ya, y_inf)
