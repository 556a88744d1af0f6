"""The oracle's warping functions (docs/equations.md §9): every ONNX recurrent
activation as the LSTM's G_c / G_d and the RNN's G, and the RNN's accumulation
clip (1.9)-(1.10).

- each function's derivative against central differences of the function;
- the LSTM and RNN oracles' backward against central differences of their forward,
  in float64, for every parameter, the input and the initial states, with each
  function in each place (gates, cell input, output; the RNN's G), clips, lengths
  and the reverse direction;
- the forward against ONNX Runtime's LSTM and RNN operators with the same
  activations, alpha and beta (one set per direction), which also pins down which
  of ONNX's f, g, h is which option;
- the spelling of activations (names, tuples, per-direction lists) and its errors.
"""
from __future__ import annotations

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn.core import _activations as acts
from fusedrnn import reference as ref

# every function, with parameters away from the defaults where it takes them
FUNCTIONS = [("sigmoid",), ("tanh",), ("relu",), ("hardsigmoid", 0.3, 0.45), ("affine", 0.7, 0.2),
             ("leakyrelu", 0.15), ("thresholdedrelu", 0.25), ("scaledtanh", 1.3, 0.8),
             ("elu", 0.6), ("softsign",), ("softplus",)]
IDS = [f[0] for f in FUNCTIONS]
KINKS = {"relu": lambda p: [0.0], "leakyrelu": lambda p: [0.0], "elu": lambda p: [0.0],
         "thresholdedrelu": lambda p: [p[1]],
         "hardsigmoid": lambda p: [(0 - p[2]) / p[1], (1 - p[2]) / p[1]]}
EPS = 1e-6


@pytest.mark.parametrize("f", FUNCTIONS, ids=IDS)
def test_derivative_matches_central_differences(f):
    rng = np.random.default_rng(0)
    a = rng.uniform(-4, 4, 2000)
    for k in KINKS.get(f[0], lambda p: [])(f):
        a = a[np.abs(a - k) > 1e-3]
    fd = (ref.warp(f, a + EPS) - ref.warp(f, a - EPS)) / (2 * EPS)
    np.testing.assert_allclose(ref.warp_grad(f, a), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("f", FUNCTIONS, ids=IDS)
def test_values_and_dtype(f, dt):
    """Written-out definitions, in the input's dtype, finite for large |a|."""
    a = np.array([-800.0, -3.0, -0.5, 0.0, 0.4, 2.0, 800.0], dt)
    name, p = f[0], f[1:]
    al, be = (list(p) + [0.0, 0.0])[:2]
    x = a.astype(np.float64)
    want = {
        "sigmoid": lambda: 1 / (1 + np.exp(-np.clip(x, -700, 700))),
        "tanh": lambda: np.tanh(x), "relu": lambda: np.maximum(x, 0),
        "hardsigmoid": lambda: np.clip(al * x + be, 0, 1), "affine": lambda: al * x + be,
        "leakyrelu": lambda: np.where(x >= 0, x, al * x),
        "thresholdedrelu": lambda: np.where(x > al, x, 0), "scaledtanh": lambda: al * np.tanh(be * x),
        "elu": lambda: np.where(x >= 0, x, al * (np.exp(np.minimum(x, 0)) - 1)),
        "softsign": lambda: x / (1 + np.abs(x)), "softplus": lambda: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
    }[name]()
    got = ref.warp(f, a)
    assert got.dtype == dt and ref.warp_grad(f, a).dtype == dt
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(ref.warp_grad(f, a)))
    tol = 1e-6 if dt == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ---- backward of the cells against finite differences ----------------------------------

T, B, I, H = 3, 2, 3, 3


def _lstm_problem(rng):
    w = lambda *s: 0.6 * rng.standard_normal(s)
    p = {"W_x": w(4 * H, I), "W_v": w(4 * H, H), "b": w(4 * H), "w_s": w(3, H)}
    return p, {"x": rng.standard_normal((T, B, I)), "s0": 0.5 * rng.standard_normal((B, H)),
               "o0": 0.5 * rng.standard_normal((B, H))}


def _rnn_problem(rng, feedback):
    w = lambda *s: 0.6 * rng.standard_normal(s)
    p = {"W_x": w(H, I), "W_r": w(H, H), "theta_s": w(H)}
    if feedback:
        p["W_s"] = 0.3 * w(H, H)
    return p, {"x": rng.standard_normal((T, B, I)), "s0": 0.5 * rng.standard_normal((B, H)),
               "o0": 0.5 * rng.standard_normal((B, H))}


def _check_fd(forward, backward, params, inputs, opts, rng):
    weights = [rng.standard_normal(s) for s in ((T, B, H), (B, H), (B, H))]

    def loss():
        y, s_T, o_T, _ = forward(inputs["x"], params, inputs["s0"], inputs["o0"], **opts)
        return sum(float(np.sum(w * o)) for w, o in zip(weights, (y, s_T, o_T)))

    _, _, _, cache = forward(inputs["x"], params, inputs["s0"], inputs["o0"], **opts)
    dx, ds0, do0, grads = backward(*weights, cache)
    analytic = dict(grads, x=dx, s0=ds0, o0=do0)
    for name, arr in list(params.items()) + list(inputs.items()):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + EPS
            up = loss()
            arr[idx] = old - EPS
            down = loss()
            arr[idx] = old
            fd[idx] = (up - down) / (2 * EPS)
        np.testing.assert_allclose(analytic[name], fd, rtol=1e-5, atol=1e-7,
                                   err_msg=f"{opts} d/d{name}")


