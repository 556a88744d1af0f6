"""Graphs fusedrnn.onnx.load must refuse: valid ONNX that a fusedrnn stack does
not compute (parallel nodes, outputs it does not model, glue that reorders the
layer input, lengths given to one layer only, states fed from another node) and
malformed nodes (mismatched shapes, wrong dtypes, three directions, missing
hidden_size). Each is a ValueError naming the node or graph output. The valid
ones are run by ONNX Runtime, to show they are graphs it accepts; the variants
of the same glue that do compute a stack load and match ONNX Runtime."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as TP, helper as h, numpy_helper as nh  # noqa: E402

T, B, I, H = 5, 2, 3, 4


def _weights(p, op="LSTM", D=1, I=I, H=H, seed=0, dtype=np.float32):
    """Initializers pW, pR, pB of one node."""
    G = 4 if op == "LSTM" else 1
    rng = np.random.default_rng(seed)
    arrs = {"W": rng.uniform(-.6, .6, (D, G * H, I)), "R": rng.uniform(-.6, .6, (D, G * H, H)),
            "B": rng.uniform(-.3, .3, (D, 2 * G * H))}
    return [nh.from_array(a.astype(dtype), p + k) for k, a in arrs.items()]


def _const(name, values, dtype=np.int64):
    return nh.from_array(np.asarray(values, dtype), name)


def _model(nodes, inits, outputs, inputs=(("X", TP.FLOAT, [T, B, I]),)):
    """outputs: (name, shape) with float outputs."""
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(*i) for i in inputs],
                     [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in outputs],
                     initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)])
    m.ir_version = 8  # what the installed onnxruntime reads
    return m


def _ort(m, feeds):
    return ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _x(seed=1):
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)


def _stack(glue, D=1, out="Y2", layout=0, second=None, extra=(), out_shape=None, lens=False):
    """Two LSTM nodes: the second reads the first's Y through `glue` (a list of
    (op, inputs, attrs); the chain runs from 'Y1' to 'X2')."""
    direction = "bidirectional" if D == 2 else "forward"
    ins1 = ["X", "aW", "aR", "aB"] + (["lens"] if lens else [])
    n1 = h.make_node("LSTM", ins1, ["Y1", "h1", "c1"], hidden_size=H, direction=direction)
    glue_nodes, cur = [], "Y1"
    for k, (op, extra_ins, attrs) in enumerate(glue):
        nxt = "X2" if k == len(glue) - 1 else f"g{k}"
        glue_nodes.append(h.make_node(op, [cur] + list(extra_ins), [nxt], **attrs))
        cur = nxt
    n2 = second or h.make_node("LSTM", ["X2", "bW", "bR", "bB"] + (["lens"] if lens else []),
                               ["Y2", "h2", "c2"], hidden_size=H, direction=direction)
    inits = _weights("a", D=D) + _weights("b", D=D, I=D * H, seed=1) + [
        _const("sh", [0, 0, -1]), _const("ax1", [1]), _const("perm_sh", [T, B, D * H])] + list(extra)
    shapes = {"Y2": [T, D, B, H], "Y1": [T, D, B, H], "h2": [D, B, H]}
    outputs = [(o, out_shape or shapes.get(o, [T, B, D * H])) for o in (out if isinstance(out, tuple) else (out,))]
    inputs = [("X", TP.FLOAT, [T, B, I])] + ([("lens", TP.INT32, [B])] if lens else [])
    return _model([n1] + glue_nodes + [n2] + [], inits, outputs, inputs)


TORCH_GLUE_BIDIR = [("Transpose", [], dict(perm=[0, 2, 1, 3])), ("Reshape", ["sh"], {})]
TORCH_GLUE_UNI = [("Squeeze", ["ax1"], {})]


def _parallel_add():
    """The two LSTM nodes reading X in parallel, outputs added."""
    nodes = [h.make_node("LSTM", ["X", "aW", "aR"], ["Y1"], hidden_size=H),
             h.make_node("LSTM", ["X", "bW", "bR"], ["Y2"], hidden_size=H),
             h.make_node("Add", ["Y1", "Y2"], ["Y"])]
    inits = _weights("a")[:2] + _weights("b", seed=1)[:2]
    return _model(nodes, inits, [("Y", [T, 1, B, H])])


def _single(extra_nodes=(), outputs=(("Y", [T, 1, B, H]),), inits=(), y="Y", **kw):
    n = h.make_node("LSTM", ["X", "W", "R", "B"], [y, "Y_h", "Y_c"], hidden_size=H, **kw)
    return _model([n] + list(extra_nodes), _weights("") + list(inits), list(outputs))


def _state_from_first():
    """An encoder-decoder: the second node starts from the first's final state."""
    n1 = h.make_node("LSTM", ["X", "aW", "aR", "aB"], ["Y1", "h1", "c1"], hidden_size=H)
    sq = h.make_node("Squeeze", ["Y1", "ax1"], ["X2"])
    n2 = h.make_node("LSTM", ["X2", "bW", "bR", "bB", "", "h1", "c1"], ["Y2", "h2", "c2"],
                     hidden_size=H)
    inits = _weights("a") + _weights("b", I=H, seed=1) + [_const("ax1", [1])]
    return _model([n1, sq, n2], inits, [("Y2", [T, 1, B, H])])


