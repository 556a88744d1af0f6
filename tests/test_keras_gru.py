"""Keras 3 interop for the GRU: fr.GRU <-> keras.layers.GRU (reset_after=True is
linear_before_reset=True, False is False; Bidirectional; go_backwards), against
Keras itself on the torch backend: outputs, final states, gradients (Keras'
through torch autograd) and masked sequences vs lengths."""
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import fusedrnn as fr  # noqa: E402

from conftest import assert_close  # noqa: E402
from test_keras import _keras_directions  # noqa: E402

assert keras.backend.backend() == "torch"

T, B, I, H = 6, 3, 4, 5
GATES = (1, 0, 2)  # Keras' (z, r, h) blocks from fr's (r, z, n), and back


def _tol(dtype, float64_path=False):
    """Keras on the torch backend runs an unmasked unidirectional reset_after=True
    GRU in float64 (through torch: float64_path); its generic loop (masked,
    reset_after=False) and Bidirectional compute partly in float32 even for float64
    layers (keras.ops' type promotion), as for the LSTM (see test_keras)."""
    if dtype == "float32":
        return 2e-5
    return 1e-10 if float64_path else 2e-6


def _keras_gru(reset_after, bidirectional=False, go_backwards=False, dtype="float64", **kw):
    layer = keras.layers.GRU(H, return_sequences=True, return_state=True, reset_after=reset_after,
                             go_backwards=go_backwards, dtype=dtype, **kw)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, None, I))
    rng = np.random.default_rng(0)
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(dtype)
                       for w in layer.get_weights()])
    return layer


def _gates(m):
    blocks = np.split(m, 3)
    return np.concatenate([blocks[k] for k in GATES])


def _run_keras(layer, x, h0, mask, w_y, w_h):
    dirs = _keras_directions(layer)
    D = len(dirs)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    kwargs = {} if mask is None else {"mask": torch.tensor(mask)}
    outs = layer(xt, initial_state=[h0t[d] for d in range(D)], **kwargs)
    y = outs[0]
    hs = torch.stack([outs[1 + d] for d in range(D)])
    if D == 1 and dirs[0].go_backwards:
        y = torch.flip(y, [1])
    energy = (torch.tensor(w_y) * y).sum() + (torch.tensor(w_h) * hs).sum()
    for v in layer.trainable_variables:
        v.value.grad = None
    energy.backward()
    grads = {"dx": xt.grad.numpy(), "dh0": h0t.grad.numpy()}
    for d, kl in enumerate(dirs):
        for name, v in zip(("kernel", "recurrent_kernel", "bias"), kl.trainable_weights):
            grads[f"{name}{d}"] = v.value.grad.numpy()
    return {"y": y.detach().numpy(), "h": hs.detach().numpy()}, grads


def _run_fr(layer, x, h0, lengths, w_y, w_h):
    """fr's outputs and gradients, the weight gradients in Keras' form."""
    layer.zero_grad()
    y, st = layer.forward(x, state=fr.GRU.State(h0), lengths=lengths)
    dx, dst = layer.backward(w_y, fr.GRU.State(w_h))
    grads = {"dx": dx, "dh0": dst.h}
    for d, sfx in enumerate(["", "_reverse"][:layer.num_directions]):
        g = layer.grads
        grads[f"kernel{d}"] = _gates(g["W_x" + sfx]).T
        grads[f"recurrent_kernel{d}"] = _gates(g["W_h" + sfx]).T
        db = _gates(g["b" + sfx])
        if layer.linear_before_reset:  # input bias: every row; recurrent: z, r and b_hn
            db = np.stack([db, np.concatenate([db[:2 * H], g["b_hn" + sfx]])])
        grads[f"bias{d}"] = db
    return {"y": y, "h": st.h}, grads


