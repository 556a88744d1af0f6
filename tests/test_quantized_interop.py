"""Quantized layers outside forward: their streams (LSTM, RNN, GRU; each step bit for bit as q.forward over the
same frames, chunked == whole, near the reduced-precision oracle) and the fusedrnn.torch modules
that run them for inference (bit for bit as q.forward; near torch.nn.LSTM / RNN / GRU in float32;
training, gradients, compile and export refused)."""
import numpy as np
import pytest

import fusedrnn as fr
from test_quantized import _oracle, assert_matches_oracle

PRECISIONS = ("bf16", "int8")
BOUND_FLOAT = {"bf16": 2e-2, "int8": 5e-2}   # as tests/test_quantized.py

LSTM_OPTIONS = {
    "plain": dict(peepholes=None),
    "diagonal": dict(peepholes="diagonal", num_layers=2),
    "full+proj": dict(peepholes="full", proj_size=3),
    "coupled+clips": dict(coupled_gates=True, cell_clip=1.0, accumulation_clip=2.0),
    "lookahead": dict(context=(1, 2), batch_first=True),
}


def _frames(layer, T, B, seed):
    rng = np.random.default_rng(seed)
    shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    return rng.standard_normal(shape).astype(np.float32)


def _by_steps(stream, x, batch_first):
    xt = np.swapaxes(x, 0, 1) if batch_first else x
    ys = [y for y in (stream.step(np.ascontiguousarray(f)) for f in xt) if y is not None]
    tail = stream.flush()
    y = np.concatenate([np.stack(ys), tail]) if len(tail) else np.stack(ys)
    return np.swapaxes(y, 0, 1) if batch_first else y


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("option", LSTM_OPTIONS)
def test_lstm_stream_equals_forward(precision, option):
    q = fr.LSTM(5, 6, seed=7, **LSTM_OPTIONS[option]).quantize(precision)
    x = _frames(q, 11, 2, seed=1)
    state = q.initial_state(2)
    rng = np.random.default_rng(2)
    state = state._replace(s=rng.uniform(-1, 1, state.s.shape).astype(np.float32),
                           v=rng.uniform(-1, 1, state.v.shape).astype(np.float32))
    y, st = q.forward(x, state)
    stream = q.stream(2, state=state)
    np.testing.assert_array_equal(_by_steps(stream, x, q.batch_first), y)
    if not q.context[1]:
        np.testing.assert_array_equal(stream.state.s, st.s)
        np.testing.assert_array_equal(stream.state.v, st.v)
    chunked = q.stream(2, state=state)            # chunks of 4 (step_many) == whole
    t_axis = 1 if q.batch_first else 0
    parts = [chunked.step_many(np.ascontiguousarray(c))
             for c in np.array_split(x, [4, 8], axis=t_axis)]
    parts.append(chunked.flush() if not q.batch_first else chunked.flush().swapaxes(0, 1))
    np.testing.assert_array_equal(np.concatenate(parts, axis=t_axis), y)
    if option == "plain":   # and near the oracle of the same scheme (as forward is)
        y_ref, _, _ = _oracle(q, x, state=state)
        y32, _ = q.dequantized().forward(x, state, training=False)
        assert_matches_oracle(_by_steps(q.stream(2, state=state), x, False), y_ref, y32)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("state_feedback", [False, True])
def test_rnn_and_sequential_streams_equal_forward(precision, state_feedback):
    rnn = fr.RNN(4, 7, state_feedback, num_layers=2, seed=8).quantize(precision)
    x = _frames(rnn, 9, 3, seed=3)
    y, st = rnn.forward(x)
    s = rnn.stream(3)
    np.testing.assert_array_equal(_by_steps(s, x, False), y)
    np.testing.assert_array_equal(s.state.s, st.s)
    np.testing.assert_array_equal(s.state.r, st.r)
    model = fr.Sequential(fr.RNN(4, 7, state_feedback, seed=1), fr.LSTM(7, 5, seed=2),
                          fr.Linear(5, 2, seed=3)).quantize(precision)
    stream = model.stream(3)
    np.testing.assert_array_equal(np.stack([stream.step(f) for f in x]),
                                  model.forward(x, training=False)[0])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("linear_before_reset", [True, False])
