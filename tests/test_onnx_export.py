"""fusedrnn.onnx: export to standard ONNX LSTM/RNN nodes (and the exact Scan
subgraph for what they lack), run in ONNX Runtime against fusedrnn (float32,
1e-5 relative), and the round trip export -> load (identical parameters)."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REL = 1e-5


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-6))


def _run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _problem(layer, T=9, B=4, seed=0, lengths=True, zero_length=False):
    rng = np.random.default_rng(seed)
    I, H, R = layer.input_size, layer.hidden_size, layer.output_size
    LD = layer.num_layers * layer.num_directions
    x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (LD, B, R)).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((LD, B, H))).astype(np.float32)
    # ONNX Runtime's LSTM/RNN give zero final states to rows of length 0 where
    # fusedrnn (and the Scan export) hold the initial state: 0 only for Scan graphs
    lens = np.array([T, 3, 0 if zero_length else 1, 6][:B], np.int32) if lengths else None
    return x, h0, c0, lens


def _compare(layer, path, with_lengths, initial_state, zero_length=False):
    x, h0, c0, lens = _problem(layer, lengths=with_lengths, zero_length=zero_length)
    feeds = {"X": x}
    if with_lengths:
        feeds["sequence_lens"] = lens
    is_lstm = isinstance(layer, fr.LSTM)
    if initial_state:
        feeds["initial_h"] = h0
        if is_lstm:
            feeds["initial_c"] = c0
        elif layer.state_feedback:
            feeds["initial_s"] = c0
        state = fr.LSTMState(c0, h0) if is_lstm else fr.RNNState(
            c0 if layer.state_feedback else np.zeros_like(c0), h0)
    else:
        state = None
    out = _run(path, feeds)
    y, st = layer.forward(x, state=state, lengths=lens, training=False)
    assert _rel(out["Y"], y) <= REL, _rel(out["Y"], y)
    assert _rel(out["Y_h"], st[1]) <= REL
    if is_lstm:
        assert _rel(out["Y_c"], st[0]) <= REL
    elif layer.state_feedback:
        assert _rel(out["Y_s"], st[0]) <= REL
    return out


def _scaled(layer, k=2.0):
    for v in layer.params.values():  # larger weights than the default init: clips active
        v *= k
    return layer


STANDARD = {
    "diagonal": dict(peepholes="diagonal"),
    "plain-batch_first": dict(peepholes=None, batch_first=True),
    "coupled-clip": dict(peepholes="diagonal", coupled_gates=True, accumulation_clip=0.7),
    "bidirectional": dict(peepholes="diagonal", bidirectional=True),
    "3layers-bidir-all": dict(peepholes="diagonal", num_layers=3, bidirectional=True,
                              coupled_gates=True, accumulation_clip=0.9),
}


@pytest.mark.parametrize("with_lengths,initial_state", [(True, True), (False, False)],
                         ids=["lens-state", "plain"])
@pytest.mark.parametrize("case", list(STANDARD))
def test_lstm_export_runs_in_onnxruntime(tmp_path, case, with_lengths, initial_state):
    layer = _scaled(fr.LSTM(5, 7, seed=3, **STANDARD[case]))
    path = tmp_path / "lstm.onnx"
    m = fr.onnx.export(layer, path, sequence_lens=with_lengths, initial_state=initial_state)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("LSTM") == layer.num_layers and "Scan" not in ops
    assert m.opset_import[0].version >= 14
    _compare(layer, path, with_lengths, initial_state)
    back = fr.onnx.load(path)
    assert type(back) is fr.LSTM and repr(back) == repr(layer)
    assert list(back.params) == list(layer.params)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v, err_msg=k)


@pytest.mark.parametrize("opts", [dict(), dict(num_layers=2, bidirectional=True, batch_first=True)],
                         ids=["one", "2layers-bidir"])
def test_rnn_export_runs_in_onnxruntime_and_round_trips(tmp_path, opts):
    layer = fr.RNN(5, 6, seed=4, **opts)
    path = tmp_path / "rnn.onnx"
    m = fr.onnx.export(layer, path, sequence_lens=True, initial_state=True)
    assert [n.op_type for n in m.graph.node].count("RNN") == layer.num_layers
    _compare(layer, path, True, True)
    back = fr.onnx.load(path)
    assert repr(back) == repr(layer)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v, err_msg=k)


SCAN = {
    "projection": ("lstm", dict(proj_size=3)),
    "context-bidir": ("lstm", dict(peepholes=None, context=(1, 2), bidirectional=True)),
    "full-peepholes-cell_clip": ("lstm", dict(peepholes="full", cell_clip=0.5)),
    "everything": ("lstm", dict(peepholes="full", proj_size=3, context=(2, 1), num_layers=2,
                                bidirectional=True, coupled_gates=True, cell_clip=0.8,
                                accumulation_clip=1.5, batch_first=True)),
    "rnn-state_feedback": ("rnn", dict(state_feedback=True, num_layers=2, bidirectional=True)),
}


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lens", "nolens"])
@pytest.mark.parametrize("case", list(SCAN))
def test_unsupported_features_refused_or_exported_as_exact_scan(tmp_path, case, with_lengths):
    kind, opts = SCAN[case]
    cls = fr.LSTM if kind == "lstm" else fr.RNN
    layer = _scaled(cls(5, 7, seed=5, **opts), 1.5)
    blocked = fr.onnx.blocking_features(layer)
    assert blocked
    with pytest.raises(ValueError, match=blocked[0].split(" ")[0].replace("(", r"\(")):
        fr.onnx.export(layer, tmp_path / "refused.onnx")
    assert not (tmp_path / "refused.onnx").exists()
    path = tmp_path / "scan.onnx"
    m = fr.onnx.export(layer, path, sequence_lens=with_lengths, initial_state=True,
                       unsupported="scan")
    assert "Scan" in [n.op_type for n in m.graph.node]
    _compare(layer, path, with_lengths, True, zero_length=True)


def test_error_messages_name_the_feature(tmp_path):
    cases = [(fr.LSTM(3, 4, proj_size=2), "proj_size"), (fr.LSTM(3, 4, context=(1, 0)), "context"),
             (fr.LSTM(3, 4, peepholes="full"), "peepholes='full'"),
             (fr.LSTM(3, 4, cell_clip=1.0), "cell_clip"),
             (fr.RNN(3, 4, state_feedback=True), "state_feedback")]
    for layer, word in cases:
        with pytest.raises(ValueError, match=word):
            fr.onnx.export(layer, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset must be >= 14"):
        fr.onnx.export(fr.LSTM(3, 4), tmp_path / "x.onnx", opset=13)
    with pytest.raises(TypeError, match="fusedrnn.LSTM"):
        fr.onnx.export(object(), tmp_path / "x.onnx")


def test_load_a_foreign_lstm_node_with_both_biases(tmp_path):
    """An LSTM node built by hand (not by fusedrnn): separate Wb and Rb, P, no metadata."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    D, H, I = 2, 4, 3
    W = rng.uniform(-0.5, 0.5, (D, 4 * H, I)).astype(np.float32)
    R = rng.uniform(-0.5, 0.5, (D, 4 * H, H)).astype(np.float32)
    Bb = rng.uniform(-0.5, 0.5, (D, 8 * H)).astype(np.float32)
    P = rng.uniform(-0.5, 0.5, (D, 3 * H)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bb, "B"), (P, "P"))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction="bidirectional")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                          ["T", "B", I])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                               for n in ("Y", "Y_h", "Y_c")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    layer = fr.onnx.load(path)
    assert layer.peepholes == "diagonal" and layer.bidirectional
    x = rng.standard_normal((6, 2, I)).astype(np.float32)
    out = _run(path, {"X": x})
    y, st = layer.forward(x, training=False)
    T, B = x.shape[:2]
    assert _rel(out["Y"].transpose(0, 2, 1, 3).reshape(T, B, D * H), y) <= REL
    assert _rel(out["Y_h"], st.v) <= REL and _rel(out["Y_c"], st.s) <= REL
    nodes = fr.onnx.load_nodes(model)
    assert len(nodes) == 1


