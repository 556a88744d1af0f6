"""ONNX layout=1 (batch-major) nodes and weights given as graph inputs.

Oracles: ONNX Runtime runs only layout=0 nodes, so a layout=1 node is checked
against the same node with layout=0 on the transposed input in ONNX Runtime (the
two are equal by the operator's definition), and whole exported graphs against
onnx.reference.ReferenceEvaluator (which implements layout=1, but ignores
sequence_lens, clip and input_forget: those are not used here)."""
import numpy as np
import pytest

import fusedrnn as fr

from conftest import assert_close

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


OUT_SHAPES = (["a", "b", "c", "d"], ["a", "b", "c"], ["a", "b", "c"])


def _node_model(op, H, W, R, B, layout, direction="forward", as_inputs=(), P=None):
    """One LSTM/RNN node; the weights named in as_inputs are graph inputs, the others
    initializers. Graph inputs X, initial_h (and initial_c); outputs Y, Y_h (, Y_c)."""
    weights = {"W": W, "R": R, "B": B, **({"P": P} if P is not None else {})}
    names = ["X", "W", "R", "B", "", "initial_h"]
    outs = ["Y", "Y_h"]
    if op == "LSTM":
        names += ["initial_c"] + (["P"] if P is not None else [])
        outs += ["Y_c"]
    node = h.make_node(op, names, outs, hidden_size=H, layout=layout, direction=direction)
    graph_inputs = [h.make_tensor_value_info(n, TP.FLOAT, ["a", "b", "c"])
                    for n in ["X", "initial_h"] + (["initial_c"] if op == "LSTM" else [])]
    graph_inputs += [h.make_tensor_value_info(n, TP.FLOAT, list(weights[n].shape)) for n in as_inputs]
    inits = [nh.from_array(v, n) for n, v in weights.items() if n not in as_inputs]
    g = h.make_graph([node], "g", graph_inputs, [h.make_tensor_value_info(n, TP.FLOAT, shape)
                                                 for n, shape in zip(outs, OUT_SHAPES)],
                     initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)])
    onnx.checker.check_model(m)
    return m


def _weights(op, D, I, H, rng, peepholes=False):
    G = 4 if op == "LSTM" else 1
    W = (0.6 * rng.standard_normal((D, G * H, I))).astype(np.float32)
    R = (0.6 * rng.standard_normal((D, G * H, H))).astype(np.float32)
    B = (0.3 * rng.standard_normal((D, 2 * G * H))).astype(np.float32)
    P = (0.5 * rng.standard_normal((D, 3 * H))).astype(np.float32) if peepholes else None
    return W, R, B, P


@pytest.mark.parametrize("op,direction", [("LSTM", "forward"), ("LSTM", "bidirectional"),
                                          ("LSTM", "reverse"), ("RNN", "forward"),
                                          ("RNN", "bidirectional"), ("RNN", "reverse")])
def test_layout1_node_loads_as_batch_first(op, direction):
    rng = np.random.default_rng(0)
    T, Bn, I, H = 6, 3, 4, 5
    D = 2 if direction == "bidirectional" else 1
    W, R, B, P = _weights(op, D, I, H, rng, peepholes=op == "LSTM")
    x = rng.standard_normal((Bn, T, I)).astype(np.float32)           # batch-major
    h0 = rng.uniform(-1, 1, (Bn, D, H)).astype(np.float32)           # layout=1 states
    c0 = rng.standard_normal((Bn, D, H)).astype(np.float32)
    m1 = _node_model(op, H, W, R, B, 1, direction, P=P)
    layer = fr.onnx.load(m1)
    assert layer.batch_first and layer.reverse == (direction == "reverse")
    assert layer.bidirectional == (D == 2)
    # the oracle: the layout=0 node on the transposed tensors, in ONNX Runtime
    feeds0 = {"X": x.transpose(1, 0, 2), "initial_h": h0.transpose(1, 0, 2)}
    if op == "LSTM":
        feeds0["initial_c"] = c0.transpose(1, 0, 2)
    out = _ort(_node_model(op, H, W, R, B, 0, direction, P=P), feeds0)
    st = (fr.LSTMState(c0.transpose(1, 0, 2).copy(), h0.transpose(1, 0, 2).copy()) if op == "LSTM"
          else fr.RNNState(np.zeros((D, Bn, H), np.float32), h0.transpose(1, 0, 2).copy()))
    y, st_out = layer.forward(x, state=st, training=False)
    # ORT's Y (T, D, B, H) -> (B, T, D*H)
    assert_close(y, out["Y"].transpose(2, 0, 1, 3).reshape(Bn, T, D * H), 1e-5, "Y")
    assert_close(st_out[1], out["Y_h"], 1e-5, "Y_h")
    if op == "LSTM":
        assert_close(st_out[0], out["Y_c"], 1e-5, "Y_c")
    # ONNX's own evaluator of the layout=1 node agrees (Y (B, T, D, H), Y_h (B, D, H))
    feeds1 = {"X": x, "initial_h": h0, **({"initial_c": c0} if op == "LSTM" else {})}
    ref = dict(zip(["Y", "Y_h", "Y_c"], ReferenceEvaluator(m1).run(None, feeds1)))
    assert_close(y, ref["Y"].reshape(Bn, T, D * H), 1e-5, "Y (reference evaluator)")
    assert_close(st_out[1], ref["Y_h"].transpose(1, 0, 2), 1e-5, "Y_h (reference evaluator)")


