"""Models exported by torch.onnx.export (the TorchScript exporter, dynamo=False,
which works offline) from torch.nn.LSTM / torch.nn.GRU / torch.nn.RNN load with fr.onnx.load
and compute what torch computes: layers, bidirectional, batch_first, with and
without initial states given. What fusedrnn cannot compute, or a graph whose
states it would drop, is refused with a ValueError."""
import io
import warnings

import numpy as np
import pytest

import fusedrnn as fr

from conftest import assert_close

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _export(module, args, input_names, output_names):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on batch sizes and RNN shapes
        torch.onnx.export(module, args, f, dynamo=False, input_names=input_names,
                          output_names=output_names)
    return onnx.load_from_string(f.getvalue())


CASES = {
    "lstm": ("LSTM", dict()),
    "lstm-2layers": ("LSTM", dict(num_layers=2)),
    "lstm-bidir": ("LSTM", dict(bidirectional=True)),
    "lstm-3layers-bidir-batch_first": ("LSTM", dict(num_layers=3, bidirectional=True,
                                                     batch_first=True)),
    "lstm-no-bias": ("LSTM", dict(bias=False, num_layers=2)),
    "rnn": ("RNN", dict()),
    "rnn-2layers-batch_first": ("RNN", dict(num_layers=2, batch_first=True)),
    "rnn-2layers-bidir": ("RNN", dict(num_layers=2, bidirectional=True)),
    "gru": ("GRU", dict()),
    "gru-2layers-bidir-batch_first": ("GRU", dict(num_layers=2, bidirectional=True,
                                                  batch_first=True)),
    "gru-no-bias": ("GRU", dict(bias=False)),
}


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_onnx_export_loads_and_matches_torch(case, with_state):
    kind, opts = CASES[case]
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, **opts).eval()
    L = module.num_layers * (2 if module.bidirectional else 1)
    T, B = 6, 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, 3) if module.batch_first else (T, B, 3), generator=g)
    h0 = torch.randn(L, B, 5, generator=g)
    c0 = torch.randn(L, B, 5, generator=g)
    is_lstm = kind == "LSTM"
    if with_state:
        hx = (h0, c0) if is_lstm else h0
        args = (x, hx)
        names = ["x", "h0", "c0"] if is_lstm else ["x", "h0"]
    else:
        args, names = (x,), ["x"]
    outs = ["y", "h", "c"] if is_lstm else ["y", "h"]
    model = _export(module, args, names, outs)
    assert sum(n.op_type == kind for n in model.graph.node) == module.num_layers
    layer = fr.onnx.load(model)
    assert type(layer).__name__ == kind
    assert (layer.num_layers, layer.bidirectional, layer.batch_first) == (
        module.num_layers, module.bidirectional, module.batch_first)
    with torch.no_grad():
        y_t, st_t = module(*args)
    state = None
    if with_state:
        state = (fr.LSTMState(c0.numpy(), h0.numpy()) if is_lstm
                 else fr.GRU.State(h0.numpy()) if kind == "GRU"
                 else fr.RNNState(np.zeros_like(h0.numpy()), h0.numpy()))
    y, st = layer.forward(x.numpy(), state=state, training=False)
    assert_close(y, y_t.numpy(), 1e-5, "y")
    if is_lstm:
        assert_close(st.v, st_t[0].numpy(), 1e-5, "h")
        assert_close(st.s, st_t[1].numpy(), 1e-5, "c")
    else:
        assert_close(st.h if kind == "GRU" else st.r, st_t.numpy(), 1e-5, "h")
    # the same weights as from_torch, to the bit
    ref = type(layer).from_torch(module)
    for k in ref.params:
        np.testing.assert_array_equal(layer.params[k], ref.params[k])


def test_relu_rnn_loads_and_matches_torch():
    torch.manual_seed(3)
    module = torch.nn.RNN(3, 4, nonlinearity="relu", num_layers=2)
    x = torch.randn(5, 2, 3)
    model = _export(module, (x,), ["x"], ["y", "h"])
    layer = fr.onnx.load(model)
    assert layer.activation == "relu"
    y, _ = layer.forward(x.numpy(), training=False)
    np.testing.assert_allclose(y, module(x)[0].detach().numpy(), rtol=1e-5, atol=1e-6)


def _two_layer_with_state():
    module = torch.nn.LSTM(3, 4, num_layers=2)
    x, h0, c0 = torch.randn(5, 2, 3), torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    return _export(module, (x, (h0, c0)), ["x", "h0", "c0"], ["y", "h", "c"])


def test_initial_states_that_load_would_drop_are_refused():
    onnx_helper = onnx.helper
    # layer 1 reading layer 0's rows of h0
    m = _two_layer_with_state()
    slices = [n for n in m.graph.node if n.op_type == "Slice" and n.input[0] == "h0"]
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
    starts = consts[slices[1].input[1]]
    starts.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array([0], np.int64)))
    with pytest.raises(ValueError, match=r"initial_h is a Slice of 'h0' with starts=\[0\], "
                                         r"ends=\[2\].*layer 1 takes rows \[1, 2\)"):
        fr.onnx.load(m)
    # a state computed from something else (here tanh of h0)
    m = _two_layer_with_state()
    lstm0 = next(n for n in m.graph.node if n.op_type == "LSTM")
    m.graph.node.insert(0, onnx_helper.make_node("Tanh", [lstm0.input[6]], ["c0_tanh"]))
    lstm0.input[6] = "c0_tanh"
    with pytest.raises(ValueError, match="initial_c comes from a Tanh node"):
        fr.onnx.load(m)
    # a non-zero fill
    module = torch.nn.RNN(3, 4)
    m = _export(module, (torch.randn(5, 2, 3),), ["x"], ["y", "h"])
    expand = next(n for n in m.graph.node if n.op_type == "Expand")
    value = next(n for n in m.graph.node if n.op_type == "Constant" and n.output[0] == expand.input[0])
    value.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    with pytest.raises(ValueError, match="initial_h comes from a Expand node"):
        fr.onnx.load(m)


def test_reshaping_in_front_of_the_first_node_is_refused():
    module = torch.nn.LSTM(3, 4, batch_first=True)
    m = _export(module, (torch.randn(2, 5, 3),), ["x"], ["y", "h", "c"])
    tr = next(n for n in m.graph.node if n.op_type == "Transpose")
    del tr.attribute[:]
    tr.attribute.extend([onnx.helper.make_attribute("perm", [0, 2, 1])])
    with pytest.raises(ValueError, match=r"perm=\[0, 2, 1\]"):
        fr.onnx.load(m)