def _lens_on_first_only():
    n1 = h.make_node("LSTM", ["X", "aW", "aR", "aB", "lens"], ["Y1", "h1", "c1"], hidden_size=H,
                     direction="reverse")
    sq = h.make_node("Squeeze", ["Y1", "ax1"], ["X2"])
    n2 = h.make_node("LSTM", ["X2", "bW", "bR", "bB"], ["Y2", "h2", "c2"], hidden_size=H,
                     direction="reverse")
    inits = _weights("a") + _weights("b", I=H, seed=1) + [_const("ax1", [1])]
    return _model([n1, sq, n2], inits, [("Y2", [T, 1, B, H])],
                  inputs=[("X", TP.FLOAT, [T, B, I]), ("lens", TP.INT32, [B])])


def _retype(m, name, elem):
    for v in m.graph.input:
        if v.name == name:
            v.type.tensor_type.elem_type = elem
    return m


def _rnn_three_directions():
    n = h.make_node("RNN", ["X", "W", "R", "B"], ["Y"], hidden_size=H, direction="bidirectional")
    return _model([n], _weights("", "RNN", D=3), [("Y", [T, 2, B, H])])


def _state_constant_node(**value):
    """initial_h from a Constant node (value= a tensor, or value_float=)."""
    c = h.make_node("Constant", [], ["h0"], **value)
    n = h.make_node("LSTM", ["X", "W", "R", "B", "", "h0"], ["Y"], hidden_size=H)
    return _model([c, n], _weights(""), [("Y", [T, 1, B, H])])


# (name, model factory, the message, whether ONNX Runtime runs the graph)
ADVERSARIAL = [
    ("parallel-nodes-added", _parallel_add, "LSTM node 1 does not read the output Y of node 0", True),
    ("second-reads-first-outputs-first", lambda: _stack(TORCH_GLUE_UNI, out="Y1"),
     "graph output 'Y1' is .*the output Y of LSTM node 0 of 2", True),
    ("outputs-inner-and-last-Y", lambda: _stack(TORCH_GLUE_UNI, out=("Y2", "Y1")),
     "graph output 'Y1' is .*LSTM node 0 of 2", True),
    ("output-through-relu", lambda: _single([h.make_node("Relu", ["Y0"], ["Y"])], y="Y0"),
     "graph output 'Y' is computed by Relu node", True),
    ("output-linear-head", lambda: _single([h.make_node("Squeeze", ["Y0", "ax1"], ["Ys"]),
                                            h.make_node("MatMul", ["Ys", "M"], ["Y"])],
                                           outputs=[("Y", [T, B, 2])], y="Y0",
                                           inits=[_const("ax1", [1]),
                                                  _const("M", np.ones((H, 2)), np.float32)]),
     "graph output 'Y' is computed by MatMul node", True),
    ("output-is-the-input", lambda: _single(outputs=[("Y", [T, 1, B, H]), ("X", [T, B, I])]),
     "graph output 'X' passes on a graph input", False),
    ("glue-reshape-without-transpose", lambda: _stack([("Reshape", ["sh"], {})], D=2),
     "reads node 0's Y .*through Reshape, which gives its elements in another order", True),
    ("glue-interleaves-directions", lambda: _stack([("Transpose", [], dict(perm=[0, 2, 3, 1])),
                                            ("Reshape", ["sh"], {})], D=2),
     "through Transpose -> Reshape, which gives", True),
    ("glue-wrong-shape", lambda: _stack([("Reshape", ["sh"], {})], D=1),
     r"through Reshape, which gives shape \(5, 1, 8\), not the layer input \(5, 2, 4\)", False),
    ("glue-cast-to-int", lambda: _stack([("Squeeze", ["ax1"], {}), ("Cast", [], dict(to=TP.INT32)),
                                        ("Cast", [], dict(to=TP.FLOAT))]),
     "casts to ONNX type 6, which changes the values", True),
    ("state-from-another-node", _state_from_first, "initial_h comes from a LSTM node", True),
    ("state-constant-node", lambda: _state_constant_node(
        value=nh.from_array(np.full((1, B, H), 0.5, np.float32))),
     "initial_h is a constant non-zero state", True),
    ("state-constant-scalar", lambda: _state_constant_node(value_float=0.5),
     "initial_h comes from a Constant node", False),
    ("lengths-on-one-layer", _lens_on_first_only, "read different sequence_lens", True),
    ("lengths-int64", lambda: _retype(_stack(TORCH_GLUE_UNI, lens=True), "lens", TP.INT64),
     "sequence_lens: graph input 'lens' is declared with ONNX type INT64", False),
    ("hidden-sizes-differ", lambda: _stack(TORCH_GLUE_UNI, second=h.make_node(
        "LSTM", ["X2", "cW", "cR"], ["Y2"], hidden_size=3), extra=_weights("c", I=H, H=3)[:2]),
     "do not form one uniform stack", True),
    ("x-double-weights-float", lambda: _retype(_single(), "X", TP.DOUBLE),
     "input X is the graph input 'X' of ONNX type DOUBLE, its weights are float32", False),
    ("weights-int32", lambda: _model([h.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H)],
                                     [_const("W", np.ones((1, 4 * H, I)), np.int32),
                                      _const("R", np.ones((1, 4 * H, H)), np.int32)],
                                     [("Y", [T, 1, B, H])]),
     "input W must be a float tensor .* got dtype int32", False),
    ("weights-mixed-float", lambda: _model(
        [h.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H)],
        [_weights("")[0], _const("R", np.ones((1, 4 * H, H)), np.float64)], [("Y", [T, 1, B, H])]),
     "R is float64 and W float32", False),
    ("three-directions", _rnn_three_directions,
     r"W must have shape .* = \(2, 4, 3\), got \(3, 4, 3\)", False),
    ("missing-hidden_size", lambda: _model([h.make_node("LSTM", ["X", "W", "R"], ["Y"])],
                                           _weights("")[:2], [("Y", [T, 1, B, H])]),
     "has no hidden_size attribute .*set hidden_size=4", False),
    ("hidden_size-vs-weights", lambda: _model(
        [h.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H + 1)], _weights("")[:2],
        [("Y", [T, 1, B, H + 1])]),
     r"W must have shape \(num_directions, 4\*hidden_size, input_size\) = \(1, 20, 3\)", False),
]


