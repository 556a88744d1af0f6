"""The fused kernel's selectable warping functions (docs/equations.md §9): every
ONNX activation as the LSTM's G_c (gates), G_d of the data update and G_d of the
readout, and as the RNN's G (with and without the accumulation clip), forward and
backward, against the NumPy oracle (float64 tight, float32) and against central
finite differences of the kernel's own float64 forward; fr.RNN(activation="relu")
against torch.nn.RNN(nonlinearity="relu")."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference
from fusedrnn.core._layer import suffix

from conftest import TOL, assert_close, central_differences

ACTIVATIONS = ["sigmoid", "tanh", "relu", ("hard_sigmoid", 0.3, 0.4), ("affine", 0.7, 0.2),
               ("leaky_relu", 0.1), ("thresholded_relu", 0.2), ("scaled_tanh", 1.3, 0.6),
               ("elu", 0.8), "softsign", "softplus"]
IDS = [a if isinstance(a, str) else a[0] for a in ACTIVATIONS]
LSTM_PLACES = ["gate_activation", "cell_activation", "output_activation"]
LENGTHS = np.array([5, 3, 0, 4], np.int64)


def _cells(layer):
    D = layer.num_directions
    return [{name: layer.params[name + suffix(l, d)].astype(np.float64)
             for name in layer._cell_param_shapes(layer._cell_input_size(l))}
            for l in range(layer.num_layers) for d in range(D)]


def _problem(layer, T, B, seed=3):
    rng = np.random.default_rng(seed)
    LD, D, H, R = (layer.num_layers * layer.num_directions, layer.num_directions,
                   layer.hidden_size, layer.output_size)
    dt = layer.dtype
    return dict(x=rng.standard_normal((T, B, layer.input_size)).astype(dt),
                s0=(0.5 * rng.standard_normal((LD, B, H))).astype(dt),
                o0=(0.5 * rng.standard_normal((LD, B, R))).astype(dt),
                dy=rng.standard_normal((T, B, D * R)).astype(dt),
                ds_T=rng.standard_normal((LD, B, H)).astype(dt),
                do_T=rng.standard_normal((LD, B, R)).astype(dt))


def _check_vs_oracle(layer, options, lengths=LENGTHS, T=5, B=4):
    pr = _problem(layer, T, B)
    State = layer.State
    layer.zero_grad()
    y, st = layer.forward(pr["x"], state=State(pr["s0"], pr["o0"]), lengths=lengths)
    dx, dst = layer.backward(pr["dy"], State(pr["ds_T"], pr["do_T"]))
    f = lambda a: np.asarray(a, np.float64)
    net_f = (reference.lstm_network_forward if isinstance(layer, fr.LSTM)
             else reference.rnn_network_forward)
    net_b = (reference.lstm_network_backward if isinstance(layer, fr.LSTM)
             else reference.rnn_network_backward)
    y_r, s_r, o_r, cache = net_f(f(pr["x"]), _cells(layer), f(pr["s0"]), f(pr["o0"]),
                                 bidirectional=layer.bidirectional, lengths=lengths, **options)
    dx_r, ds0_r, do0_r, grads_r = net_b(f(pr["dy"]), f(pr["ds_T"]), f(pr["do_T"]), cache)
    tol = TOL[layer.dtype.type]
    for a, b, what in [(y, y_r, "y"), (st[0], s_r, "s_T"), (st[1], o_r, "o_T"), (dx, dx_r, "dx"),
                       (dst[0], ds0_r, "ds0"), (dst[1], do0_r, "do0")]:
        assert_close(a, b, tol, what)
    assert_cell_grads(layer, grads_r, tol)
    return y_r


def assert_cell_grads(layer, grads_r, tol):
    """The layer's gradients against the oracle's list of per-cell gradient dicts."""
    D = layer.num_directions
    for i, g_r in enumerate(grads_r):
        l, d = divmod(i, D)
        for name, g in g_r.items():
            assert_close(layer.grads[name + suffix(l, d)], g, tol, f"grad {name}{suffix(l, d)}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("place", LSTM_PLACES)
def test_lstm_warping_matches_oracle(place, act, dtype):
    layer = fr.LSTM(3, 5, dtype=dtype, seed=7, **{place: act})
    y_r = _check_vs_oracle(layer, {place: act})
    if act != ("sigmoid" if place == "gate_activation" else "tanh"):  # the choice must matter
        y_default = _check_vs_oracle(fr.LSTM(3, 5, dtype=dtype, seed=7), {})
        assert np.abs(y_default - y_r).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("clip", [None, 0.6], ids=["noclip", "clip"])
def test_rnn_warping_matches_oracle(act, clip, dtype):
    layer = fr.RNN(3, 5, dtype=dtype, seed=11, activation=act, accumulation_clip=clip)
    for v in layer.params.values():  # larger weights, so that the clip acts
        v *= 2.0
    y_r = _check_vs_oracle(layer, dict(activation=act, accumulation_clip=clip))
    if clip is not None:
        unclipped = fr.RNN(3, 5, dtype=dtype, seed=11, activation=act)
        for k, v in layer.params.items():
            unclipped.params[k][...] = v
        assert np.abs(_check_vs_oracle(unclipped, dict(activation=act)) - y_r).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_every_option_with_general_warping(dtype):
    """Peepholes (diagonal and full), coupled gates, both clips, projection, two
    layers bidirectional with one activation per direction, ONNX's f, g, h all different."""
    opts = dict(gate_activation=[("hard_sigmoid", 0.25, 0.5), "sigmoid"],
                cell_activation=["softsign", ("scaled_tanh", 1.2, 0.8)],
                output_activation=[("elu", 0.7), "relu"], cell_clip=1.5, accumulation_clip=1.2)
    for peep in ("diagonal", "full"):
        layer = fr.LSTM(3, 5, peep, num_layers=2, bidirectional=True, coupled_gates=True,
                        dtype=dtype, seed=5, **opts)
        for v in layer.params.values():
            v *= 2.0
        _check_vs_oracle(layer, dict(opts, coupled_gates=True))
    layer = fr.LSTM(3, 5, None, proj_size=2, dtype=dtype, seed=6, gate_activation="softplus",
                    cell_activation=("leaky_relu", 0.2), output_activation="softsign")
    _check_vs_oracle(layer, dict(gate_activation="softplus", cell_activation=("leaky_relu", 0.2),
                                 output_activation="softsign"))
    rnn = fr.RNN(3, 5, True, num_layers=2, bidirectional=True, dtype=dtype, seed=8,
                 activation=["relu", ("elu", 0.5)], accumulation_clip=0.8)
    _check_vs_oracle(rnn, dict(activation=["relu", ("elu", 0.5)], accumulation_clip=0.8))