def test_torch_module_export_and_float64(tmp_path):
    torch = pytest.importorskip("torch")
    import fusedrnn.torch as frt
    m = frt.LSTM(4, 5, num_layers=2, dtype=torch.float64, seed=0)
    path = tmp_path / "t.onnx"
    fr.onnx.export(m, path, dtype=np.float32)   # ONNX Runtime's LSTM is float32 only
    x = np.random.default_rng(1).standard_normal((7, 3, 4))
    out = _run(path, {"X": x.astype(np.float32)})
    with torch.no_grad():
        y, (h, c) = m(torch.from_numpy(x))
    assert _rel(out["Y"], y.numpy()) <= 1e-5
    back = fr.onnx.load(path, dtype=np.float64)
    for k, v in back.params.items():
        np.testing.assert_array_equal(v, getattr(m, k).detach().numpy().astype(np.float32))
    m64 = fr.onnx.to_model(m)                   # float64 graph, exact parameters
    back64 = fr.onnx.load(m64)
    for k, v in back64.params.items():
        np.testing.assert_array_equal(v, getattr(m, k).detach().numpy())


def test_warping_functions_and_rnn_clip_export_and_load_back():
    """Activations with alpha / beta (one set per direction) and the RNN's clip are
    written as the nodes' attributes: ONNX Runtime computes the layer's outputs, and
    load gives the layer back."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    layers = [fr.LSTM(3, 4, None, bidirectional=True, seed=1,
                      gate_activation=[("hard_sigmoid", 0.25, 0.5), "sigmoid"],
                      cell_activation=["softsign", ("scaled_tanh", 1.5, 0.5)],
                      output_activation=[("elu", 0.5), "tanh"]),
              fr.RNN(3, 4, num_layers=2, seed=2, activation=("leaky_relu", 0.2),
                     accumulation_clip=0.7),
              fr.GRU(3, 4, num_layers=2, bidirectional=True, seed=3, accumulation_clip=0.8,
                     gate_activation=[("hard_sigmoid", 0.25, 0.5), "softsign"],
                     cell_activation=["relu", ("scaled_tanh", 1.5, 0.5)]),
              fr.GRU(3, 4, linear_before_reset=False, reverse=True, seed=4,
                     gate_activation=("leaky_relu", 0.1), cell_activation="softplus")]
    for layer in layers:
        for v in (layer.params.values() if isinstance(layer, fr.GRU) else ()):
            v *= 2.0  # larger weights than the default init: the GRU's clip acts
        m = fr.onnx.to_model(layer)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        y_ort = sess.run(None, {"X": x})[0]
        y, _ = layer.forward(x, training=False)
        np.testing.assert_allclose(y_ort, y, rtol=1e-5, atol=1e-6)
        back = fr.onnx.load(m)
        for k in ("gate_activation", "cell_activation", "output_activation", "activation",
                  "accumulation_clip"):
            assert getattr(back, k, None) == getattr(layer, k, None) or k.endswith("activation"), k
        if isinstance(layer, fr.GRU):  # alpha / beta are float32 attributes
            f32 = lambda v: (tuple(f32(e) for e in v) if isinstance(v, tuple)
                             else float(np.float32(v)) if isinstance(v, float) else v)
            assert (back.gate_activation, back.cell_activation, back.accumulation_clip,
                    back.linear_before_reset, back.reverse) == (
                f32(layer.gate_activation), f32(layer.cell_activation), layer.accumulation_clip,
                layer.linear_before_reset, layer.reverse)
        np.testing.assert_allclose(back.forward(x, training=False)[0], y, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="Scan subgraph warps with sigmoid and tanh only"):
        fr.onnx.to_model(fr.LSTM(3, 4, None, proj_size=2, cell_activation="relu"),
                         unsupported="scan")