@pytest.mark.parametrize("make,match,runs", [c[1:] for c in ADVERSARIAL], ids=[c[0] for c in ADVERSARIAL])
def test_adversarial_graph_is_refused(make, match, runs):
    m = make()
    onnx.checker.check_model(m)
    if runs:  # a graph ONNX Runtime computes: loading it would give another network
        feeds = {"X": _x()}
        if any(i.name == "lens" for i in m.graph.input):
            feeds["lens"] = np.array([T, 3], np.int32)
        _ort(m, feeds)
    with pytest.raises(ValueError, match=match):
        fr.onnx.load(m)


def _fr_outputs(net, x, lens=None):
    y, st = net.forward(x, lengths=lens, training=False)
    return y, st


@pytest.mark.parametrize("name,glue,D,explicit", [
    ("torch-unidirectional-squeeze", TORCH_GLUE_UNI, 1, False),
    ("torch-bidirectional-transpose-reshape", TORCH_GLUE_BIDIR, 2, False),
    ("explicit-reshape-shape", [("Transpose", [], dict(perm=[0, 2, 1, 3])),
                                ("Reshape", ["perm_sh"], {})], 2, True),
    ("identity-cast-around", [("Identity", [], {}), ("Transpose", [], dict(perm=[0, 2, 1, 3])),
                              ("Cast", [], dict(to=TP.FLOAT)), ("Reshape", ["sh"], {})], 2, False),
    ("unidirectional-transpose-reshape", TORCH_GLUE_BIDIR, 1, False),
])
def test_glue_that_forms_a_stack_loads_and_matches_onnxruntime(name, glue, D, explicit):
    m = _stack(glue, D=D, out=("Y2", "h2"), lens=not explicit)
    feeds = {"X": _x()}
    lens = None
    if not explicit:
        lens = np.array([T, 3], np.int32)
        feeds["lens"] = lens
    Y2, h2 = _ort(m, feeds)
    net = fr.onnx.load(m)
    assert net.num_layers == 2 and net.num_directions == D
    y, st = _fr_outputs(net, feeds["X"], lens)
    want = Y2.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st[1][D:], h2, rtol=1e-5, atol=1e-6)


def test_outputs_that_are_moved_or_concatenated_states_load():
    """Y as the node writes it (T, D, B, H), states concatenated in another order,
    squeezed: all of it is what the stack computes."""
    m = _stack(TORCH_GLUE_UNI, out=("Y2",), out_shape=None)
    extra = [h.make_node("Concat", ["h2", "h1"], ["hs"], axis=0),
             h.make_node("Squeeze", ["c2", "ax0"], ["cs"])]
    m.graph.node.extend(extra)
    m.graph.initializer.append(_const("ax0", [0]))
    m.graph.output.extend([h.make_tensor_value_info("hs", TP.FLOAT, [2, B, H]),
                           h.make_tensor_value_info("cs", TP.FLOAT, [B, H])])
    onnx.checker.check_model(m)
    Y2, hs, cs = _ort(m, {"X": _x()})
    net = fr.onnx.load(m)
    y, st = _fr_outputs(net, _x())
    np.testing.assert_allclose(y, Y2[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st[1][::-1], hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st[0][1], cs, rtol=1e-5, atol=1e-6)
