"""fr.onnx.export of an int8 QuantizedLSTM as ONNX Runtime's com.microsoft.DynamicQuantizeLSTM:
run in ONNX Runtime against fusedrnn's int8 forward and the float32 layer (ORT quantizes the
activations its own way, so within a bound measured against ORT's own quantize_dynamic of the
float layer; with per-channel scales ORT's quantizer writes the very model fusedrnn exports), the file's int8 weights times their scales equal the dequantized layer's weights
exactly, load gives back the QuantizedLSTM bit for bit (also ORT's quantize_dynamic output), and
what the operator cannot express is refused by name."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn.core._layer import suffix
from fusedrnn.onnx import ONNX_GATE_ORDER

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

# max |y_ORT - y_float32| of our exported int8 model may exceed that of ORT's quantize_dynamic of
# the float model (per-tensor weight scales) by at most this factor; both use ORT's kernel
ORT_FACTOR = 1.5
BOUND = 5e-2   # absolute bound on every int8 output vs float32 for these small random nets
INV = tuple(int(i) for i in np.argsort(ONNX_GATE_ORDER))

OPTIONS = {
    "plain": dict(peepholes=None),
    "peepholes": dict(peepholes="diagonal"),
    "bidirectional": dict(peepholes="diagonal", bidirectional=True),
    "stack": dict(peepholes=None, num_layers=2, bidirectional=True),
    "coupled+clip": dict(peepholes="diagonal", coupled_gates=True, accumulation_clip=1.5),
    "reverse": dict(peepholes=None, reverse=True),
    "batch_first": dict(peepholes=None, batch_first=True, num_layers=2),
    "activations": dict(peepholes=None, bidirectional=True, cell_activation="softsign",
                        gate_activation=["sigmoid", ("hard_sigmoid", 0.25, 0.5)]),
}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _problem(layer, T=12, B=3, seed=0):
    rng = np.random.default_rng(seed)
    LD = layer.num_layers * layer.num_directions
    x = rng.standard_normal((B, T, layer.input_size) if layer.batch_first else
                            (T, B, layer.input_size)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (LD, B, layer.hidden_size)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (LD, B, layer.hidden_size)).astype(np.float32)
    lens = np.resize(np.array([T, 5, 9], np.int32), B)
    return x, h0, c0, lens


def _run_ort(model, x, h0, c0, lens):
    feeds = {"X": x, "sequence_lens": lens, "initial_h": h0, "initial_c": c0}
    return _session(model).run(["Y", "Y_h", "Y_c"], feeds)


def _quantize_dynamic(model, tmp_path, per_channel=False):
    src, dst = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(src))
    quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8,
                                  per_channel=per_channel)
    return onnx.load(str(dst))


def _err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)))


@pytest.mark.parametrize("option", OPTIONS)
def test_ort_runs_the_export_near_ours_and_float32(option, tmp_path):
    lstm = fr.LSTM(6, 8, seed=3, **OPTIONS[option])
    q = lstm.quantize("int8")
    x, h0, c0, lens = _problem(q)
    m = fr.onnx.export(q, tmp_path / "q.onnx", sequence_lens=True, initial_state=True)
    assert [n.op_type for n in m.graph.node if n.domain == "com.microsoft"] == \
        ["DynamicQuantizeLSTM"] * q.num_layers
    Y, Y_h, Y_c = _run_ort(m, x, h0, c0, lens)
    state = fr.LSTMState(c0, h0)
    y_q, st_q = q.forward(x, state, lengths=lens)
    y_f, st_f = lstm.forward(x, state, lengths=lens, training=False)
    # ORT's own int8 of the float layer (quantize_dynamic: per-tensor weight scales)
    m_f = fr.onnx.to_model(lstm, sequence_lens=True, initial_state=True)
    Y_d = _run_ort(_quantize_dynamic(m_f, tmp_path), x, h0, c0, lens)[0]
    # with per-channel scales ORT's quantizer makes the same int8 weights and scales as ours:
    # the same model, the same numbers
    Y_pc = _run_ort(_quantize_dynamic(m_f, tmp_path, per_channel=True), x, h0, c0, lens)[0]
    np.testing.assert_array_equal(Y, Y_pc)
    ort_vs_float, ours_vs_float = _err(Y, y_f), _err(y_q, y_f)
    ort_own = _err(Y_d, y_f)
    assert ort_vs_float <= max(ORT_FACTOR * ort_own, 2e-3), (ort_vs_float, ort_own)
    assert max(ort_vs_float, ours_vs_float, _err(Y, y_q)) <= BOUND
    assert _err(Y_h, st_q.v) <= BOUND and _err(Y_c, st_q.s) <= BOUND
    assert _err(Y_c, st_f.s) <= BOUND
    # not the float32 numbers: the products did run in int8
    assert ort_vs_float > 1e-5


def _initializers(m):
    return {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}


def test_file_weights_dequantize_to_ours_exactly(tmp_path):
    q = fr.LSTM(5, 6, peepholes="diagonal", num_layers=2, bidirectional=True,
                seed=4).quantize("int8")
    m = fr.onnx.export(q, tmp_path / "q.onnx")
    inits = _initializers(m)
    deq = q.dequantized().params
    nodes = [n for n in m.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    H = q.hidden_size
    for l, node in enumerate(nodes):
        for i_w, i_s, name in ((1, 8, "W_x"), (2, 10, "W_v")):
            W, scale = inits[node.input[i_w]], inits[node.input[i_s]]
            assert W.dtype == np.int8 and scale.dtype == np.float32
            assert not np.any(inits[node.input[i_s + 1]])     # zero points
            for d in range(2):
                ours = np.concatenate([W[d].T[k * H:(k + 1) * H] for k in INV])
                s = np.concatenate([scale[d][k * H:(k + 1) * H] for k in INV])
                got = ours.astype(np.float32) * s[:, None]
                want = deq[name + suffix(l, d)]
                assert got.dtype == want.dtype and np.array_equal(got, want), (l, d, name)
                assert np.array_equal(ours, q.params[name + suffix(l, d)])


@pytest.mark.parametrize("option", ["peepholes", "stack", "coupled+clip", "reverse",
                                    "batch_first", "activations"])
def test_round_trip_is_bit_for_bit(option, tmp_path):
    q = fr.LSTM(6, 8, seed=5, **OPTIONS[option]).quantize("int8")
    path = tmp_path / "q.onnx"
    fr.onnx.export(q, path, sequence_lens=True, initial_state=True)
    back = fr.onnx.load(path)
    assert type(back) is fr.QuantizedLSTM and back.precision == "int8"
    assert repr(back) == repr(q)
    assert set(back.params) == set(q.params)
    for k, p in q.params.items():
        assert back.params[k].dtype == p.dtype and np.array_equal(back.params[k], p), k
    x, h0, c0, lens = _problem(q)
    np.testing.assert_array_equal(back.forward(x, fr.LSTMState(c0, h0), lengths=lens)[0],
                                  q.forward(x, fr.LSTMState(c0, h0), lengths=lens)[0])
    cells = fr.onnx.load_nodes(path)
    assert [type(c) for c in cells] == [fr.QuantizedLSTM] * q.num_layers


@pytest.mark.parametrize("per_channel", [False, True])
def test_load_reads_ort_quantize_dynamic(per_channel, tmp_path):
    """ORT's own DynamicQuantizeLSTM (symmetric int8, per-tensor or per-channel scales) loads as a
    QuantizedLSTM holding the file's weights, which runs near ORT."""
    lstm = fr.LSTM(6, 8, peepholes="diagonal", bidirectional=True, seed=6)
    m = _quantize_dynamic(fr.onnx.to_model(lstm, sequence_lens=True, initial_state=True),
                          tmp_path, per_channel)
    q = fr.onnx.load(m)
    assert type(q) is fr.QuantizedLSTM
    inits = _initializers(m)
    node = next(n for n in m.graph.node if n.op_type == "DynamicQuantizeLSTM")
    W, scale = inits[node.input[1]], inits[node.input[8]]
    assert (scale.size == 2) != per_channel
    H = q.hidden_size
    for d in range(2):
        want = np.concatenate([W[d].T[k * H:(k + 1) * H] for k in INV])
        assert np.array_equal(q.params["W_x" + suffix(0, d)], want)
    if per_channel:   # ORT's per-channel int8 weights and scales are fusedrnn's own
        for k, p in lstm.quantize("int8").params.items():
            assert q.params[k].dtype == p.dtype and np.array_equal(q.params[k], p), k
    x, h0, c0, lens = _problem(q)
    Y = _run_ort(m, x, h0, c0, lens)[0]
    y_q, _ = q.forward(x, fr.LSTMState(c0, h0), lengths=lens)
    y_f, _ = lstm.forward(x, fr.LSTMState(c0, h0), lengths=lens, training=False)
    assert _err(y_q, Y) <= BOUND and _err(y_q, y_f) <= BOUND