def _fd_check(layer, T=4, B=2):
    """The kernel's float64 gradients of E = <dy, y> + <ds_T, s_T> + <do_T, o_T> against
    central differences of its own forward, for every parameter and the input."""
    pr = _problem(layer, T, B, seed=5)
    State = layer.State

    def loss():
        y, st = layer.forward(pr["x"], state=State(pr["s0"], pr["o0"]), training=False)
        return float(np.sum(y * pr["dy"]) + np.sum(st[0] * pr["ds_T"]) + np.sum(st[1] * pr["do_T"]))

    layer.zero_grad()
    layer.forward(pr["x"], state=State(pr["s0"], pr["o0"]))
    dx, _ = layer.backward(pr["dy"], State(pr["ds_T"], pr["do_T"]))
    for name, p in layer.params.items():
        assert_close(layer.grads[name], central_differences(loss, p), 1e-6, f"d{name}")
    assert_close(dx, central_differences(loss, pr["x"]), 1e-6, "dx")


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("place", LSTM_PLACES + ["rnn", "rnn_clip"])
def test_warping_backward_finite_differences(place, act):
    if place.startswith("rnn"):
        layer = fr.RNN(3, 4, True, dtype=np.float64, seed=2, activation=act,
                       accumulation_clip=0.7 if place == "rnn_clip" else None)
    else:
        layer = fr.LSTM(3, 4, dtype=np.float64, seed=2, **{place: act})
    _fd_check(layer)