CASES = {
    "lstm-2layers-bidir-batch_first": lambda: fr.LSTM(3, 4, peepholes="diagonal", num_layers=2,
                                                      bidirectional=True, batch_first=True, seed=1),
    "lstm-reverse-time_major": lambda: fr.LSTM(3, 4, peepholes=None, reverse=True, seed=2),
    "rnn-3layers-batch_first": lambda: fr.RNN(3, 4, num_layers=3, batch_first=True, seed=3),
    "rnn-bidir": lambda: fr.RNN(3, 4, bidirectional=True, seed=4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_export_layout1(tmp_path, case):
    layer = CASES[case]()
    path = tmp_path / "m.onnx"
    m = fr.onnx.export(layer, path, initial_state=True, layout=1)
    nodes = [n for n in m.graph.node if n.op_type in ("LSTM", "RNN")]
    assert len(nodes) == layer.num_layers
    for n in nodes:
        assert {a.name: a.i for a in n.attribute}.get("layout") == 1
    if layer.batch_first:  # the nodes read the graph's X directly
        assert nodes[0].input[0] == "X"
    rng = np.random.default_rng(5)
    T, B = 5, 2
    LD = layer.num_layers * layer.num_directions
    H = layer.hidden_size
    x = rng.standard_normal((B, T, 3) if layer.batch_first else (T, B, 3)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (LD, B, H)).astype(np.float32)
    c0 = rng.standard_normal((LD, B, H)).astype(np.float32)
    is_lstm = isinstance(layer, fr.LSTM)
    feeds = {"X": x, "initial_h": h0, **({"initial_c": c0} if is_lstm else {})}
    ref = dict(zip([o.name for o in m.graph.output], ReferenceEvaluator(m).run(None, feeds)))
    state = fr.LSTMState(c0, h0) if is_lstm else fr.RNNState(np.zeros_like(c0), h0)
    y, st = layer.forward(x, state=state, training=False)
    assert_close(ref["Y"], y, 1e-5, "Y")
    assert_close(ref["Y_h"], st[1], 1e-5, "Y_h")
    if is_lstm:
        assert_close(ref["Y_c"], st[0], 1e-5, "Y_c")
    # the layout=0 export of the same layer, in ONNX Runtime, gives the same
    out0 = _ort(fr.onnx.to_model(layer, initial_state=True), feeds)
    assert_close(ref["Y"], out0["Y"], 1e-5, "layout 1 vs 0")
    back = fr.onnx.load(path)
    assert repr(back) == repr(layer)
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k])


def test_layout_errors():
    with pytest.raises(ValueError, match="layout must be 0"):
        fr.onnx.to_model(fr.LSTM(2, 3), layout=2)
    with pytest.raises(ValueError, match="layout=1"):
        fr.onnx.to_model(fr.LSTM(2, 3, proj_size=1), layout=1, unsupported="scan")
    rng = np.random.default_rng(6)
    W, R, B, _ = _weights("RNN", 1, 2, 3, rng)
    m = _node_model("RNN", 3, W, R, B, 1)
    m.graph.node[0].attribute[[a.name for a in m.graph.node[0].attribute].index("layout")].i = 2
    with pytest.raises(ValueError, match="layout must be 0 or 1"):
        fr.onnx.load(m)
    # a stack whose nodes differ in layout is not one network
    m = fr.onnx.to_model(fr.RNN(2, 3, num_layers=2, batch_first=True), layout=1)
    second = [n for n in m.graph.node if n.op_type == "RNN"][1]
    for a in second.attribute:
        if a.name == "layout":
            a.i = 0
    with pytest.raises(ValueError, match="uniform stack"):
        fr.onnx.load(m)


@pytest.mark.parametrize("op", ["LSTM", "RNN"])
def test_weights_as_graph_inputs(op):
    rng = np.random.default_rng(7)
    T, Bn, I, H = 5, 2, 3, 4
    W, R, B, P = _weights(op, 2, I, H, rng, peepholes=op == "LSTM")
    as_inputs = ("W", "R", "B") + (("P",) if P is not None else ())
    m = _node_model(op, H, W, R, B, 0, "bidirectional", as_inputs=as_inputs, P=P)
    with pytest.raises(ValueError, match=r"inputs=\{'W': array\}"):
        fr.onnx.load(m)
    values = {"W": W, "R": R, "B": B, **({"P": P} if P is not None else {})}
    layer = fr.onnx.load(m, inputs=values)
    x = rng.standard_normal((T, Bn, I)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (2, Bn, H)).astype(np.float32)
    c0 = rng.standard_normal((2, Bn, H)).astype(np.float32)
    feeds = {"X": x, "initial_h": h0, **values, **({"initial_c": c0} if op == "LSTM" else {})}
    out = _ort(m, feeds)
    st = fr.LSTMState(c0, h0) if op == "LSTM" else fr.RNNState(np.zeros_like(h0), h0)
    y, st_out = layer.forward(x, state=st, training=False)
    assert_close(y, out["Y"].transpose(0, 2, 1, 3).reshape(T, Bn, 2 * H), 1e-5, "Y")
    assert_close(st_out[1], out["Y_h"], 1e-5, "Y_h")
    assert len(fr.onnx.load_nodes(m, inputs=values)) == 1
    with pytest.raises(ValueError, match=r"inputs\['X'\].*forward"):
        fr.onnx.load(m, inputs={**values, "X": x})
    with pytest.raises(ValueError, match=r"inputs\['nope'\]"):
        fr.onnx.load(m, inputs={**values, "nope": W})
    with pytest.raises(TypeError, match=r"inputs\['W'\].*float"):
        fr.onnx.load(m, inputs={**values, "W": W.astype(np.int32)})
    with pytest.raises(TypeError, match="inputs must be a dict"):
        fr.onnx.load(m, inputs=[W, R, B])
    m2 = _node_model(op, H, W, R, B, 0, "bidirectional", as_inputs=("B",), P=P)
    with pytest.raises(ValueError, match=r"inputs\['W'\].*initializer"):
        fr.onnx.load(m2, inputs={"W": W, "B": B})
