"""Keras 3 interop: fr.LSTM / fr.RNN <-> keras.layers.LSTM / SimpleRNN (and
Bidirectional of either), against Keras itself on the torch backend (no
TensorFlow): outputs, final states, gradients (Keras' through torch autograd:
the Keras variables are torch Parameters) and masked sequences vs lengths."""
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import fusedrnn as fr  # noqa: E402

from conftest import assert_close  # noqa: E402

assert keras.backend.backend() == "torch"

T, B, I, H = 6, 3, 4, 5


def keras_tol(kind, dtype, bidirectional=False, masked=False):
    """Keras as the oracle: its torch backend runs an unmasked float64 LSTM in
    float64 (through torch), but its generic loop (SimpleRNN, masked LSTM) and
    Bidirectional's concatenation compute in float32 even for float64 layers
    (keras.ops' type promotion)."""
    if dtype == "float32":
        return 2e-5
    return 1e-10 if kind == "lstm" and not bidirectional and not masked else 2e-6


def _keras_layer(kind, bidirectional=False, go_backwards=False, dtype="float64", **kw):
    cls = keras.layers.LSTM if kind == "lstm" else keras.layers.SimpleRNN
    layer = cls(H, return_sequences=True, return_state=True, go_backwards=go_backwards,
                dtype=dtype, **kw)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, None, I))
    rng = np.random.default_rng(0)
    # random weights everywhere (Keras initialises the bias to 0 / 1)
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(dtype)
                       for w in layer.get_weights()])
    return layer


def _keras_directions(layer):
    return ([layer.forward_layer, layer.backward_layer]
            if isinstance(layer, keras.layers.Bidirectional) else [layer])


def _problem(kind, D, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.uniform(-0.8, 0.8, (D, B, H)).astype(dtype)
    c0 = (0.5 * rng.standard_normal((D, B, H))).astype(dtype)
    w_y = rng.standard_normal((B, T, D * H)).astype(dtype)
    w_h = rng.standard_normal((D, B, H)).astype(dtype)
    w_c = rng.standard_normal((D, B, H)).astype(dtype)
    return x, h0, c0, w_y, w_h, w_c


def _run_keras(layer, kind, x, h0, c0, mask, w_y, w_h, w_c):
    """Keras forward and torch-autograd backward of E = sum(w_y y) + sum(w_h h) (+ sum(w_c c)).
    Returns y (B, T, D*H) in fusedrnn's time order, h, c (D, B, H), and the gradients."""
    dirs = _keras_directions(layer)
    D = len(dirs)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    init = []
    for d in range(D):
        init += [h0t[d], c0t[d]] if kind == "lstm" else [h0t[d]]
    kwargs = {} if mask is None else {"mask": torch.tensor(mask)}
    outs = layer(xt, initial_state=init, **kwargs)
    y = outs[0]
    per = 2 if kind == "lstm" else 1
    hs = torch.stack([outs[1 + per * d] for d in range(D)])
    cs = torch.stack([outs[2 + per * d] for d in range(D)]) if kind == "lstm" else None
    if D == 1 and dirs[0].go_backwards:
        y = torch.flip(y, [1])   # Keras returns a go_backwards sequence in reading order
    energy = (torch.tensor(w_y) * y).sum() + (torch.tensor(w_h) * hs).sum()
    if cs is not None:
        energy = energy + (torch.tensor(w_c) * cs).sum()
    for v in layer.trainable_variables:
        v.value.grad = None
    energy.backward()
    grads = {"dx": xt.grad.numpy(), "dh0": h0t.grad.numpy()}
    if kind == "lstm":
        grads["dc0"] = c0t.grad.numpy()
    for d, kl in enumerate(dirs):
        for name, v in zip(("kernel", "recurrent_kernel", "bias"), kl.trainable_weights):
            grads[f"{name}{d}"] = v.value.grad.numpy()
    out = {"y": y.detach().numpy(), "h": hs.detach().numpy()}
    if cs is not None:
        out["c"] = cs.detach().numpy()
    return out, grads


def _run_fr(layer, kind, x, h0, c0, lengths, w_y, w_h, w_c):
    state = fr.LSTMState(c0, h0) if kind == "lstm" else fr.RNNState(np.zeros_like(h0), h0)
    layer.zero_grad()
    y, st = layer.forward(x, state=state, lengths=lengths)
    dstate = (fr.LSTMState(w_c, w_h) if kind == "lstm" else fr.RNNState(None, w_h))
    dx, dst = layer.backward(w_y, dstate)
    out = {"y": y, "h": st[1]}
    grads = {"dx": dx, "dh0": dst[1]}
    if kind == "lstm":
        out["c"] = st[0]
        grads["dc0"] = dst[0]
    names = ("W_x", "W_v", "b") if kind == "lstm" else ("W_x", "W_r", "theta_s")
    for d, sfx in enumerate(["", "_reverse"][:layer.num_directions]):
        grads[f"kernel{d}"] = layer.grads[names[0] + sfx].T
        grads[f"recurrent_kernel{d}"] = layer.grads[names[1] + sfx].T
        grads[f"bias{d}"] = layer.grads[names[2] + sfx]
    return out, grads


VARIANTS = {
    "plain": dict(),
    "go_backwards": dict(go_backwards=True),
    "bidirectional": dict(bidirectional=True),
}


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_from_keras_matches_keras(kind, variant, masked, dtype):
    kl = _keras_layer(kind, dtype=dtype, **VARIANTS[variant])
    D = len(_keras_directions(kl))
    layer = (fr.LSTM if kind == "lstm" else fr.RNN).from_keras(kl)
    assert layer.batch_first and layer.dtype == np.dtype(dtype)
    assert layer.reverse == (variant == "go_backwards")
    assert layer.bidirectional == (D == 2)
    x, h0, c0, w_y, w_h, w_c = _problem(kind, D, dtype)
    lengths = np.array([T, 2, 4]) if masked else None
    mask = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    if masked:
        w_y = w_y * mask[:, :, None]   # Keras' outputs at masked steps repeat the last one
    ko, kg = _run_keras(kl, kind, x, h0, c0, mask, w_y, w_h, w_c)
    fo, fg = _run_fr(layer, kind, x, h0, c0, lengths, w_y, w_h, w_c)
    tol = keras_tol(kind, dtype, D == 2, masked)
    if masked:
        ko["y"] = ko["y"] * mask[:, :, None]
        assert np.all(fo["y"][~mask] == 0)
    for k in ko:
        assert_close(fo[k], ko[k], tol, k)
    assert set(fg) == set(kg)
    for k in kg:
        assert_close(fg[k], kg[k], 10 * tol, k)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_use_bias_false(kind):
    kl = _keras_layer(kind, use_bias=False)
    layer = (fr.LSTM if kind == "lstm" else fr.RNN).from_keras(kl)
    assert not np.any(layer.params["b" if kind == "lstm" else "theta_s"])
    x, h0, c0, w_y, w_h, w_c = _problem(kind, 1, "float64")
    ko, _ = _run_keras(kl, kind, x, h0, c0, None, w_y, w_h, w_c)
    fo, _ = _run_fr(layer, kind, x, h0, c0, None, w_y, w_h, w_c)
    assert_close(fo["y"], ko["y"], keras_tol(kind, "float64"), "y")


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("opts", [dict(), dict(reverse=True), dict(bidirectional=True),
                                  dict(dtype=np.float64, batch_first=True)])
def test_to_keras_round_trip(kind, opts):
    cls = fr.LSTM if kind == "lstm" else fr.RNN
    extra = dict(peepholes=None) if kind == "lstm" else {}
    layer = cls(I, H, seed=3, **extra, **opts)
    kl = layer.to_keras()
    assert isinstance(kl, keras.layers.Bidirectional) == layer.bidirectional
    for d in _keras_directions(kl):
        assert d.get_config()["zero_output_for_mask"] is True
    back = cls.from_keras(kl)
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k])
    assert back.reverse == layer.reverse and back.bidirectional == layer.bidirectional
    # the Keras layer computes this layer's function, padding included
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, I)).astype(layer.dtype)
    lengths = np.array([T, 1, 3])
    mask = np.arange(T)[None, :] < lengths[:, None]
    outs = kl(x, mask=mask)
    y_k = outs[0].detach().numpy()
    if layer.reverse:
        y_k = y_k[:, ::-1]
    y, st = layer.forward(x if layer.batch_first else x.transpose(1, 0, 2), lengths=lengths,
                          training=False)
    y = y if layer.batch_first else y.transpose(1, 0, 2)
    tol = keras_tol(kind, np.dtype(layer.dtype).name, layer.bidirectional, masked=True)
    assert_close(y, y_k, tol, "y")
    per = 2 if kind == "lstm" else 1
    for d in range(layer.num_directions):
        assert_close(st[1][d], outs[1 + per * d].detach().numpy(), tol, "h")
    short = layer.to_keras(return_sequences=False, return_state=False, name="mine")
    assert short.name == "mine"
    y_last = short(x).detach().numpy()
    assert y_last.shape == (B, layer.num_directions * H)