def test_layer_options_are_read_only_plain_and_checked():
    layer = fr.LSTM(2, 3, gate_activation=("HardSigmoid", 0.2), cell_activation="Leaky_Relu",
                    bidirectional=True, output_activation=["tanh", "relu"])
    assert layer.gate_activation == ("hardsigmoid", 0.2, 0.5)
    assert layer.cell_activation == ("leakyrelu", 0.01)
    assert layer.output_activation == ("tanh", "relu")
    assert "output_activation=('tanh', 'relu')" in repr(layer)
    with pytest.raises(AttributeError, match="read-only"):
        layer.gate_activation = "tanh"
    rnn = fr.RNN(2, 3, activation="relu", accumulation_clip=2.0)
    assert (rnn.activation, rnn.accumulation_clip) == ("relu", 2.0)
    with pytest.raises(AttributeError, match="read-only"):
        rnn.activation = "tanh"
    with pytest.raises(ValueError, match="activation: unknown activation 'gelu'"):
        fr.RNN(2, 3, activation="gelu")
    with pytest.raises(TypeError, match="activation must be an activation name"):
        fr.RNN(2, 3, activation=3)
    with pytest.raises(ValueError, match="list of 2"):
        fr.LSTM(2, 3, bidirectional=True, gate_activation=["sigmoid"] * 3)
    with pytest.raises(ValueError, match="alpha of LeakyRelu must be a finite number"):
        fr.LSTM(2, 3, cell_activation=("leaky_relu", float("nan")))
    with pytest.raises(ValueError, match="accumulation_clip must be a finite number > 0"):
        fr.RNN(2, 3, accumulation_clip=-1.0)