@pytest.mark.parametrize("make, match", [
    (lambda: fr.LSTM(4, 5, proj_size=3).quantize("int8"), "no proj_size.*export the float layer"),
    (lambda: fr.LSTM(4, 5, context=(1, 1)).quantize("int8"), "no context windows.*float layer"),
    (lambda: fr.LSTM(4, 5, peepholes="full").quantize("int8"), "no peepholes='full'"),
    (lambda: fr.LSTM(4, 5, cell_clip=2.0).quantize("int8"), "no cell_clip.*float layer"),
    (lambda: fr.LSTM(4, 5).quantize("bf16"), "no bf16 LSTM operator.*float layer"),
    (lambda: fr.RNN(4, 5).quantize("int8"), "no quantized RNN operator.*float layer"),
])
def test_what_the_operator_lacks_is_refused(make, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        fr.onnx.export(make(), tmp_path / "q.onnx")


def test_export_options_that_do_not_apply_are_refused(tmp_path):
    q = fr.LSTM(4, 5).quantize("int8")
    for kw, match in ((dict(unsupported="scan"), "unsupported='scan'"),
                      (dict(layout=1), "no layout attribute"),
                      (dict(dtype=np.float64), "dtype must be float32")):
        with pytest.raises(ValueError, match=match):
            fr.onnx.export(q, tmp_path / "q.onnx", **kw)


def _edit(m, input_index, fn):
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    node = next(n for n in m2.graph.node if n.op_type == "DynamicQuantizeLSTM")
    t = next(t for t in m2.graph.initializer if t.name == node.input[input_index])
    t.CopyFrom(onnx.numpy_helper.from_array(fn(onnx.numpy_helper.to_array(t)), t.name))
    return m2


def test_load_refuses_what_fusedrnn_does_not_hold():
    m = fr.onnx.to_model(fr.LSTM(4, 5, seed=1).quantize("int8"))
    cases = [(_edit(m, 9, lambda z: z + 1), "W_zero_point must be int8 zeros"),
             (_edit(m, 1, lambda w: w.astype(np.uint8)), "W is uint8.*symmetric int8"),
             (_edit(m, 2, lambda r: np.where(r == r.min(), -128, r).astype(np.int8)),
              "R holds -128"),
             (_edit(m, 10, lambda s: s[:, :3]), r"R_scale must be float32 of shape \(1,\)"),
             (_edit(m, 8, lambda s: s * np.inf), "not finite")]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            fr.onnx.load(bad)
    with pytest.raises(ValueError, match="dtype must be float32"):
        fr.onnx.load(m, dtype=np.float64)