def test_gru_stream_equals_forward(precision, linear_before_reset):
    g = fr.GRU(5, 6, num_layers=2, linear_before_reset=linear_before_reset,
               seed=11).quantize(precision)
    x = _frames(g, 10, 3, seed=5)
    h0 = np.random.default_rng(6).uniform(-1, 1, (2, 3, 6)).astype(np.float32)
    state = fr.GRU.State(h=h0)
    y, st = g.forward(x, state, training=False)
    s = g.stream(3, state=state)
    np.testing.assert_array_equal(_by_steps(s, x, False), y)
    np.testing.assert_array_equal(s.state.h, st.h)
    chunked = g.stream(3, state=state)            # chunks (step_many) == whole
    np.testing.assert_array_equal(
        np.concatenate([chunked.step_many(np.ascontiguousarray(c))
                        for c in np.array_split(x, [3, 7])]), y)
    # the stream runs the reduced kernels, not the float layer's
    y32, _ = g.dequantized().forward(x, state, training=False)
    assert not np.array_equal(y, y32)
    assert np.abs(y - y32).max() < BOUND_FLOAT[precision]
    s.reset(rows=[0])                               # row 0 anew from zeros, the others go on
    got = np.stack([s.step(np.ascontiguousarray(f)) for f in x[:4]])
    np.testing.assert_array_equal(got[:, 0], g.forward(x[:4, :1], training=False)[0][:, 0])
    model = fr.Sequential(fr.GRU(5, 6, seed=1), fr.LSTM(6, 4, seed=2),
                          fr.Linear(4, 2, seed=3)).quantize(precision)
    stream = model.stream(3)
    np.testing.assert_array_equal(np.stack([stream.step(np.ascontiguousarray(f)) for f in x]),
                                  model.forward(x, training=False)[0])


def test_stream_reset_rows_and_weights_modes():
    q = fr.LSTM(3, 4, seed=9).quantize("int8")
    x = _frames(q, 6, 2, seed=4)
    for weights in ("live", "snapshot"):
        s = q.stream(2, weights=weights)
        for f in x[:3]:
            s.step(f)
        s.reset(rows=[1])                  # row 1 starts anew, row 0 goes on
        got = np.stack([s.step(f) for f in x[3:]])
        y, _ = q.forward(x)
        np.testing.assert_array_equal(got[:, 0], y[3:, 0])
        np.testing.assert_array_equal(got[:, 1], q.forward(x[3:, 1:])[0][:, 0])
    with pytest.raises(ValueError, match="bidirectional"):
        fr.LSTM(3, 4, bidirectional=True).quantize("int8").stream(1)
    with pytest.raises(TypeError, match="dtype float32"):
        q.stream(2).step(x[0].astype(np.float64))