def test_checkpoint_keeps_warping(tmp_path):
    layer = fr.LSTM(3, 4, bidirectional=True, gate_activation=("hard_sigmoid", 0.3, 0.4),
                    cell_activation=["relu", ("elu", 0.5)], dtype=np.float64, seed=1)
    rnn = fr.RNN(3, 4, activation=("leaky_relu", 0.2), accumulation_clip=0.9, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    for model in (layer, rnn):
        fr.checkpoint.save(tmp_path / "m.npz", model)
        back = fr.checkpoint.load(tmp_path / "m.npz")
        for k in ("gate_activation", "cell_activation", "output_activation", "activation",
                  "accumulation_clip"):
            assert getattr(back, k, None) == getattr(model, k, None), k
        np.testing.assert_array_equal(back.forward(x, training=False)[0],
                                      model.forward(x, training=False)[0])


def test_stream_uses_the_warping():
    rnn = fr.RNN(3, 4, activation="softplus", accumulation_clip=0.5, seed=3)
    lstm = fr.LSTM(3, 4, gate_activation="hard_sigmoid", output_activation="softsign", seed=3)
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype(np.float32)
    for layer in (rnn, lstm):
        whole, _ = layer.forward(x, training=False)
        st = layer.stream(2)
        np.testing.assert_allclose(np.stack([st.step(f) for f in x]), whole, rtol=1e-5,
                                   atol=1e-6)


# -- against torch -------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_relu_matches_torch(bidirectional):
    torch.manual_seed(0)
    m = torch.nn.RNN(3, 5, num_layers=2, nonlinearity="relu", bidirectional=bidirectional,
                     dtype=torch.float64)
    layer = fr.RNN.from_torch(m)
    assert layer.activation == "relu"
    x = np.random.default_rng(2).standard_normal((6, 4, 3))
    dy = np.random.default_rng(3).standard_normal((6, 4, 5 * (2 if bidirectional else 1)))
    xt = torch.tensor(x, requires_grad=True)
    yt, ht = m(xt)
    (yt * torch.tensor(dy)).sum().backward()
    y, st = layer.forward(x)
    dx, _ = layer.backward(dy)
    assert_close(y, yt.detach().numpy(), 1e-10, "y")
    assert_close(st.r, ht.detach().numpy(), 1e-10, "h_T")
    assert_close(dx, xt.grad.numpy(), 1e-10, "dx")
    for l in range(2):
        for d in range(layer.num_directions):
            t_sfx = f"_l{l}" + ("_reverse" if d else "")
            assert_close(layer.grads["W_x" + suffix(l, d)],
                         getattr(m, "weight_ih" + t_sfx).grad.numpy(), 1e-10, "dW_x")
            assert_close(layer.grads["W_r" + suffix(l, d)],
                         getattr(m, "weight_hh" + t_sfx).grad.numpy(), 1e-10, "dW_r")
            assert_close(layer.grads["theta_s" + suffix(l, d)],
                         getattr(m, "bias_ih" + t_sfx).grad.numpy(), 1e-10, "dtheta_s")
    back = layer.to_torch()
    assert back.nonlinearity == "relu"
    np.testing.assert_allclose(back(torch.tensor(x))[0].detach().numpy(), yt.detach().numpy(),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="nonlinearity is 'tanh' or 'relu'"):
        fr.RNN(3, 5, activation="elu").to_torch()
    with pytest.raises(ValueError, match="no accumulation_clip"):
        fr.RNN(3, 5, accumulation_clip=1.0).to_torch()
    with pytest.raises(ValueError, match="warping functions other than sigmoid and tanh"):
        fr.LSTM(3, 5, None, cell_activation="relu").to_torch()


def test_torch_module_rnn_relu_matches_torch():
    import fusedrnn.torch as frt
    torch.manual_seed(1)
    m = torch.nn.RNN(3, 4, nonlinearity="relu", batch_first=True, dtype=torch.float64)
    ours = frt.RNN.from_torch(m)
    assert "activation='relu'" in ours.extra_repr()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, _ = m(x1)
    y2, _ = ours(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-12)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.W_r.grad, m.weight_hh_l0.grad, rtol=1e-10, atol=1e-12)
    mod = frt.RNN(3, 4, activation=("elu", 0.5), accumulation_clip=1.0, dtype=np.float64)
    assert mod.to_fusedrnn().activation == ("elu", 0.5)
    x3 = x.transpose(0, 1).clone().requires_grad_()
    y3, _ = mod(x3)
    y3.sum().backward()  # the operator's backward runs the general path
    layer = mod.to_fusedrnn()
    y_fr, _ = layer.forward(x3.detach().numpy())
    dx_fr, _ = layer.backward(np.ones_like(y_fr))
    np.testing.assert_allclose(y3.detach().numpy(), y_fr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x3.grad.numpy(), dx_fr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_quantized_lstm_keeps_the_warping(precision):
    """A quantized LSTM computes its float layer's warping functions (vs the reduced oracle)."""
    opts = dict(gate_activation=("hard_sigmoid", 0.25, 0.5), cell_activation="softsign",
                output_activation=("leaky_relu", 0.1))
    layer = fr.LSTM(3, 5, seed=4, **opts)
    q = layer.quantize(precision)
    assert (q.gate_activation, q.cell_activation) == (layer.gate_activation, layer.cell_activation)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    y_q, _ = q.forward(x)
    y_f, _ = layer.forward(x, training=False)
    y_d, _ = fr.LSTM(3, 5, seed=4).quantize(precision).forward(x)
    assert np.abs(y_q - y_f).max() < 0.05          # reduced products, the same functions
    assert np.abs(y_q - y_d).max() > 0.05          # not the default ones


# -- Keras --------------------------------------------------------------------------

KERAS_NAMES = ["tanh", "sigmoid", "relu", "hard_sigmoid", "linear", "elu", "softsign", "softplus"]


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_activations_map_both_ways(name, monkeypatch):
    """Keras' activation names as warping functions, vs Keras on the torch backend:
    outputs of SimpleRNN(activation=name) and LSTM(activation=name,
    recurrent_activation=name) both ways."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(5).standard_normal((2, 6, 3)).astype(np.float32)
    for k_layer in (keras.layers.SimpleRNN(4, activation=name, return_sequences=True),
                    keras.layers.LSTM(4, activation=name, recurrent_activation=name,
                                      return_sequences=True)):
        k_layer.build((None, None, 3))
        want = keras.ops.convert_to_numpy(k_layer(x))
        ours = (fr.RNN if isinstance(k_layer, keras.layers.SimpleRNN) else fr.LSTM).from_keras(k_layer)
        y, _ = ours.forward(x, training=False)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        back = ours.to_keras(return_state=False)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)), want, rtol=1e-5, atol=1e-6)


def test_keras_refuses_what_it_cannot_name(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    k_layer = keras.layers.SimpleRNN(4, activation="gelu")
    k_layer.build((None, None, 3))
    with pytest.raises(ValueError, match="activation='gelu'"):
        fr.RNN.from_keras(k_layer)
    with pytest.raises(ValueError, match="activation for activation=\\('leakyrelu', 0.1\\)"):
        fr.RNN(3, 4, activation=("leaky_relu", 0.1)).to_keras()
    with pytest.raises(ValueError, match="the same for both directions and for the cell input"):
        fr.LSTM(3, 4, None, cell_activation="relu").to_keras()