VARIANTS = {"plain": dict(), "go_backwards": dict(go_backwards=True),
            "bidirectional": dict(bidirectional=True)}


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_from_keras_matches_keras(reset_after, variant, masked, dtype):
    kl = _keras_gru(reset_after, dtype=dtype, **VARIANTS[variant])
    D = len(_keras_directions(kl))
    layer = fr.GRU.from_keras(kl)
    assert layer.batch_first and layer.dtype == np.dtype(dtype)
    assert layer.linear_before_reset == reset_after
    assert layer.reverse == (variant == "go_backwards") and layer.bidirectional == (D == 2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.uniform(-0.8, 0.8, (D, B, H)).astype(dtype)
    w_y = rng.standard_normal((B, T, D * H)).astype(dtype)
    w_h = rng.standard_normal((D, B, H)).astype(dtype)
    lengths = np.array([T, 2, 4]) if masked else None
    mask = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    if masked:
        w_y = w_y * mask[:, :, None]   # Keras' outputs at masked steps repeat the last one
    ko, kg = _run_keras(kl, x, h0, mask, w_y, w_h)
    fo, fg = _run_fr(layer, x, h0, lengths, w_y, w_h)
    tol = _tol(dtype, reset_after and D == 1 and not masked)
    if masked:
        ko["y"] = ko["y"] * mask[:, :, None]
        assert np.all(fo["y"][~mask] == 0)
    for k in ko:
        assert_close(fo[k], ko[k], tol, k)
    assert set(fg) == set(kg)
    for k in kg:
        assert_close(fg[k], kg[k], 10 * tol, k)


@pytest.mark.parametrize("reset_after", [True, False])
def test_use_bias_false(reset_after):
    kl = _keras_gru(reset_after, use_bias=False)
    layer = fr.GRU.from_keras(kl)
    assert not any(np.any(v) for k, v in layer.params.items() if k.startswith("b"))
    rng = np.random.default_rng(2)
    x, h0 = rng.standard_normal((B, T, I)), rng.uniform(-0.8, 0.8, (1, B, H))
    ko, _ = _run_keras(kl, x, h0, None, np.ones((B, T, H)), np.ones((1, B, H)))
    y, _ = layer.forward(x, fr.GRU.State(h0), training=False)
    assert_close(y, ko["y"], _tol("float64"), "y")


@pytest.mark.parametrize("lbr", [True, False])
@pytest.mark.parametrize("opts", [dict(), dict(reverse=True), dict(bidirectional=True),
                                  dict(dtype=np.float64, batch_first=True)])
def test_to_keras_round_trip(lbr, opts):
    layer = fr.GRU(I, H, linear_before_reset=lbr, seed=3, **opts)
    kl = layer.to_keras()
    assert isinstance(kl, keras.layers.Bidirectional) == layer.bidirectional
    for d in _keras_directions(kl):
        cfg = d.get_config()
        assert cfg["zero_output_for_mask"] is True and cfg["reset_after"] == lbr
    back = fr.GRU.from_keras(kl)
    assert back.linear_before_reset == lbr
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k], err_msg=k)
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
    tol = _tol(np.dtype(layer.dtype).name)
    assert_close(y, y_k, tol, "y")
    for d in range(layer.num_directions):
        assert_close(st.h[d], outs[1 + d].detach().numpy(), tol, "h")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("name", ["relu", "hard_sigmoid", "linear", "elu", "softsign",
                                  "softplus", "tanh", "sigmoid"])
def test_activations_map_both_ways(name, reset_after):
    """keras.layers.GRU(activation=name) and (recurrent_activation=name) against Keras
    on the torch backend, both ways; the function must be the one mapped."""
    x = np.random.default_rng(5).standard_normal((2, 6, I)).astype(np.float32)
    for kw, ours in ((dict(activation=name), "cell_activation"),
                     (dict(recurrent_activation=name), "gate_activation")):
        kl = keras.layers.GRU(H, return_sequences=True, reset_after=reset_after, **kw)
        kl.build((None, None, I))
        want = keras.ops.convert_to_numpy(kl(x))
        g = fr.GRU.from_keras(kl)
        default = "tanh" if ours == "cell_activation" else "sigmoid"
        assert getattr(g, ours) != default or name == default
        y, _ = g.forward(x, training=False)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        back = g.to_keras(return_state=False)
        assert back.get_config()[next(iter(kw))] == name
        np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)), want, rtol=1e-5,
                                   atol=1e-6)


def test_refusals():
    with pytest.raises(ValueError, match="recurrent_activation='gelu'"):
        fr.GRU.from_keras(_keras_gru(True, recurrent_activation="gelu"))
    with pytest.raises(ValueError, match="no accumulation_clip"):
        fr.GRU(I, H, accumulation_clip=1.0).to_keras()
    with pytest.raises(ValueError, match="the same for both directions"):
        fr.GRU(I, H, bidirectional=True, cell_activation=["tanh", "relu"]).to_keras()
    with pytest.raises(ValueError, match="activation for cell_activation=\\('leakyrelu', 0.1\\)"):
        fr.GRU(I, H, cell_activation=("leaky_relu", 0.1)).to_keras()
    with pytest.raises(ValueError, match="recurrent_dropout"):
        fr.GRU.from_keras(_keras_gru(True, recurrent_dropout=0.2))
    with pytest.raises(TypeError, match="expected a keras.layers.GRU"):
        fr.GRU.from_keras(keras.layers.LSTM(3))
    with pytest.raises(ValueError, match="no weights yet"):
        fr.GRU.from_keras(keras.layers.GRU(3))
    with pytest.raises(ValueError, match="num_layers=2"):
        fr.GRU(I, H, num_layers=2).to_keras()
    mixed = keras.layers.Bidirectional(keras.layers.GRU(H, reset_after=True),
                                       backward_layer=keras.layers.GRU(H, reset_after=False,
                                                                       go_backwards=True))
    mixed.build((None, None, I))
    with pytest.raises(ValueError, match="reset_after"):
        fr.GRU.from_keras(mixed)