def test_refused_by_name():
    bad = [
        # relu, hard_sigmoid, ... map (tests/test_warping_kernel.py); gelu has no equivalent
        (keras.layers.LSTM(H, activation="gelu"), "activation='gelu'"),
        (keras.layers.LSTM(H, recurrent_activation="selu"), "recurrent_activation='selu'"),
        (keras.layers.LSTM(H, dropout=0.2), "dropout=0.2"),
        (keras.layers.LSTM(H, recurrent_dropout=0.1), "recurrent_dropout=0.1"),
        (keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode="sum"), "merge_mode='sum'"),
        (keras.layers.LSTM(H, dtype="mixed_float16"), "float16"),
    ]
    for kl, what in bad:
        kl.build((None, None, I))
        with pytest.raises(ValueError, match=what.replace("(", r"\(")):
            fr.LSTM.from_keras(kl)
    rnn_gelu = keras.layers.SimpleRNN(H, activation="gelu")
    rnn_gelu.build((None, None, I))
    with pytest.raises(ValueError, match="activation='gelu'"):
        fr.RNN.from_keras(rnn_gelu)
    with pytest.raises(ValueError, match="build it first"):
        fr.LSTM.from_keras(keras.layers.LSTM(H))
    gru = keras.layers.GRU(H)
    gru.build((None, None, I))
    with pytest.raises(TypeError, match="keras.layers.LSTM"):
        fr.LSTM.from_keras(gru)
    with pytest.raises(TypeError, match="keras.layers.SimpleRNN"):
        fr.RNN.from_keras(_keras_layer("lstm"))
    with pytest.raises(TypeError, match="Bidirectional of a keras.layers.SimpleRNN"):
        fr.RNN.from_keras(_keras_layer("lstm", bidirectional=True))
    for layer, what in ((fr.LSTM(I, H), "peepholes"), (fr.LSTM(I, H, None, proj_size=2), "proj_size"),
                        (fr.LSTM(I, H, None, coupled_gates=True), "coupled gates"),
                        (fr.LSTM(I, H, None, num_layers=2), "num_layers=2"),
                        (fr.RNN(I, H, state_feedback=True), "state feedback")):
        with pytest.raises(ValueError, match=what):
            layer.to_keras()