@pytest.mark.parametrize("slot", ["gate_activation", "cell_activation", "output_activation"])
@pytest.mark.parametrize("f", FUNCTIONS, ids=IDS)
def test_lstm_backward_matches_finite_differences(f, slot):
    rng = np.random.default_rng(10 * IDS.index(f[0]) + len(slot))
    params, inputs = _lstm_problem(rng)
    opts = {slot: f, "lengths": np.array([T, 2]), "reverse": slot == "cell_activation"}
    _check_fd(ref.lstm_forward, ref.lstm_backward, params, inputs, opts, rng)


@pytest.mark.parametrize("f", FUNCTIONS, ids=IDS)
def test_lstm_all_slots_with_clip_and_coupled_gates(f):
    rng = np.random.default_rng(len(f[0]))
    params, inputs = _lstm_problem(rng)
    opts = dict(gate_activation=f, cell_activation=f, output_activation=("scaledtanh", 0.9, 1.1),
                accumulation_clip=0.8, coupled_gates=f[0] in ("sigmoid", "hardsigmoid"))
    _check_fd(ref.lstm_forward, ref.lstm_backward, params, inputs, opts, rng)


@pytest.mark.parametrize("clip", [None, 0.7])
@pytest.mark.parametrize("f", FUNCTIONS, ids=IDS)
def test_rnn_backward_matches_finite_differences(f, clip):
    rng = np.random.default_rng(len(f[0]) + (0 if clip is None else 100))
    params, inputs = _rnn_problem(rng, feedback=clip is not None)
    opts = dict(activation=f, accumulation_clip=clip, lengths=np.array([2, T]),
                reverse=clip is None)
    _check_fd(ref.rnn_forward, ref.rnn_backward, params, inputs, opts, rng)


def test_rnn_clip_is_before_the_activation_and_the_state_is_unclipped():
    rng = np.random.default_rng(3)
    params, inputs = _rnn_problem(rng, feedback=True)
    x = 3 * inputs["x"]
    r, s_T, r_T, cache = ref.rnn_forward(x, params, accumulation_clip=0.5, activation="relu")
    s = cache["s"][1:]
    np.testing.assert_array_equal(r, np.maximum(np.clip(s, -0.5, 0.5), 0))
    assert np.abs(s).max() > 0.5                        # the state keeps what the clip cut off
    np.testing.assert_array_equal(s_T, s[-1])


# ---- the forward against ONNX Runtime ----------------------------------------------------

def _split(layer):
    """The per-direction parameter dicts of a one-layer fusedrnn layer."""
    D = layer.num_directions
    out = []
    for d in range(D):
        sfx = "_reverse" if d else ""
        out.append({k[:len(k) - len(sfx)] if sfx else k: v.astype(np.float64)
                    for k, v in layer.params.items() if k.endswith("_reverse") == bool(d)})
    return out


def _ort_with(model, attrs, feeds):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    node = next(n for n in model.graph.node if n.op_type in ("LSTM", "RNN"))
    node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("k", range(len(FUNCTIONS)))
def test_lstm_forward_matches_onnxruntime(k):
    """Gates, cell input and output each a different function, per direction."""
    n = len(FUNCTIONS)
    fwd = [FUNCTIONS[k], FUNCTIONS[(k + 3) % n], FUNCTIONS[(k + 7) % n]]
    rev = [FUNCTIONS[(k + 5) % n], FUNCTIONS[(k + 1) % n], FUNCTIONS[(k + 9) % n]]
    layer = fr.LSTM(I, H, peepholes="diagonal", bidirectional=True, seed=k)
    model = fr.onnx.to_model(layer, sequence_lens=True)
    rng = np.random.default_rng(k)
    x = rng.standard_normal((4, B, I)).astype(np.float32)
    lens = np.array([4, 2], np.int32)
    names, alphas, betas = acts.onnx_attributes([tuple(acts.parse(f) for f in fwd + rev)])
    attrs = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    Y, Y_h, Y_c = _ort_with(model, attrs, {"X": x, "sequence_lens": lens})
    opts = {slot: [a, b] for slot, a, b in zip(
        ("gate_activation", "cell_activation", "output_activation"), fwd, rev)}
    y, s_T, v_T, _ = ref.lstm_network_forward(x.astype(np.float64), _split(layer),
                                              bidirectional=True, lengths=lens, **opts)
    np.testing.assert_allclose(y, Y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v_T, Y_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s_T, Y_c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [None, 0.6])
