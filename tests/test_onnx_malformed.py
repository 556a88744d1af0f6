"""fusedrnn.onnx.load / load_nodes on malformed or foreign graphs: every
inconsistency between a node's attributes, its weights and the graph around it
is a ValueError naming the node and what was expected, never an IndexError, a
KeyError or a silently different network. External data is read only from the
model's folder."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

D, H, I = 1, 4, 3


def _weights(op="LSTM", D=D, H=H, I=I, seed=0):
    G = 4 if op == "LSTM" else 1
    rng = np.random.default_rng(seed)
    w = {"W": rng.uniform(-0.5, 0.5, (D, G * H, I)), "R": rng.uniform(-0.5, 0.5, (D, G * H, H)),
         "B": rng.uniform(-0.5, 0.5, (D, 2 * G * H))}
    if op == "LSTM":
        w["P"] = rng.uniform(-0.5, 0.5, (D, 3 * H))
    return {k: v.astype(np.float32) for k, v in w.items()}


def _model(op="LSTM", weights=None, inputs=None, extra_inits=(), pre=(), **attrs):
    """One LSTM/RNN node reading graph input X; weights as initializers (a value of
    None leaves the input empty, a str names a graph input instead)."""
    weights = _weights(op) if weights is None else weights
    order = ["W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:7 if op == "LSTM" else 6]
    names, inits, graph_inputs = ["X"], [], [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
    for key in order:
        value = weights.get(key)
        if value is None:
            names.append("")
        elif isinstance(value, str):
            names.append(value)
            graph_inputs.append(helper.make_tensor_value_info(value, TensorProto.FLOAT, None))
        else:
            names.append(key)
            inits.append(value if isinstance(value, TensorProto) else numpy_helper.from_array(value, key))
    while names[-1] == "":
        names.pop()
    attrs.setdefault("hidden_size", H)
    attrs = {k: v for k, v in attrs.items() if v is not None}
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    nodes = list(pre) + [helper.make_node(op, names, outs, name="cell", **attrs)]
    graph = helper.make_graph(nodes, "g", graph_inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs],
                              initializer=inits + list(extra_inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _with(op="LSTM", **changes):
    w = _weights(op)
    w.update(changes)
    return w


def _raw_tensor(name, dims, nbytes):
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    t.raw_data = b"\0" * nbytes
    return t


MALFORMED = [
    ("hidden_size-vs-W", lambda: _model(hidden_size=5), r"'cell': W must have shape .* = \(1, 20, 3\), got \(1, 16, 3\)"),
    ("W-2d", lambda: _model(weights=_with(W=np.zeros((16, 3), np.float32))), "W and R must be 3-D"),
    ("R-shape", lambda: _model(weights=_with(R=np.zeros((1, 16, 5), np.float32))), r"R must have shape .* = \(1, 16, 4\)"),
    ("B-half", lambda: _model(weights=_with(B=np.zeros((1, 16), np.float32))), r"B must have shape \(num_directions, 8\*hidden_size\) = \(1, 32\)"),
    ("P-shape", lambda: _model(weights=_with(P=np.zeros((1, 16), np.float32))), r"P must have shape .* = \(1, 12\)"),
    ("direction-bogus", lambda: _model(direction="sideways"), "direction must be 'forward', 'reverse' or 'bidirectional', got 'sideways'"),
    ("direction-vs-W", lambda: _model(direction="bidirectional"), r"W must have shape .* = \(2, 16, 3\)"),
    ("two-directions-forward", lambda: _model(weights=_weights(D=2)), r"W must have shape .* = \(1, 16, 3\), got \(2, 16, 3\)"),
    ("activations-unknown", lambda: _model(weights=_weights(D=2), direction="bidirectional",
                                           activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Gelu", "Tanh"]),
     "unknown activation 'Gelu'"),
    ("activations-count", lambda: _model(weights=_weights(D=2), direction="bidirectional",
                                         activations=["Sigmoid", "Tanh", "Tanh"]),
     "activations lists 3 functions, the bidirectional LSTM takes 6"),
    ("rnn-alpha-without-activations", lambda: _model("RNN", weights=_weights("RNN"),
                                                     activation_alpha=[0.1]),
     "activation_alpha / activation_beta without activations"),
    ("input_forget-2", lambda: _model(input_forget=2), "input_forget must be 0 or 1, got 2"),
    ("clip-negative", lambda: _model(clip=-1.0), "'cell': accumulation_clip must be a finite number > 0"),
    ("clip-nan", lambda: _model(clip=float("nan")), "'cell': accumulation_clip must be a finite number > 0"),
    ("hidden_size-float", lambda: _model(hidden_size=4.0), "attribute hidden_size must be an int, got 4.0"),
    ("hidden_size-zero", lambda: _model(hidden_size=0), "hidden_size and input_size must be >= 1"),
    ("unknown-attribute", lambda: _model(peephole_mode=1), r"unknown attributes \['peephole_mode'\]"),
    ("W-graph-input", lambda: _model(weights=_with(W="W_in")), "input W \\('W_in'\\) is neither an initializer nor a Constant.*inputs="),
    ("W-no-input", lambda: _model(weights=_with(W=None)), "has no W input"),
    ("W-strings", lambda: _model(weights=_with(W=numpy_helper.from_array(np.array([["a"]]), "W"))), "input W must be a float tensor"),
    ("W-short-raw", lambda: _model(weights=_with(W=_raw_tensor("W", [1, 16, 3], 10))), "input W \\('W'\\) is a malformed tensor"),
    ("sequence_lens-constant", lambda: _model(weights=_with(sequence_lens=np.array([3], np.int32))), "sequence_lens is a constant"),
    ("initial_h-constant", lambda: _model(weights=_with(initial_h=np.ones((1, 1, H), np.float32))), "initial_h is a constant non-zero state"),
    ("initial_c-constant", lambda: _model(weights=_with(initial_c=np.ones((1, 1, H), np.float32))), "initial_c is a constant non-zero state"),
    ("rnn-clip", lambda: _model("RNN", weights=_weights("RNN"), clip=-1.0),
     "accumulation_clip must be a finite number > 0"),
    ("layout-2", lambda: _model(layout=2), "layout must be 0 or 1, got 2"),
]


@pytest.mark.parametrize("make,match", [row[1:] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
@pytest.mark.parametrize("reader", ["load", "load_nodes"])
def test_malformed_node_is_a_value_error(make, match, reader):
    with pytest.raises(ValueError, match=match):
        getattr(fr.onnx, reader)(make())


def test_zero_constant_initial_state_is_the_default_state():
    w = _weights()
    ref = fr.onnx.load(_model(weights=w))
    for m in (_model(weights=dict(w, initial_h=np.zeros((1, 1, H), np.float32))),
              _model(weights=dict(w, initial_c=np.zeros((1, 1, H), np.float32)))):
        got = fr.onnx.load(m)
        assert repr(got) == repr(ref)
        for k in ref.params:
            np.testing.assert_array_equal(got.params[k], ref.params[k])


def _two_nodes(second_reads_first):
    """Two LSTM nodes with I = H; the second reads the first's Y (a stack) or X."""
    w1, w2 = _weights(I=H, seed=1), _weights(I=H, seed=2)
    inits = [numpy_helper.from_array(v, k + s) for s, w in (("1", w1), ("2", w2)) for k, v in w.items()]
    n1 = helper.make_node("LSTM", ["X", "W1", "R1", "B1", "", "", "", "P1"], ["Y1", "h1", "c1"],
                          hidden_size=H)
    sq = helper.make_node("Squeeze", ["Y1", "axes"], ["Y1s"])
    x2 = "Y1s" if second_reads_first else "X"
    n2 = helper.make_node("LSTM", [x2, "W2", "R2", "B2", "", "", "", "P2"], ["Y2", "h2", "c2"],
                          hidden_size=H)
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph([n1, sq, n2], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y2", TensorProto.FLOAT, None)],
                              initializer=inits + [axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_load_requires_the_nodes_to_form_a_stack():
    """Two LSTMs that both read X would be loaded as a 2-layer stack, a different
    network: load refuses them, load_nodes returns both cells."""
    stack = fr.onnx.load(_two_nodes(True))
    assert stack.num_layers == 2
    with pytest.raises(ValueError, match="node 1 does not read the output Y of node 0"):
        fr.onnx.load(_two_nodes(False))
    assert len(fr.onnx.load_nodes(_two_nodes(False))) == 2


def test_load_refuses_a_first_node_fed_by_computation():
    """A node whose input X is computed (here X @ M) would lose that computation."""
    M = numpy_helper.from_array(np.eye(I, dtype=np.float32), "M")
    pre = [helper.make_node("MatMul", ["X", "M"], ["XM"])]
    m = _model(pre=pre, extra_inits=[M])
    m.graph.node[-1].input[0] = "XM"
    with pytest.raises(ValueError, match="input X comes from a MatMul node, not from a graph input"):
        fr.onnx.load(m)
    assert len(fr.onnx.load_nodes(m)) == 1


def test_external_data_inside_the_folder_loads(tmp_path):
    layer = fr.LSTM(3, 4, num_layers=2, seed=0)
    m = fr.onnx.to_model(layer)
    path = tmp_path / "ext.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size > 0
    back = fr.onnx.load(path)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ValueError, match="keeps its data in an external file: pass the model's path"):
        fr.onnx.load(proto)


def test_external_data_length_must_fit_the_shape(tmp_path):
    layer = fr.LSTM(3, 4, seed=0)
    path = tmp_path / "ext.onnx"
    onnx.save(fr.onnx.to_model(layer), str(path), save_as_external_data=True,
              location="w.bin", size_threshold=0)
    m = onnx.load(str(path), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.name.startswith("W_"))
    for e in t.external_data:
        if e.key == "length":
            e.value = str(int(e.value) - 4)
    onnx.save(m, str(path))
    with pytest.raises(ValueError, match=r"external data length 188 does not fit its shape \[1, 16, 3\]"):
        fr.onnx.load(path)


@pytest.mark.parametrize("name,data", [("m.onnx", b"\x0a\xff\xff\xff\xff\x0f"),
                                       ("m.txt", b"graph { node { op_type: "), ("m.textproto", b"graph { node { op_type: "),
                                       ("m.json", b"{not json")])
def test_unparseable_files_are_value_errors(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=f"{name}: not a valid ONNX model"):
        fr.onnx.load(tmp_path / name)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        fr.onnx.load_nodes(str(tmp_path / name))


def test_bit_flipped_exports_never_escape_as_other_errors(tmp_path):
    """Every byte of an exported model flipped in turn: load returns a network or
    raises ValueError (protobuf parses many flips into other valid messages)."""
    data = bytearray(fr.onnx.to_model(fr.LSTM(2, 3, seed=0)).SerializeToString())
    path = tmp_path / "flip.onnx"
    for pos in range(0, len(data), max(1, len(data) // 300)):
        d = bytearray(data)
        d[pos] ^= 0xFF
        path.write_bytes(bytes(d))
        try:
            fr.onnx.load(path)
        except ValueError:
            pass


def test_export_refuses_values_beyond_the_target_dtype(tmp_path):
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    layer.params["b"][0] = 1e300               # would become inf in a float32 graph
    with pytest.raises(ValueError, match=r"params\['b'\] holds values beyond the range of float32"):
        fr.onnx.export(layer, tmp_path / "m.onnx", dtype=np.float32)
    assert not (tmp_path / "m.onnx").exists()
    back = fr.onnx.load(fr.onnx.to_model(layer))  # float64: exact
    assert back.params["b"][0] == 1e300


def test_a_scan_graph_is_named_when_load_finds_no_node():
    m = fr.onnx.to_model(fr.LSTM(3, 4, proj_size=2, seed=0), unsupported="scan")
    with pytest.raises(ValueError, match="no LSTM, GRU or RNN node .*a Scan graph"):
        fr.onnx.load(m)
