"""layer.quantize("bf16" | "int8"): the inference-only reduced-precision LSTM against the
NumPy oracle computing the same scheme (fusedrnn.reference with precision=, docs/equations.md
§7) on every ISA path this CPU runs, against the float32 layer within stated bounds, and its
contract: errors, read-only parameters, checkpoints, Sequential, threads, state carry."""
from __future__ import annotations

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _kernel, _tuning
from fusedrnn import reference as ref
from fusedrnn.core._layer import suffix

PRECISIONS = ("bf16", "int8")
BOUND_FLOAT = {"bf16": 2e-2, "int8": 5e-2}   # max |y - y_float32| for these small random nets


def assert_matches_oracle(got, want, float32):
    """The kernel against the oracle of the same scheme. Their GEMMs agree bit for bit
    (tests/test_qgemm.py); the element-wise passes (sigmoid, tanh, fused multiply-adds)
    differ in the last bits, and where an activation lies within those bits of a rounding
    boundary of bf16 or of the int8 grid it is rounded the other way: one step of one
    element, which moves later values a little. So: nearly all elements equal to float32
    rounding, and the few others far closer to the oracle than float32 is."""
    got, want, float32 = (np.asarray(a, np.float64) for a in (got, want, float32))
    d = np.abs(got - want)
    off = d > 2e-6 + 1e-6 * np.abs(want)
    assert off.mean() <= 0.05, f"{off.sum()} of {off.size} elements differ from the oracle"
    dist = np.abs(float32 - want).max()
    assert d.max() <= 0.25 * dist, f"max |kernel - oracle| {d.max():.2e}, float32 is {dist:.2e} away"


def _paths():
    out = []
    for precision in PRECISIONS:
        for isa, name, needs, ok in _kernel.qisa_paths(precision):
            out.append(pytest.param(precision, isa, id=f"{precision}-{name}", marks=() if ok else
                                    pytest.mark.skip(reason=f"{name} needs {needs}, which this "
                                                            "CPU lacks")))
    return out


@pytest.fixture
def isa_forced():
    saved = {p: _kernel.qget_isa(p) for p in PRECISIONS}
    yield lambda precision, isa: _kernel.qset_isa(precision, isa)
    for p, isa in saved.items():
        _kernel.qset_isa(p, isa)


def _oracle_precision(q):
    """The oracle's name of the scheme the kernel runs now: bf16 on the vdpbf16ps path adds
    the products pair by pair ("bf16_pairs"), the other bf16 paths in k order."""
    if q.precision == "bf16" and _kernel.qisa_paths("bf16")[_kernel.qget_isa("bf16")][1] == \
            "avx512bf16":
        return "bf16_pairs"
    return q.precision


def _oracle(q, x, lengths=None, state=None):
    """reference.lstm_network_forward on q's reduced parameters."""
    layers = [{name: q.params[name + suffix(l, d)]
               for name in q._cell_param_shapes(q._cell_input_size(l))}
              for l in range(q.num_layers) for d in range(q.num_directions)]
    xt = np.swapaxes(x, 0, 1) if q.batch_first else x
    s0 = v0 = None
    if state is not None:
        s0, v0 = state.s, state.v
    y, s_T, v_T, _ = ref.lstm_network_forward(
        xt, layers, s0, v0, bidirectional=q.bidirectional, lengths=lengths,
        precision=_oracle_precision(q), coupled_gates=q.coupled_gates, cell_clip=q.cell_clip,
        accumulation_clip=q.accumulation_clip, context=q.context) if not q.reverse else \
        _reverse_oracle(q, xt, layers, lengths)
    return (np.swapaxes(y, 0, 1) if q.batch_first else y), s_T, v_T


def _reverse_oracle(q, xt, layers, lengths):
    inp, s_T, v_T = xt, [], []
    for l in range(q.num_layers):
        y, s, v, _ = ref.lstm_forward(inp, layers[l], lengths=lengths, reverse=True,
                                      precision=_oracle_precision(q), coupled_gates=q.coupled_gates,
                                      cell_clip=q.cell_clip, accumulation_clip=q.accumulation_clip,
                                      context=q.context if l == 0 else (0, 0))
        inp = y
        s_T.append(s)
        v_T.append(v)
    return inp, np.stack(s_T), np.stack(v_T), None


