"""Issue 3, group 3: against ONNX Runtime's LSTM operator, an independent
implementation of exactly §2 with peepholes, plus input_forget (our coupled
gates), clip (our accumulation_clip), bidirectional and sequence_lens. ONNX
Runtime runs LSTM in float32 only."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

ONNX_ORDER = [0, 3, 1, 2]        # ONNX gates (i, o, f, c) from ours (cu, cs, du, cr) = (i, f, g, o)
ONNX_PEEP_ORDER = [0, 2, 1]      # ONNX P (i, o, f) from ours (cu, cs, cr)


def _gates_to_onnx(m: np.ndarray, H: int) -> np.ndarray:
    return np.concatenate([m[k * H:(k + 1) * H] for k in ONNX_ORDER])


def _onnx_lstm(layer: fr.LSTM, x, s0, v0, lengths):
    T, B, I = x.shape
    H, D = layer.hidden_size, layer.num_directions
    sfx = ["", "_reverse"][:D]
    p = layer.params
    W = np.stack([_gates_to_onnx(p["W_x" + s], H) for s in sfx])
    R = np.stack([_gates_to_onnx(p["W_v" + s], H) for s in sfx])
    Bias = np.stack([np.concatenate([_gates_to_onnx(p["b" + s], H), np.zeros(4 * H, np.float32)])
                     for s in sfx])
    inputs = {"X": x, "W": W, "R": R, "B": Bias,
              "sequence_lens": np.full(B, T, np.int32) if lengths is None else lengths.astype(np.int32),
              "initial_h": v0, "initial_c": s0}
    if layer.peepholes == "diagonal":
        inputs["P"] = np.stack([p["w_s" + s][ONNX_PEEP_ORDER].reshape(-1) for s in sfx])
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward",
                 input_forget=int(layer.coupled_gates))
    if layer.accumulation_clip is not None:
        attrs["clip"] = float(layer.accumulation_clip)
    names = list(inputs)
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], **attrs)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT,
                                       list(v.shape)) for n, v in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    Y, Y_h, Y_c = sess.run(None, {n: np.ascontiguousarray(v) for n, v in inputs.items()})
    return Y.transpose(0, 2, 1, 3).reshape(T, B, D * H), Y_h, Y_c  # (T, D, B, H) -> (T, B, D*H)


CASES = {
    "peepholes": dict(peepholes="diagonal"),
    "coupled": dict(peepholes="diagonal", coupled_gates=True),
    "clip": dict(peepholes="diagonal", accumulation_clip=0.6),
    "bidirectional": dict(peepholes="diagonal", bidirectional=True),
    "lengths": dict(peepholes="diagonal", bidirectional=True, coupled_gates=True,
                    accumulation_clip=0.8, lengths=True),
    "plain-lengths": dict(peepholes=None, lengths=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lstm_matches_onnxruntime(case):
    opts = dict(CASES[case])
    with_lengths = opts.pop("lengths", False)
    T, B, I, H = 9, 4, 5, 7
    layer = fr.LSTM(I, H, dtype=np.float32, seed=11, **opts)
    # larger weights than the default init so that the clip is active
    for v in layer.params.values():
        v *= 3.0
    D = layer.num_directions
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    s0 = rng.standard_normal((D, B, H)).astype(np.float32)
    v0 = rng.uniform(-1, 1, (D, B, H)).astype(np.float32)
    lengths = np.array([9, 4, 1, 6]) if with_lengths else None
    Y, Y_h, Y_c = _onnx_lstm(layer, x, s0, v0, lengths)
    y, st = layer.forward(x, state=fr.LSTMState(s0, v0), lengths=lengths, training=False)
    np.testing.assert_allclose(y, Y, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(st.v, Y_h, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(st.s, Y_c, rtol=1e-4, atol=2e-5)
    if layer.accumulation_clip is not None:  # the clip must have been active
        g = fr.LSTM(I, H, dtype=np.float32, seed=11, **{**opts, "accumulation_clip": None})
        for k in g.params:
            g.params[k][...] = layer.params[k]
        y_noclip, _ = g.forward(x, state=fr.LSTMState(s0, v0), lengths=lengths, training=False)
        assert np.abs(y_noclip - y).max() > 1e-3
