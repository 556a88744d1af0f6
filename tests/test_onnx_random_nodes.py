"""Seeded random ONNX LSTM and RNN nodes against ONNX Runtime.

Every attribute and optional input is drawn: direction (forward, reverse,
bidirectional), layout, hidden sizes 1-33, clip, input_forget, peepholes, bias,
sequence_lens, initial states, activations with alpha/beta (per direction),
weights as initializers or as graph inputs given with `inputs=`. A node that
`supported` accepts must load with fr.onnx.load and match ONNX Runtime's Y, Y_h
and Y_c; any other must be refused with a ValueError naming the attribute that
`supported` names. ONNX Runtime, not onnx.reference, is the oracle (the reference
evaluator ignores sequence_lens, clip and input_forget). ONNX Runtime runs only
layout=0 nodes: a layout=1 node is compared with its layout=0 twin on transposed
inputs (the layout attribute is defined as that transposition)."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as TP, helper as h, numpy_helper as nh  # noqa: E402

N_NODES = 320
SEED = 20240517

# every activation ONNX defines for its recurrent operators, with the alpha and
# beta they take (None: none) and a range to draw them from
ACTIVATIONS = {
    "Sigmoid": (None, None), "Tanh": (None, None), "Relu": (None, None),
    "HardSigmoid": ((0.1, 0.4), (0.3, 0.7)), "Affine": ((0.5, 1.5), (-0.3, 0.3)),
    "LeakyRelu": ((0.01, 0.3), None), "ThresholdedRelu": ((0.0, 0.5), None),
    "ScaledTanh": ((0.5, 1.5), (0.5, 1.5)), "Elu": ((0.5, 1.5), None),
    "Softsign": (None, None), "Softplus": (None, None),
}
DEFAULTS = {"LSTM": ["sigmoid", "tanh", "tanh"], "RNN": ["tanh"]}


def supported(node):
    """None if fusedrnn computes `node`, else the attribute its refusal must name.
    This is the one place to update when fusedrnn learns an attribute value.
    Every activation and the RNN's clip load; refused: Affine, ScaledTanh and
    ThresholdedRelu without their alpha / beta written (ONNX's operators default
    them to 1, ONNX Runtime to 0, so the node's meaning is not settled)."""
    attrs = {a.name: h.get_attribute_value(a) for a in node.attribute}
    names = [a.decode() for a in attrs.get("activations", [])]
    for i, key in enumerate(("activation_alpha", "activation_beta")):
        if key not in attrs and any(UNSETTLED.get(n, ())[i:i + 1] == (True,) for n in names):
            return "activations"
    return None


# the functions whose parameters ONNX and ONNX Runtime default differently: (alpha, beta) used
UNSETTLED = {"Affine": (True, True), "ScaledTanh": (True, True), "ThresholdedRelu": (True, False)}


def _draw(rng, k):
    """Node k: (node, initializers, graph inputs {name: array}, weight names)."""
    op = "LSTM" if k % 2 == 0 else "RNN"
    G = 4 if op == "LSTM" else 1
    direction = ["forward", "reverse", "bidirectional"][rng.integers(3)]
    D = 2 if direction == "bidirectional" else 1
    layout = int(rng.integers(2))
    H = int(rng.integers(1, 34))
    I = int(rng.integers(1, 7))
    T = int(rng.integers(1, 5))
    B = int(rng.integers(1, 4))
    scale = 1.5 / np.sqrt(H + I)
    f32 = lambda *shape: (rng.uniform(-1, 1, shape) * scale * 2).astype(np.float32)
    values = {"X": rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(np.float32),
              "W": f32(D, G * H, I), "R": f32(D, G * H, H)}
    attrs = dict(hidden_size=H, direction=direction)
    if layout or rng.random() < 0.2:
        attrs["layout"] = layout
    if rng.random() < 0.6:
        values["B"] = f32(D, 2 * G * H)
    if rng.random() < 0.4:
        values["sequence_lens"] = rng.integers(1, T + 1, B).astype(np.int32)
    state = (B, D, H) if layout else (D, B, H)
    if rng.random() < 0.5:
        values["initial_h"] = rng.standard_normal(state).astype(np.float32) * 0.5
    if op == "LSTM":
        if rng.random() < 0.5:
            values["initial_c"] = rng.standard_normal(state).astype(np.float32) * 0.5
        if rng.random() < 0.5:
            values["P"] = f32(D, 3 * H)
        if rng.random() < 0.3:
            attrs["input_forget"] = 1
    if rng.random() < (0.3 if op == "LSTM" else 0.15):
        attrs["clip"] = float(rng.uniform(0.3, 3.0))
    r = rng.random()
    if r < 0.3:  # non-default activations, with their alpha / beta in order
        attrs.update(_draw_activations(rng, len(DEFAULTS[op]) * D))
    elif r < 0.4:  # the defaults written out (ONNX Runtime's RNN takes only the capitalised names)
        spell = [str.capitalize] + ([str.lower, str.upper] if op == "LSTM" else [])
        attrs["activations"] = [spell[rng.integers(len(spell))](n) for n in DEFAULTS[op] * D]
    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:8 if op == "LSTM" else 6]
    names = [s if s in values else "" for s in slots]
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = h.make_node(op, names, outs, name=f"node{k}", **attrs)
    as_inputs = bool(rng.random() < 0.3)  # weights as graph inputs (inputs=) or initializers
    weights = [n for n in ("W", "R", "B", "P") if n in values]
    return node, values, weights, as_inputs, (T, B, D, H, layout)