OPTIONS = {
    "diagonal": dict(),
    "no-peepholes": dict(peepholes=None),
    "full-peepholes": dict(peepholes="full"),
    "projection": dict(proj_size=5),
    "context": dict(context=(2, 1)),
    "coupled-clips": dict(coupled_gates=True, cell_clip=0.6, accumulation_clip=1.5),
    "stack-bidirectional": dict(num_layers=2, bidirectional=True, proj_size=4),
    "reverse": dict(reverse=True, num_layers=2),
    "batch-first": dict(batch_first=True),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_option_matches_the_oracle_and_stays_near_float(precision, option):
    # data seeded by the option's place in OPTIONS: the same in every process (hash() of a
    # str is not). Rarely (about 1 in 200 draws here) a rounding flip early in a row moves
    # more than 5% of the elements a little: the bound below stands, the draws are fixed.
    rng = np.random.default_rng(list(OPTIONS).index(option))
    kw = OPTIONS[option]
    lstm = fr.LSTM(6, 12, seed=3, **kw)
    q = lstm.quantize(precision)
    assert isinstance(q, fr.QuantizedLSTM) and q.precision == precision
    T, B = 9, 4
    shape = (B, T, 6) if lstm.batch_first else (T, B, 6)
    x = rng.uniform(-1.5, 1.5, shape).astype(np.float32)
    lens = np.array([9, 0, 4, 7])
    y, st = q.forward(x, training=False, lengths=lens)
    y_r, s_r, v_r = _oracle(q, x, lens)
    y_f, st_f = lstm.forward(x, training=False, lengths=lens)
    assert_matches_oracle(y, y_r, y_f)
    assert_matches_oracle(st.s, s_r, st_f.s)
    assert_matches_oracle(st.v, v_r, st_f.v)
    err = max(np.abs(y - y_f).max(), np.abs(st.s - st_f.s).max())
    assert 1e-5 < err < BOUND_FLOAT[precision], err


@pytest.mark.parametrize("precision, isa", _paths())
def test_each_isa_path_matches_the_oracle(precision, isa, isa_forced):
    isa_forced(precision, isa)
    rng = np.random.default_rng(isa)
    lstm = fr.LSTM(37, 40, proj_size=9, seed=5)          # K off the groups, H off the panel
    q = lstm.quantize(precision)
    for B in (13, 17):  # the bf16 AVX2 path's recurrent product: its 2-row tile, its wide one
        x = rng.uniform(-1, 1, (6, B, 37)).astype(np.float32)
        y, st = q.forward(x, training=False)
        y_r, s_r, _ = _oracle(q, x)
        y_f, st_f = lstm.forward(x, training=False)
        assert_matches_oracle(y, y_r, y_f)
        assert_matches_oracle(st.s, s_r, st_f.s)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_threads_give_the_same_numbers(precision):
    rng = np.random.default_rng(7)
    lstm = fr.LSTM(20, 70, proj_size=33, seed=2)         # 3 panels of units, 2 of outputs
    q = lstm.quantize(precision)
    x = rng.uniform(-1, 1, (12, 5, 20)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        with _tuning.override(num_threads=n, min_step_flops=0, min_step_bytes=0):
            outs.append(q.forward(x, training=False)[0])
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])        # each row quantised alike, sums alike


@pytest.mark.parametrize("precision", PRECISIONS)
def test_state_carry_equals_one_call(precision):
    rng = np.random.default_rng(8)
    q = fr.LSTM(4, 10, seed=1).quantize(precision)
    x = rng.uniform(-1, 1, (11, 3, 4)).astype(np.float32)
    y, st = q.forward(x, training=False)
    y1, st1 = q.forward(x[:5], training=False)
    y2, st2 = q.forward(x[5:], st1, training=False)
    np.testing.assert_array_equal(np.concatenate([y1, y2]), y)
    np.testing.assert_array_equal(st2.s, st.s)