# -- fusedrnn.torch ------------------------------------------------------------------------
torch = pytest.importorskip("torch")
frt = pytest.importorskip("fusedrnn.torch")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_module_runs_the_quantized_lstm_bit_for_bit(precision):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True)
    q = fr.LSTM.from_torch(ref).quantize(precision)
    m = frt.LSTM.from_fusedrnn(q)
    assert isinstance(m, frt.QuantizedLSTM) and not m.training
    assert list(m.parameters()) == []
    x = torch.randn(3, 8, 5)
    h0, c0 = torch.randn(4, 3, 6), torch.randn(4, 3, 6)
    lengths = [8, 3, 6]
    with torch.inference_mode():
        out, (h, c) = m(x, (h0, c0), lengths=lengths)
    y, st = q.forward(x.numpy(), fr.LSTMState(c0.numpy(), h0.numpy()), lengths=lengths)
    np.testing.assert_array_equal(out.numpy(), y)
    np.testing.assert_array_equal(h.numpy(), st.v)
    np.testing.assert_array_equal(c.numpy(), st.s)
    with torch.no_grad():   # near torch's float32 LSTM (padded steps: zero outputs in both)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                         enforce_sorted=False)
        want, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed, (h0, c0))[0],
                                                         batch_first=True, total_length=8)
        assert float((out - want).abs().max()) <= BOUND_FLOAT[precision]
        out2, _ = frt.LSTM.from_torch(ref).quantize(precision)(x[1], (h0[:, 1], c0[:, 1]))
    np.testing.assert_array_equal(out2.numpy(), q.forward(x[1:2].numpy(), fr.LSTMState(
        c0[:, 1:2].numpy(), h0[:, 1:2].numpy()))[0][0])          # unbatched input
    if precision == "int8":   # the module exports as its layer does
        back = fr.onnx.load(fr.onnx.to_model(m))
        assert all(np.array_equal(back.params[k], p) for k, p in q.params.items())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_module_runs_the_quantized_rnn(precision):
    torch.manual_seed(1)
    ref = torch.nn.RNN(4, 5, num_layers=2)
    q = fr.RNN.from_torch(ref).quantize(precision)
    m = frt.QuantizedRNN(q)
    x, h0 = torch.randn(7, 2, 4), torch.randn(2, 2, 5)
    with torch.no_grad():
        out, h = m(x, h0)
        want, h_want = ref(x, h0)
    y, st = q.forward(x.numpy(), fr.RNNState(np.zeros_like(h0.numpy()), h0.numpy()))
    np.testing.assert_array_equal(out.numpy(), y)
    np.testing.assert_array_equal(h.numpy(), st.r)
    assert float((out - want).abs().max()) <= BOUND_FLOAT[precision]
    assert float((out - want).abs().max()) > 0
    sf = frt.RNN(4, 5, state_feedback=True, seed=2).quantize(precision)
    with torch.no_grad():
        out, (h, s) = sf(x)
    np.testing.assert_array_equal(out.numpy(), sf.quantized_layer.forward(x.numpy())[0])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_module_runs_the_quantized_gru(precision):
    torch.manual_seed(2)
    ref = torch.nn.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=True)
    q = fr.GRU.from_torch(ref).quantize(precision)
    m = frt.GRU.from_fusedrnn(q)
    assert isinstance(m, frt.QuantizedGRU) and not m.training
    assert list(m.parameters()) == []
    x, h0 = torch.randn(3, 7, 4), torch.randn(4, 3, 5)
    lengths = [7, 2, 5]
    with torch.inference_mode():
        out, h = m(x, h0, lengths=lengths)
        out_zero, h_zero = m(x)                               # h0 = zeros
    y, st = q.forward(x.numpy(), fr.GRU.State(h=h0.numpy()), lengths=lengths)
    np.testing.assert_array_equal(out.numpy(), y)
    np.testing.assert_array_equal(h.numpy(), st.h)
    y0, st0 = q.forward(x.numpy())
    np.testing.assert_array_equal(out_zero.numpy(), y0)
    np.testing.assert_array_equal(h_zero.numpy(), st0.h)
    with torch.no_grad():   # near torch's float32 GRU (padded steps: zero outputs in both)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                         enforce_sorted=False)
        want, h_want = ref(packed, h0)
        want, _ = torch.nn.utils.rnn.pad_packed_sequence(want, batch_first=True, total_length=7)
        assert 0 < float((out - want).abs().max()) <= BOUND_FLOAT[precision]
        assert float((h - h_want).abs().max()) <= BOUND_FLOAT[precision]
        out1, h1 = frt.GRU.from_torch(ref).quantize(precision)(x[1], h0[:, 1])  # unbatched
    y1, st1 = q.forward(x[1:2].numpy(), fr.GRU.State(h=h0[:, 1:2].numpy()))
    np.testing.assert_array_equal(out1.numpy(), y1[0])
    np.testing.assert_array_equal(h1.numpy(), st1.h[:, 0])
    orig = frt.GRU(4, 3, linear_before_reset=False, seed=3).quantize(precision)
    with torch.no_grad():
        out, h = orig(x[:, :4].transpose(0, 1).contiguous())
    np.testing.assert_array_equal(
        out.numpy(), orig.quantized_layer.forward(x[:, :4].transpose(0, 1).numpy())[0])


def test_torch_module_refuses_training_gradients_compile_export():
    m = frt.LSTM(3, 4, seed=0).quantize("int8")
    x = torch.randn(5, 2, 3)
    m.train()
    with pytest.raises(ValueError, match="inference only.*module.eval"):
        m(x)
    m.eval()
    with pytest.raises(ValueError, match="requires grad.*no_grad"):
        m(x.requires_grad_())
    x = x.detach()
    out, _ = m(x)                      # grad mode on, nothing requires grad: fine
    assert not out.requires_grad
    with pytest.raises(Exception, match="cannot be compiled, exported or traced"):
        torch.export.export(m, (x,))
    with pytest.raises(Exception, match="cannot be compiled, exported or traced"):
        torch.jit.trace(m, (x,))
    with pytest.raises(Exception, match="cannot be compiled, exported or traced"):
        torch.compile(m, fullgraph=True, backend="eager")(x)
    with pytest.raises(ValueError, match="quantized already"):
        m.quantize("bf16")
    with pytest.raises(ValueError, match="quantized_layer.stream"):
        m.stream(1)
    with pytest.raises(TypeError, match="QuantizedLSTM"):
        frt.QuantizedLSTM(fr.LSTM(3, 4))
    with pytest.raises(TypeError, match="QuantizedGRU"):
        frt.QuantizedGRU(fr.GRU(3, 4))
    g = frt.GRU(3, 4, seed=0).quantize("int8")
    g.train()
    with pytest.raises(ValueError, match="inference only.*module.eval"):
        g(x)
    g.eval()
    with pytest.raises(ValueError, match="requires grad.*no_grad"):
        g(x.clone().requires_grad_())