def _draw_activations(rng, count):
    """The activations / activation_alpha / activation_beta attributes of `count`
    random functions, their parameters in order (each left to its default 1 time in 5)."""
    names = [list(ACTIVATIONS)[i] for i in rng.integers(len(ACTIVATIONS), size=count)]
    alphas, betas = [], []
    for name in names:
        a, b = ACTIVATIONS[name]
        if a is not None and rng.random() < 0.8:  # else the operator's default
            alphas.append(float(rng.uniform(*a)))
        if b is not None and rng.random() < 0.8:
            betas.append(float(rng.uniform(*b)))
    attrs = {"activations": names}
    if alphas and len(alphas) == sum(ACTIVATIONS[n][0] is not None for n in names):
        attrs["activation_alpha"] = alphas
    if betas and len(betas) == sum(ACTIVATIONS[n][1] is not None for n in names):
        attrs["activation_beta"] = betas
    return attrs


def _model(node, values, graph_inputs, inits, outs_shapes):
    info = lambda n: h.make_tensor_value_info(
        n, TP.INT32 if n == "sequence_lens" else TP.FLOAT, values[n].shape)
    g = h.make_graph([node], "g", [info(n) for n in graph_inputs],
                     [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in outs_shapes],
                     initializer=[nh.from_array(values[n], n) for n in inits])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)])
    m.ir_version = 8
    return m


def _layout0_twin(node, values):
    """The same node with layout=0, and its inputs transposed to time-major."""
    twin = h.make_node(node.op_type, list(node.input), list(node.output), name=node.name)
    twin.attribute.extend(a for a in node.attribute if a.name != "layout")
    vals = dict(values)
    vals["X"] = np.ascontiguousarray(values["X"].transpose(1, 0, 2))
    for s in ("initial_h", "initial_c"):
        if s in vals:
            vals[s] = np.ascontiguousarray(values[s].transpose(1, 0, 2))
    return twin, vals