def test_stored_weights_and_bytes():
    lstm = fr.LSTM(64, 128, proj_size=64, seed=0)   # K >= 64: int8 + scales <= 0.27x
    for precision, dt in (("bf16", np.uint16), ("int8", np.int8)):
        q = lstm.quantize(precision)
        for name in ("W_x", "W_v", "W_qv"):
            assert q.params[name].dtype == dt and q.params[name].shape == lstm.params[name].shape
            if precision == "int8":
                w_q, w_s = ref.quantize_int8(lstm.params[name])
                np.testing.assert_array_equal(q.params[name], w_q)
                np.testing.assert_array_equal(q.params[name + "_scale"], w_s)
                reduced = q.params[name].nbytes + q.params[name + "_scale"].nbytes
                assert reduced <= 0.27 * lstm.params[name].nbytes
            else:
                np.testing.assert_array_equal(q.params[name], ref.bf16_bits(lstm.params[name]))
                assert q.params[name].nbytes == lstm.params[name].nbytes // 2
        for name in ("b", "w_s"):
            assert q.params[name].dtype == np.float32
            np.testing.assert_array_equal(q.params[name], lstm.params[name])
    # float64 layers quantize from their float32 values
    l64 = fr.LSTM(8, 8, seed=1, dtype=np.float64)
    q64 = l64.quantize("int8")
    w_q, _ = ref.quantize_int8(l64.params["W_x"].astype(np.float32))
    np.testing.assert_array_equal(q64.params["W_x"], w_q)
    assert q64.dtype == np.float32


@pytest.mark.parametrize("precision", PRECISIONS)
def test_save_and_load_bit_for_bit(precision, tmp_path):
    rng = np.random.default_rng(9)
    q = fr.LSTM(5, 9, num_layers=2, bidirectional=True, seed=4).quantize(precision)
    path = tmp_path / "q.npz"
    fr.save(path, q, metadata={"note": "quantized"})
    back = fr.load(path)
    assert type(back) is fr.QuantizedLSTM and back.precision == precision
    assert set(back.params) == set(q.params)
    for k, p in q.params.items():
        assert back.params[k].dtype == p.dtype
        np.testing.assert_array_equal(back.params[k], p)
        assert not back.params[k].flags.writeable
    x = rng.uniform(-1, 1, (6, 2, 5)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x, training=False)[0], q.forward(x, training=False)[0])
    model, opt, meta = fr.load_checkpoint(path)
    assert opt is None and meta == {"note": "quantized"}


def test_sequential_quantizes_its_recurrent_layers(tmp_path):
    rng = np.random.default_rng(10)
    model = fr.Sequential(fr.LSTM(4, 8, seed=1), fr.LSTM(8, 6, peepholes=None, seed=2),
                          fr.Linear(6, 3, seed=3))
    q = model.quantize("int8")
    assert [type(l).__name__ for l in q.layers] == ["QuantizedLSTM", "QuantizedLSTM", "Linear"]
    x = rng.uniform(-1, 1, (7, 2, 4)).astype(np.float32)
    y, _ = q.forward(x, training=False)
    h, _ = q.layers[0].forward(x, training=False)
    h, _ = q.layers[1].forward(h, training=False)
    np.testing.assert_array_equal(y, q.layers[2].forward(h, training=False))
    assert np.abs(y - model.forward(x, training=False)[0]).max() < BOUND_FLOAT["int8"]
    fr.save(tmp_path / "s.npz", q)
    np.testing.assert_array_equal(fr.load(tmp_path / "s.npz").forward(x, training=False)[0], y)