@pytest.mark.parametrize("k", range(len(FUNCTIONS)))
def test_rnn_forward_matches_onnxruntime(k, clip):
    f_fwd, f_rev = FUNCTIONS[k], FUNCTIONS[(k + 4) % len(FUNCTIONS)]
    layer = fr.RNN(I, H, bidirectional=True, seed=k)
    model = fr.onnx.to_model(layer)
    x = np.random.default_rng(k).standard_normal((4, B, I)).astype(np.float32) * 1.5
    names, alphas, betas = acts.onnx_attributes([(acts.parse(f_fwd), acts.parse(f_rev))])
    attrs = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if clip is not None:
        attrs["clip"] = clip
    Y, Y_h = _ort_with(model, attrs, {"X": x})
    y, s_T, r_T, _ = ref.rnn_network_forward(x.astype(np.float64), _split(layer),
                                             bidirectional=True, activation=[f_fwd, f_rev],
                                             accumulation_clip=clip)
    np.testing.assert_allclose(y, Y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r_T, Y_h, rtol=1e-4, atol=1e-5)


def test_relu_rnn_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.RNN(I, H, nonlinearity="relu").double()
    x = torch.randn(5, B, I, dtype=torch.float64, requires_grad=True)
    y, h = m(x)
    (y.sum() + 2 * h.sum()).backward()
    p = {"W_x": m.weight_ih_l0.detach().numpy(), "W_r": m.weight_hh_l0.detach().numpy(),
         "theta_s": (m.bias_ih_l0 + m.bias_hh_l0).detach().numpy()}
    r, s_T, r_T, cache = ref.rnn_forward(x.detach().numpy(), p, activation="relu")
    np.testing.assert_allclose(r, y.detach().numpy(), rtol=1e-12, atol=1e-12)
    dx, _, _, g = ref.rnn_backward(np.ones_like(r), None, 2 * np.ones((B, H)), cache)
    np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g["W_r"], m.weight_hh_l0.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---- how activations are spelled ---------------------------------------------------------

def test_spellings():
    assert acts.parse("HardSigmoid") == acts.parse("hard_sigmoid") == acts.parse("hardsigmoid") \
        == acts.Activation("hardsigmoid", 0.2, 0.5)
    assert acts.parse(("leaky_relu", 0.1)) == acts.Activation("leakyrelu", 0.1, 0.0)
    assert acts.parse(("Affine", 2)) == acts.Activation("affine", 2.0, 0.0)
    assert acts.per_direction(["tanh", ("elu", 0.5)], 2, "a") == (acts.TANH, acts.Activation("elu", 0.5))
    assert acts.per_direction(("elu", 0.5), 2, "a") == (acts.Activation("elu", 0.5),) * 2
    assert repr(acts.parse(("scaled_tanh", 1.5))) == "('scaledtanh', 1.5, 1.0)"
    assert repr(acts.parse("Tanh")) == "'tanh'"
    assert set(acts.names()) == {f[0] for f in FUNCTIONS}


@pytest.mark.parametrize("spec,err,match", [
    ("swish", ValueError, "unknown activation 'swish'; choose one of Sigmoid, Tanh"),
    (("tanh", 1.0), ValueError, "Tanh takes no parameters"),
    (("leakyrelu", 0.1, 0.2), ValueError, "LeakyRelu takes alpha"),
    (("elu", float("nan")), ValueError, "alpha of Elu must be a finite number"),
    (("elu", True), ValueError, "alpha of Elu must be a finite number"),
    (3, TypeError, "must be an activation name"),
    ((1.0, "tanh"), TypeError, "must be an activation name"),
])
def test_spelling_errors(spec, err, match):
    with pytest.raises(err, match=match):
        acts.parse(spec, "gate_activation")


def test_per_direction_errors_and_network_options():
    with pytest.raises(ValueError, match="a list of 2 .* got 3"):
        acts.per_direction(["tanh"] * 3, 2, "activation")
    x = np.zeros((2, 1, 2))
    p = {"W_x": np.zeros((2, 2)), "W_r": np.zeros((2, 2)), "theta_s": np.zeros(2)}
    with pytest.raises(TypeError, match="unknown RNN cell options"):
        ref.rnn_network_forward(x, [p], gate_activation="tanh")


def test_onnx_alpha_beta_reading():
    """ONNX's lists are read by the functions that take them, in order; the defaults
    that ONNX and ONNX Runtime disagree on must be written out."""
    got = acts.from_onnx(["Tanh", "LeakyRelu", "HardSigmoid"], [0.3, 0.1], [0.6], "n")
    assert got == [acts.TANH, acts.Activation("leakyrelu", 0.3), acts.Activation("hardsigmoid", 0.1, 0.6)]
    assert acts.from_onnx(["LeakyRelu", "Elu"], None, None, "n") == [
        acts.Activation("leakyrelu", 0.01), acts.Activation("elu", 1.0)]
    for name in ("Affine", "ScaledTanh", "ThresholdedRelu"):
        with pytest.raises(ValueError, match=f"n: activations: {name} has no activation_alpha"):
            acts.from_onnx([name], None, None, "n")
    with pytest.raises(ValueError, match="hold more values than"):
        acts.from_onnx(["Tanh"], [0.5], None, "n")
    with pytest.raises(ValueError, match="unknown activation 'Gelu'"):
        acts.from_onnx(["Gelu"], None, None, "n")