def _ort_outputs(node, values, shapes, layout):
    if layout:
        node, values = _layout0_twin(node, values)
    T, B, D, H = shapes
    shapes = [[T, D, B, H], [D, B, H], [D, B, H]]
    runtime = [n for n in node.input if n and n not in ("W", "R", "B", "P")]
    weights = [n for n in node.input if n in ("W", "R", "B", "P")]
    m = _model(node, values, runtime, weights, list(zip(node.output, shapes)))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {n: values[n] for n in runtime})
    if layout:  # back to the layout=1 node's: Y (B, T, D, H), states (B, D, H)
        out = [out[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in out[1:]]
    return out


def _fr_outputs(layer, node, values, sizes):
    T, B, D, H, layout = sizes
    swap = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if layout else (lambda a: a)
    zeros = np.zeros((D, B, H), np.float32)
    h0 = swap(values["initial_h"]) if "initial_h" in values else zeros
    if isinstance(layer, fr.LSTM):
        c0 = swap(values["initial_c"]) if "initial_c" in values else zeros
        state = fr.LSTMState(c0, h0)
    else:
        state = fr.RNNState(zeros, h0)
    y, st = layer.forward(values["X"], state=state, lengths=values.get("sequence_lens"),
                          training=False)
    Y = y.reshape(B, T, D, H) if layout else y.reshape(T, B, D, H).transpose(0, 2, 1, 3)
    out = [Y, swap(st[1])]
    if isinstance(layer, fr.LSTM):
        out.append(swap(st[0]))
    return out


def _cases():
    rng = np.random.default_rng(SEED)
    return [_draw(rng, k) for k in range(N_NODES)]


CASES = _cases()


def test_the_draw_covers_every_attribute():
    """The seeded draw has every option often enough to mean something."""
    nodes = [c[0] for c in CASES]
    attrs = [{a.name: h.get_attribute_value(a) for a in n.attribute} for n in nodes]
    count = lambda pred: sum(bool(pred(n, a, c)) for n, a, c in zip(nodes, attrs, CASES))
    assert count(lambda n, a, c: n.op_type == "LSTM") >= 150
    assert count(lambda n, a, c: n.op_type == "RNN") >= 150
    for d in (b"forward", b"reverse", b"bidirectional"):
        assert count(lambda n, a, c: a["direction"] == d) >= 60
    assert count(lambda n, a, c: a.get("layout") == 1) >= 100
    assert count(lambda n, a, c: "clip" in a and n.op_type == "LSTM") >= 30
    assert count(lambda n, a, c: "clip" in a and n.op_type == "RNN") >= 10
    assert count(lambda n, a, c: a.get("input_forget") == 1) >= 30
    assert count(lambda n, a, c: "P" in c[1]) >= 50
    assert count(lambda n, a, c: "sequence_lens" in c[1]) >= 80
    assert count(lambda n, a, c: "initial_h" in c[1]) >= 100
    assert count(lambda n, a, c: "initial_c" in c[1]) >= 50
    assert count(lambda n, a, c: c[3]) >= 60
    hs = {c[4][3] for c in CASES}
    assert {1, 33} <= hs and len(hs) >= 25
    used = {x.decode() for a in attrs for x in a.get("activations", [])}
    assert set(ACTIVATIONS) <= used
    assert count(lambda n, a, c: supported(n) is None) >= 180


@pytest.mark.parametrize("k", range(N_NODES))
def test_random_node_matches_onnxruntime(k):
    node, values, weights, as_inputs, sizes = CASES[k]
    T, B, D, H, layout = sizes
    runtime = [n for n in node.input if n and n not in weights]
    graph_inputs = runtime + (weights if as_inputs else [])
    inits = [] if as_inputs else weights
    out_shapes = [[B, T, D, H] if layout else [T, D, B, H]] + [[B, D, H] if layout else [D, B, H]] * 2
    model = _model(node, values, graph_inputs, inits, list(zip(node.output, out_shapes)))
    onnx.checker.check_model(model)
    kwargs = {"inputs": {n: values[n] for n in weights}} if as_inputs else {}
    refused = supported(node)
    if refused is not None:
        with pytest.raises(ValueError, match=rf"node{k}'.*{refused}"):
            fr.onnx.load(model, **kwargs)
        return
    layer = fr.onnx.load(model, **kwargs)
    want = _ort_outputs(node, values, (T, B, D, H), layout)
    got = _fr_outputs(layer, node, values, sizes)
    for name, g, w in zip(node.output, got, want):
        # ONNX Runtime's Softplus is log(1 + e^a) as written: inf once e^a overflows
        # float32 (a > 88.7), where softplus(a) = a; fusedrnn's stays finite there (and
        # a state or output times that inf is +-inf in ONNX Runtime)
        over = np.isinf(w) & (b"Softplus" in _attr(node, "activations"))
        assert np.all(np.isfinite(g[over])), f"node {k} {name}"
        np.testing.assert_allclose(g[~over], w[~over], rtol=1e-4, atol=2e-6,
                                   err_msg=f"node {k} {name}")


def _attr(node, name):
    return next((h.get_attribute_value(a) for a in node.attribute if a.name == name), [])
