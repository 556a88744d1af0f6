"""fr.onnx.export of fr.GRU as standard ONNX GRU nodes, run in ONNX Runtime, and
fr.onnx.load of them back: both linear_before_reset values, layers, bidirectional,
reverse, batch_first, sequence_lens, initial states, layout=1 nodes, the
fusedrnn.torch module. The weights come back bit for bit."""
import numpy as np
import pytest

import fusedrnn as fr

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CASES = {
    "plain": dict(),
    "2layers-bidir": dict(num_layers=2, bidirectional=True),
    "reverse-batch_first": dict(reverse=True, batch_first=True),
    "3layers-batch_first": dict(num_layers=3, batch_first=True),
    "bidir-batch_first": dict(bidirectional=True, batch_first=True),
}


def _inputs(layer, T, B, seed):
    rng = np.random.default_rng(seed)
    LD = layer.num_layers * layer.num_directions
    x = rng.standard_normal((B, T, layer.input_size) if layer.batch_first
                            else (T, B, layer.input_size)).astype(np.float32)
    lens = rng.integers(0, T + 1, B).astype(np.int32)
    lens[0] = T
    h0 = (0.5 * rng.standard_normal((LD, B, layer.hidden_size))).astype(np.float32)
    return x, lens, h0


@pytest.mark.parametrize("lbr", [True, False], ids=["linear_before_reset", "original"])
@pytest.mark.parametrize("case", list(CASES))
def test_export_runs_in_onnxruntime_and_loads_back(case, lbr, tmp_path):
    layer = fr.GRU(3, 5, linear_before_reset=lbr, seed=1, **CASES[case])
    x, lens, h0 = _inputs(layer, T=6, B=3, seed=2)
    path = tmp_path / "gru.onnx"
    model = fr.onnx.export(layer, path, sequence_lens=True, initial_state=True)
    nodes = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(nodes) == layer.num_layers
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["linear_before_reset"] == int(lbr)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    Y, Y_h = sess.run(None, {"X": x, "sequence_lens": lens, "initial_h": h0})
    y, st = layer.forward(x, fr.GRU.State(h0), lengths=lens, training=False)
    np.testing.assert_allclose(Y, y, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(Y_h, st.h, rtol=1e-5, atol=2e-6)
    back = fr.onnx.load(path)
    assert isinstance(back, fr.GRU) and repr(back) == repr(layer)
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k], err_msg=k)
    # without sequence_lens and initial state: zero states, every step
    plain = fr.onnx.to_model(layer)
    Y, Y_h = ort.InferenceSession(plain.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"X": x})
    y, st = layer.forward(x, training=False)
    np.testing.assert_allclose(Y, y, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(Y_h, st.h, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("lbr", [True, False])
def test_layout_1_and_float64_round_trip(lbr):
    layer = fr.GRU(2, 4, linear_before_reset=lbr, num_layers=2, bidirectional=True,
                   batch_first=True, dtype=np.float64, seed=3)
    for layout, dtype in ((1, None), (0, None), (1, np.float32)):
        model = fr.onnx.to_model(layer, sequence_lens=True, initial_state=True, layout=layout,
                                 dtype=dtype)
        back = fr.onnx.load(model)
        assert back.batch_first and back.linear_before_reset == lbr and back.num_layers == 2
        for k in layer.params:
            want = layer.params[k] if dtype is None else layer.params[k].astype(np.float32)
            np.testing.assert_array_equal(back.params[k], want, err_msg=k)


def test_torch_module_exports_and_load_nodes():
    torch = pytest.importorskip("torch")
    frt = pytest.importorskip("fusedrnn.torch")
    m = frt.GRU(3, 4, linear_before_reset=False, num_layers=2, seed=0)
    model = fr.onnx.to_model(m)
    layers = fr.onnx.load_nodes(model)
    assert [type(c).__name__ for c in layers] == ["GRU", "GRU"]
    x = torch.randn(5, 2, 3)
    Y, Y_h = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"X": x.numpy()})
    with torch.no_grad():
        y, h = m(x)
    np.testing.assert_allclose(Y, y.numpy(), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(Y_h, h.numpy(), rtol=1e-5, atol=2e-6)
    assert fr.onnx.blocking_features(m) == []


def test_mixed_formulations_are_not_one_stack():
    model = fr.onnx.to_model(fr.GRU(3, 4, num_layers=2, seed=0))
    second = [n for n in model.graph.node if n.op_type == "GRU"][1]
    for a in second.attribute:
        if a.name == "linear_before_reset":
            a.i = 0
    with pytest.raises(ValueError, match="do not form one uniform stack"):
        fr.onnx.load(model)
    cells = fr.onnx.load_nodes(model)
    assert [c.linear_before_reset for c in cells] == [True, False]