def test_clear_errors():
    lstm = fr.LSTM(3, 4, seed=0)
    for bad in ("fp8", "float16", None, 8):
        with pytest.raises(ValueError, match="precision must be 'bf16' or 'int8'"):
            lstm.quantize(bad)
    q = lstm.quantize("bf16")
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match="inference only"):
        q.forward(x, training=True)
    with pytest.raises(ValueError, match="inference only"):
        q(x, training=True)
    with pytest.raises(ValueError, match="inference only"):
        q.backward()
    with pytest.raises(ValueError, match="inference only"):
        q.zero_grad()
    with pytest.raises(ValueError, match="already quantized"):
        q.quantize("int8")
    with pytest.raises(ValueError, match="read-only"):
        q.params["W_x"][0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        q.params["b"][0] = 1
    q.params["W_v"] = np.zeros((16, 4), np.uint16)          # replaced: refused at the call
    with pytest.raises(ValueError, match="cannot be replaced"):
        q.forward(x, training=False)
    with pytest.raises(ValueError, match="not finite"):
        l2 = fr.LSTM(3, 4, seed=0)
        l2.params["W_x"][0, 0] = np.nan
        l2.quantize("int8")
    with pytest.raises(TypeError, match="float32"):
        fr.QuantizedLSTM(3, 4, precision="int8", dtype=np.float64)
    with pytest.raises(ValueError, match="for inference only"):
        fr.Sequential(lstm, fr.Linear(4, 2)).quantize("int8").forward(x)   # training=True


# ---- the canonical RNN: W_x x[n], W_r r[n-1] reduced, W_s s[n-1] float32 ------------------
def _rnn_oracle(q, x, lengths=None, state=None):
    """reference.rnn_network_forward (reverse: rnn_forward per layer) on q's parameters."""
    layers = [{name: q.params[name + suffix(l, d)]
               for name in q._cell_param_shapes(q._cell_input_size(l))}
              for l in range(q.num_layers) for d in range(q.num_directions)]
    xt = np.swapaxes(x, 0, 1) if q.batch_first else x
    s0 = r0 = None if state is None else state
    if state is not None:
        s0, r0 = state.s, state.r
    prec = _oracle_precision(q)
    if q.reverse:
        inp, s_T, r_T = xt, [], []
        for l in range(q.num_layers):
            inp, s, r, _ = ref.rnn_forward(inp, layers[l], None if s0 is None else s0[l],
                                           None if r0 is None else r0[l], lengths=lengths,
                                           reverse=True, precision=prec, activation=q.activation,
                                           accumulation_clip=q.accumulation_clip)
            s_T.append(s)
            r_T.append(r)
        y, s_T, r_T = inp, np.stack(s_T), np.stack(r_T)
    else:
        y, s_T, r_T, _ = ref.rnn_network_forward(xt, layers, s0, r0, bidirectional=q.bidirectional,
                                                 lengths=lengths, precision=prec,
                                                 activation=q.activation,
                                                 accumulation_clip=q.accumulation_clip)
    return (np.swapaxes(y, 0, 1) if q.batch_first else y), s_T, r_T


def _rnn(seed, *args, **kw):
    """An fr.RNN whose state feedback W_s (when on) keeps the state bounded."""
    rnn = fr.RNN(*args, seed=seed, **kw)
    for k, p in rnn.params.items():
        if k.startswith("W_s"):
            p *= 0.3
    return rnn


RNN_OPTIONS = {
    "plain": dict(),
    "state-feedback": dict(state_feedback=True),
    "stack-bidirectional": dict(state_feedback=True, num_layers=2, bidirectional=True),
    "reverse": dict(reverse=True, num_layers=2, state_feedback=True),
    "batch-first": dict(batch_first=True),
    "relu-clip": dict(activation="relu", accumulation_clip=1.5, state_feedback=True),
}


@pytest.mark.parametrize("option", list(RNN_OPTIONS))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_rnn_every_option_matches_the_oracle_and_stays_near_float(precision, option):
    rng = np.random.default_rng(sum(map(ord, option)))
    rnn = _rnn(3, 6, 12, **RNN_OPTIONS[option])
    q = rnn.quantize(precision)
    assert isinstance(q, fr.QuantizedRNN) and q.precision == precision
    T, B = 9, 4
    x = rng.uniform(-1.5, 1.5, (B, T, 6) if rnn.batch_first else (T, B, 6)).astype(np.float32)
    lens = np.array([9, 0, 4, 7])
    st0 = rnn.State(*(rng.uniform(-0.5, 0.5, (q.num_layers * q.num_directions, B, 12))
                      .astype(np.float32) for _ in range(2)))
    y, st = q.forward(x, st0, training=False, lengths=lens)
    y_r, s_r, r_r = _rnn_oracle(q, x, lens, st0)
    y_f, st_f = rnn.forward(x, st0, training=False, lengths=lens)
    assert_matches_oracle(y, y_r, y_f)
    assert_matches_oracle(st.s, s_r, st_f.s)
    assert_matches_oracle(st.r, r_r, st_f.r)
    err = max(np.abs(y - y_f).max(), np.abs(st.s - st_f.s).max())
    assert 1e-5 < err < BOUND_FLOAT[precision], err


@pytest.mark.parametrize("precision, isa", _paths())
def test_rnn_each_isa_path_matches_the_oracle(precision, isa, isa_forced):
    isa_forced(precision, isa)
    rng = np.random.default_rng(isa + 20)
    rnn = _rnn(5, 37, 40, state_feedback=True)             # K off the groups, H off the panel
    q = rnn.quantize(precision)
    x = rng.uniform(-1, 1, (6, 13, 37)).astype(np.float32)
    y, st = q.forward(x, training=False)
    y_r, s_r, _ = _rnn_oracle(q, x)
    y_f, st_f = rnn.forward(x, training=False)
    assert_matches_oracle(y, y_r, y_f)
    assert_matches_oracle(st.s, s_r, st_f.s)


@pytest.mark.parametrize("state_feedback", [False, True])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_rnn_threads_give_the_same_numbers(precision, state_feedback):
    rng = np.random.default_rng(17)
    q = _rnn(2, 20, 70, state_feedback=state_feedback).quantize(precision)  # 3 panels of units
    x = rng.uniform(-1, 1, (12, 5, 20)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        with _tuning.override(num_threads=n, min_step_flops=0, min_step_bytes=0):
            outs.append(q.forward(x, training=False))
    for y, st in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        np.testing.assert_array_equal(st.s, outs[0][1].s)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_rnn_state_carry_stored_weights_save_and_load(precision, tmp_path):
    rng = np.random.default_rng(18)
    rnn = _rnn(4, 5, 9, state_feedback=True, num_layers=2, bidirectional=True)
    q = rnn.quantize(precision)
    for k in rnn.params:                                   # what is stored, and how
        name = k.split("_l")[0].replace("_reverse", "")
        if name in ("W_x", "W_r"):
            if precision == "int8":
                w_q, w_s = ref.quantize_int8(rnn.params[k])
                np.testing.assert_array_equal(q.params[k], w_q)
                np.testing.assert_array_equal(q.params[name + "_scale" + k[len(name):]], w_s)
            else:
                np.testing.assert_array_equal(q.params[k], ref.bf16_bits(rnn.params[k]))
        else:                                              # theta_s, W_s stay float32
            assert q.params[k].dtype == np.float32
            np.testing.assert_array_equal(q.params[k], rnn.params[k])
    x = rng.uniform(-1, 1, (11, 2, 5)).astype(np.float32)
    y, _ = q.forward(x, training=False)
    qu = _rnn(4, 5, 9, state_feedback=True, num_layers=2).quantize(precision)  # one direction
    yu, st = qu.forward(x, training=False)
    y1, st1 = qu.forward(x[:4], training=False)
    y2, st2 = qu.forward(x[4:], st1, training=False)
    np.testing.assert_array_equal(np.concatenate([y1, y2]), yu)
    np.testing.assert_array_equal(st2.s, st.s)
    fr.save(tmp_path / "r.npz", q)
    back = fr.load(tmp_path / "r.npz")
    assert type(back) is fr.QuantizedRNN and back.precision == precision
    for k, p in q.params.items():
        assert back.params[k].dtype == p.dtype and not back.params[k].flags.writeable
        np.testing.assert_array_equal(back.params[k], p)
    np.testing.assert_array_equal(back.forward(x, training=False)[0], y)


def test_rnn_sequential_and_errors():
    rng = np.random.default_rng(19)
    model = fr.Sequential(fr.RNN(4, 8, seed=1), fr.LSTM(8, 6, seed=2), fr.Linear(6, 3, seed=3))
    q = model.quantize("bf16")
    assert [type(l).__name__ for l in q.layers] == ["QuantizedRNN", "QuantizedLSTM", "Linear"]
    x = rng.uniform(-1, 1, (7, 2, 4)).astype(np.float32)
    y, _ = q.forward(x, training=False)
    h, _ = q.layers[0].forward(x, training=False)
    h, _ = q.layers[1].forward(h, training=False)
    np.testing.assert_array_equal(y, q.layers[2].forward(h, training=False))
    r = q.layers[0]
    with pytest.raises(ValueError, match="inference only"):
        r.forward(x, training=True)
    with pytest.raises(ValueError, match="inference only"):
        r.backward()
    with pytest.raises(ValueError, match="read-only"):
        r.params["W_r"][0, 0] = 1
    with pytest.raises(ValueError, match="precision must be 'bf16' or 'int8'"):
        fr.RNN(3, 4).quantize("fp8")
    with pytest.raises(TypeError, match="float32"):
        fr.QuantizedRNN(3, 4, precision="bf16", dtype=np.float64)
    x1 = q.layers[0].forward(x)[0]
    for layer, inp in ((r, x), (q.layers[1], x1)):   # streams: tests/test_quantized_interop.py
        stream = layer.stream(2)
        np.testing.assert_array_equal(np.stack([stream.step(f) for f in inp]),
                                      layer.forward(inp)[0])


# ---- the GRU: W_x x[n], W_h* h[n-1] (and W_hn (r ⊙ h[n-1])) reduced --------------------
def _gru_oracle(q, x, lengths=None, state=None):
    """reference.gru_network_forward (reverse: gru_forward per layer) on q's parameters."""
    layers = [{name: q.params[name + suffix(l, d)]
               for name in q._cell_param_shapes(q._cell_input_size(l))}
              for l in range(q.num_layers) for d in range(q.num_directions)]
    xt = np.swapaxes(x, 0, 1) if q.batch_first else x
    h0 = None if state is None else state.h
    prec = _oracle_precision(q)
    if q.reverse:
        inp, h_T = xt, []
        for l in range(q.num_layers):
            inp, h, _ = ref.gru_forward(inp, layers[l], None if h0 is None else h0[l],
                                        linear_before_reset=q.linear_before_reset,
                                        lengths=lengths, reverse=True, precision=prec)
            h_T.append(h)
        y, h_T = inp, np.stack(h_T)
    else:
        y, h_T, _ = ref.gru_network_forward(xt, layers, h0,
                                            linear_before_reset=q.linear_before_reset,
                                            bidirectional=q.bidirectional, lengths=lengths,
                                            precision=prec)
    return (np.swapaxes(y, 0, 1) if q.batch_first else y), h_T


GRU_OPTIONS = {
    "linear-before-reset": dict(),
    "reset-first": dict(linear_before_reset=False),
    "stack-bidirectional": dict(num_layers=2, bidirectional=True),
    "stack-bidirectional-reset-first": dict(num_layers=2, bidirectional=True,
                                            linear_before_reset=False),
    "reverse": dict(reverse=True, num_layers=2, linear_before_reset=False),
    "batch-first": dict(batch_first=True),
}


@pytest.mark.parametrize("option", list(GRU_OPTIONS))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_gru_every_option_matches_the_oracle_and_stays_near_float(precision, option):
    rng = np.random.default_rng(list(GRU_OPTIONS).index(option) + 40)
    gru = fr.GRU(6, 12, seed=3, **GRU_OPTIONS[option])
    q = gru.quantize(precision)
    assert isinstance(q, fr.QuantizedGRU) and q.precision == precision
    assert q.linear_before_reset == gru.linear_before_reset
    T, B = 9, 4
    x = rng.uniform(-1.5, 1.5, (B, T, 6) if gru.batch_first else (T, B, 6)).astype(np.float32)
    lens = np.array([9, 0, 4, 7])
    st0 = gru.State(rng.uniform(-0.5, 0.5, (q.num_layers * q.num_directions, B, 12))
                    .astype(np.float32))
    y, st = q.forward(x, st0, training=False, lengths=lens)
    y_r, h_r = _gru_oracle(q, x, lens, st0)
    y_f, st_f = gru.forward(x, st0, training=False, lengths=lens)
    assert_matches_oracle(y, y_r, y_f)
    assert_matches_oracle(st.h, h_r, st_f.h)
    err = max(np.abs(y - y_f).max(), np.abs(st.h - st_f.h).max())
    assert 1e-5 < err < BOUND_FLOAT[precision], err
    # the row of length 0 holds its initial state
    np.testing.assert_array_equal(st.h[0, 1], st0.h[0, 1])


@pytest.mark.parametrize("linear_before_reset", [True, False])
@pytest.mark.parametrize("precision, isa", _paths())
def test_gru_each_isa_path_matches_the_oracle(precision, isa, linear_before_reset, isa_forced):
    """Step by step: the oracle's step n from the kernel's own h[n-1] (so a rounding flip
    of one step, see assert_matches_oracle, does not carry into the later ones), and the
    whole sequence against the oracle's within a quarter of float32's distance."""
    isa_forced(precision, isa)
    rng = np.random.default_rng(isa + 30)
    gru = fr.GRU(37, 40, linear_before_reset=linear_before_reset, seed=5)  # K, H off the grid
    q = gru.quantize(precision)
    T, B = 8, 17   # from 16 rows on the bf16 AVX2 path's recurrent product runs its wide tile
    x = rng.uniform(-1, 1, (T, B, 37)).astype(np.float32)
    h0 = rng.uniform(-0.5, 0.5, (1, B, 40)).astype(np.float32)
    y, st = q.forward(x, gru.State(h0), training=False)
    p = {name: q.params[name] for name in q._cell_param_shapes(37)}
    h_prev = np.concatenate([h0, y[:-1]])
    y_steps = np.concatenate([ref.gru_forward(x[n:n + 1], p, h_prev[n], precision=
                                              _oracle_precision(q),
                                              linear_before_reset=linear_before_reset)[0]
                              for n in range(T)])
    y_f, st_f = gru.forward(x, gru.State(h0), training=False)
    assert_matches_oracle(y, y_steps, y_f)
    y_r, h_r = _gru_oracle(q, x, state=gru.State(h0))
    assert np.abs(y - y_r).max() <= 0.25 * np.abs(y_f - y_r).max()
    np.testing.assert_array_equal(st.h[0], y[-1])


@pytest.mark.parametrize("linear_before_reset", [True, False])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_gru_threads_give_the_same_numbers(precision, linear_before_reset):
    rng = np.random.default_rng(27)
    q = fr.GRU(20, 70, linear_before_reset=linear_before_reset, seed=2).quantize(precision)
    x = rng.uniform(-1, 1, (12, 5, 20)).astype(np.float32)          # 3 panels of units
    outs = []
    for n in (1, 2, 3):
        with _tuning.override(num_threads=n, min_step_flops=0, min_step_bytes=0):
            outs.append(q.forward(x, training=False))
    for y, st in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        np.testing.assert_array_equal(st.h, outs[0][1].h)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gru_state_carry_stored_weights_save_and_load(precision, tmp_path):
    rng = np.random.default_rng(28)
    gru = fr.GRU(5, 9, num_layers=2, bidirectional=True, linear_before_reset=False, seed=4)
    q = gru.quantize(precision)
    for k in gru.params:                                   # what is stored, and how
        name = k.split("_l")[0].replace("_reverse", "")
        if name in ("W_x", "W_h"):
            if precision == "int8":
                w_q, w_s = ref.quantize_int8(gru.params[k])
                np.testing.assert_array_equal(q.params[k], w_q)
                np.testing.assert_array_equal(q.params[name + "_scale" + k[len(name):]], w_s)
                reduced = q.params[k].nbytes + q.params[name + "_scale" + k[len(name):]].nbytes
                assert reduced < 0.5 * gru.params[k].nbytes
            else:
                np.testing.assert_array_equal(q.params[k], ref.bf16_bits(gru.params[k]))
                assert q.params[k].nbytes == gru.params[k].nbytes // 2
        else:                                              # b stays float32
            assert q.params[k].dtype == np.float32
            np.testing.assert_array_equal(q.params[k], gru.params[k])
    x = rng.uniform(-1, 1, (11, 2, 5)).astype(np.float32)
    y, _ = q.forward(x, training=False)
    qu = fr.GRU(5, 9, num_layers=2, seed=4).quantize(precision)          # one direction
    yu, st = qu.forward(x, training=False)
    y1, st1 = qu.forward(x[:4], training=False)
    y2, st2 = qu.forward(x[4:], st1, training=False)
    np.testing.assert_array_equal(np.concatenate([y1, y2]), yu)
    np.testing.assert_array_equal(st2.h, st.h)
    fr.save(tmp_path / "g.npz", q)
    back = fr.load(tmp_path / "g.npz")
    assert type(back) is fr.QuantizedGRU and back.precision == precision
    assert back.linear_before_reset is False
    assert set(back.params) == set(q.params)
    for k, p in q.params.items():
        assert back.params[k].dtype == p.dtype and not back.params[k].flags.writeable
        np.testing.assert_array_equal(back.params[k], p)
    np.testing.assert_array_equal(back.forward(x, training=False)[0], y)
    # the float layer of the reduced values is what the reduced products approximate
    deq = q.dequantized()
    assert type(deq) is fr.GRU and deq.linear_before_reset is False
    assert np.abs(deq.forward(x, training=False)[0] - y).max() < BOUND_FLOAT[precision]


def test_gru_sequential_and_errors():
    rng = np.random.default_rng(29)
    model = fr.Sequential(fr.GRU(4, 8, seed=1), fr.LSTM(8, 6, seed=2), fr.Linear(6, 3, seed=3))
    q = model.quantize("int8")
    assert [type(l).__name__ for l in q.layers] == ["QuantizedGRU", "QuantizedLSTM", "Linear"]
    x = rng.uniform(-1, 1, (7, 2, 4)).astype(np.float32)
    y, _ = q.forward(x, training=False)
    h, _ = q.layers[0].forward(x, training=False)
    h, _ = q.layers[1].forward(h, training=False)
    np.testing.assert_array_equal(y, q.layers[2].forward(h, training=False))
    assert np.abs(y - model.forward(x, training=False)[0]).max() < BOUND_FLOAT["int8"]
    g = q.layers[0]
    with pytest.raises(ValueError, match="inference only"):
        g.forward(x, training=True)
    with pytest.raises(ValueError, match="inference only"):
        g.backward()
    with pytest.raises(ValueError, match="read-only"):
        g.params["W_h"][0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        g.params["b_hn"][0] = 1
    with pytest.raises(ValueError, match="already quantized"):
        g.quantize("bf16")
    with pytest.raises(ValueError, match="precision must be 'bf16' or 'int8'"):
        fr.GRU(3, 4).quantize("fp8")
    with pytest.raises(TypeError, match="float32"):
        fr.QuantizedGRU(3, 4, precision="bf16", dtype=np.float64)
    with pytest.raises(ValueError, match="bidirectional"):
        fr.GRU(3, 4, bidirectional=True).quantize("int8").stream(1)
    with pytest.raises(ValueError, match="no torch.nn equivalent"):
        g.to_torch()
    with pytest.raises(ValueError, match="for inference only"):
        q.forward(x)                                                    # training=True
    g2 = fr.GRU(3, 4, seed=0).quantize("bf16")
    g2.params["W_x"] = np.zeros((12, 3), np.uint16)                     # replaced: refused
    with pytest.raises(ValueError, match="cannot be replaced"):
        g2.forward(np.zeros((2, 1, 3), np.float32), training=False)
    with pytest.raises(ValueError, match="inference only: no backward"):
        gru = fr.GRU(3, 4, seed=0).quantize("int8")
        p = {k: gru.params[k] for k in gru.params}
        _, _, cache = ref.gru_forward(np.zeros((2, 1, 3), np.float32), p, precision="int8")
        ref.gru_backward(np.zeros((2, 1, 4), np.float32), None, cache)


def test_gru_onnx_export_is_refused_by_name(tmp_path):
    pytest.importorskip("onnx")
    for precision in PRECISIONS:
        q = fr.GRU(3, 4, seed=0).quantize(precision)
        with pytest.raises(ValueError, match="no quantized GRU operator.*QuantizedGRU"):
            fr.onnx.export(q, tmp_path / "g.onnx")
