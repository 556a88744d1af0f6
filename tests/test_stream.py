"""Streams (layer.stream): per-frame outputs equal one forward over the whole
sequence and the NumPy reference, for every option; look-ahead delays (adding
up in a Sequential) and flush; reset of some rows; weights changed after the
stream was made; bad frames; one stream from two threads."""
import threading

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference
from fusedrnn.core._layer import suffix

# the tolerances of the chunked-equals-whole tests (test_chunked.py)
TOLS = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]

LSTM_OPTS = [
    dict(peepholes=None),
    dict(peepholes="diagonal"),
    dict(peepholes="full"),
    dict(proj_size=3),
    dict(context=(2, 0)),
    dict(context=(0, 2)),
    dict(context=(3, 1), proj_size=3),
    dict(context=(1, 2), num_layers=2, proj_size=2, peepholes="full"),
    dict(num_layers=3, proj_size=4),
    dict(coupled_gates=True, cell_clip=0.5, accumulation_clip=2.0),
    dict(context=(2, 3), coupled_gates=True, cell_clip=0.5, accumulation_clip=2.0),
]
RNN_OPTS = [dict(), dict(state_feedback=True), dict(state_feedback=True, num_layers=2)]


def _ids(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "default"


def _make(kind, opts, dtype, I=4, H=6, seed=2):
    cls = fr.LSTM if kind == "lstm" else fr.RNN
    layer = cls(I, H, dtype=dtype, seed=seed, **opts)
    if opts.get("cell_clip"):
        for v in layer.params.values():  # larger weights, so that the clips act
            v *= 2.5
    return layer


def _random_state(layer, B, rng):
    LD, H, R, dt = layer.num_layers, layer.hidden_size, layer.output_size, layer.dtype
    s0 = (0.4 * rng.standard_normal((LD, B, H))).astype(dt)
    o0 = (0.4 * rng.uniform(-1, 1, (LD, B, R))).astype(dt)
    if isinstance(layer, fr.RNN):
        return fr.RNNState(s0, o0)
    L_past = layer.context[0]
    x_past = rng.standard_normal((L_past, B, layer.input_size)).astype(dt) if L_past else None
    return fr.LSTMState(s0, o0, x_past)


def _step_all(stream, x):
    """Every frame through step, then flush: the outputs (T, B, R) and how many
    steps returned None."""
    ys, nones = [], 0
    for frame in x:
        y = stream.step(frame)
        if y is None:
            nones += 1
        else:
            ys.append(y)
    tail = stream.flush()
    return np.concatenate([np.stack(ys), tail]) if ys else tail, nones


def _assert_state(st, ref, dtype):
    for a, b in zip(st, ref):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, b, **TOLS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,opts", [("lstm", o) for o in LSTM_OPTS] + [("rnn", o) for o in RNN_OPTS],
                         ids=lambda o: o if isinstance(o, str) else _ids(o))
def test_step_equals_whole_forward(kind, opts, dtype):
    T, B = 17, 3
    layer = _make(kind, opts, dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, layer.input_size)).astype(dtype)
    state = _random_state(layer, B, rng)
    y_whole, st_whole = layer.forward(x, state=state, training=False)
    stream = layer.stream(B, state=state)
    L_future = layer.context[1] if kind == "lstm" else 0
    assert stream.delay == L_future
    y, nones = _step_all(stream, x)
    assert nones == L_future
    np.testing.assert_allclose(y, y_whole, **TOLS[dtype])
    _assert_state(stream.state, st_whole, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,opts", [("lstm", o) for o in LSTM_OPTS[::2]] + [("rnn", RNN_OPTS[2])],
                         ids=lambda o: o if isinstance(o, str) else _ids(o))
@pytest.mark.parametrize("cuts", [[1], [2, 3, 9], [5, 6, 7, 16]])
def test_step_many_equals_whole_forward(kind, opts, dtype, cuts):
    """Chunks of any length (1 and L_future included), mixed with single steps."""
    T, B = 17, 2
    layer = _make(kind, opts, dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, layer.input_size)).astype(dtype)
    state = _random_state(layer, B, rng)
    y_whole, st_whole = layer.forward(x, state=state, training=False)
    stream = layer.stream(B, state=state)
    edges = [0, *cuts, T]
    outs = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        if i % 2 and b - a == 1:
            y = stream.step(x[a])
            outs.append(np.zeros((0, B, layer.output_size), dtype) if y is None else y[None])
        else:
            outs.append(stream.step_many(x[a:b]))
    outs.append(stream.flush())
    np.testing.assert_allclose(np.concatenate(outs), y_whole, **TOLS[dtype])
    _assert_state(stream.state, st_whole, dtype)


@pytest.mark.parametrize("opts", [dict(context=(2, 2), num_layers=2, proj_size=3, peepholes="full"),
                                  dict(coupled_gates=True, cell_clip=0.5, accumulation_clip=2.0)],
                         ids=_ids)
def test_stream_equals_reference(opts):
    """Against the plain NumPy oracle (float64), not only against forward."""
    T, B = 14, 2
    layer = _make("lstm", opts, np.float64)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, layer.input_size))
    state = _random_state(layer, B, rng)
    y, _ = _step_all(layer.stream(B, state=state), x)
    cells = [{name: layer.params[name + suffix(l, 0)]
              for name in layer._cell_param_shapes(layer._cell_input_size(l))}
             for l in range(layer.num_layers)]
    y_ref, *_ = reference.lstm_network_forward(
        x, cells, state.s, state.v, x_past=state.x_past, coupled_gates=layer.coupled_gates,
        cell_clip=layer.cell_clip, accumulation_clip=layer.accumulation_clip, context=layer.context)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)


def test_rnn_stream_equals_reference():
    T, B = 12, 3
    layer = fr.RNN(4, 5, state_feedback=True, num_layers=2, dtype=np.float64, seed=1)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, 4))
    st = _random_state(layer, B, rng)
    y, _ = _step_all(layer.stream(B, state=st), x)
    cells = [{n: layer.params[n + suffix(l, 0)] for n in layer._cell_param_shapes(layer._cell_input_size(l))}
             for l in range(2)]
    y_ref, *_ = reference.rnn_network_forward(x, cells, st.s, st.r)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)


def test_step_out_buffer_and_returned_arrays():
    layer = fr.LSTM(3, 4, seed=0)
    stream = layer.stream(2)
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    out = np.full((2, 4), np.nan, np.float32)
    y0 = stream.step(x[0], out=out)
    assert y0 is out and np.isfinite(out).all()
    y1 = stream.step(x[1])
    y2 = stream.step(x[2])
    assert y1 is not y2 and not np.shares_memory(y1, y2)  # a new array per step without out
    y_whole, _ = layer.forward(x, training=False)
    np.testing.assert_allclose(np.stack([y0, y1, y2]), y_whole, **TOLS[np.float32])


def test_state_mid_stream_with_look_ahead():
    """stream.state is the state after the last output step; frames of the
    look-ahead not yet output are not in it: forward over the frames output so
    far (with the waiting frames as x_future) gives the same state."""
    layer = fr.LSTM(3, 5, context=(2, 2), dtype=np.float64, seed=3)
    B, T = 2, 9
    x = np.random.default_rng(2).standard_normal((T, B, 3))
    for k in range(T + 1):
        stream = layer.stream(B, state=layer.initial_state(B))
        for frame in x[:k]:
            stream.step(frame)
        done = max(k - 2, 0)
        if done == 0:
            want = layer.initial_state(B)
            np.testing.assert_array_equal(stream.state.s, want.s)
            np.testing.assert_array_equal(stream.state.x_past, np.zeros((2, B, 3)))
            continue
        _, st = layer.forward(x[:done], state=layer.initial_state(B), x_future=x[done:k],
                              training=False)
        _assert_state(stream.state, st, np.float64)


def test_flush_then_a_new_sequence_continues_from_the_state():
    layer = fr.LSTM(3, 5, context=(1, 2), dtype=np.float64, seed=1)
    B = 2
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((7, B, 3)), rng.standard_normal((5, B, 3))
    y1, st1 = layer.forward(x1, training=False)
    y2, _ = layer.forward(x2, state=st1, training=False)
    stream = layer.stream(B)
    a, _ = _step_all(stream, x1)
    _assert_state(stream.state, st1, np.float64)   # x_past: the last frame of x1
    b, nones = _step_all(stream, x2)
    assert nones == 2
    np.testing.assert_allclose(a, y1, **TOLS[np.float64])
    np.testing.assert_allclose(b, y2, **TOLS[np.float64])


def test_sequences_shorter_than_the_delay():
    layer = fr.LSTM(2, 3, context=(0, 3), dtype=np.float64, seed=0)
    stream = layer.stream(1)
    x = np.random.default_rng(0).standard_normal((2, 1, 2))
    assert stream.step(x[0]) is None and stream.step(x[1]) is None
    tail = stream.flush()
    y, _ = layer.forward(x, state=layer.initial_state(1), training=False)
    assert tail.shape == (2, 1, 3)
    np.testing.assert_allclose(tail, y, **TOLS[np.float64])
    assert stream.flush().shape == (0, 1, 3)      # nothing left


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_delays_add_up(dtype):
    """LSTM (look-ahead 2) -> Linear -> LSTM (look-ahead 1) -> RNN -> Linear: a
    frame's output comes 3 frames later; stepping plus flush equals forward."""
    model = fr.Sequential(fr.LSTM(4, 6, context=(1, 2), dtype=dtype, seed=0),
                          fr.Linear(6, 5, dtype=dtype, seed=1),
                          fr.LSTM(5, 6, context=(2, 1), proj_size=3, dtype=dtype, seed=2),
                          fr.RNN(3, 4, state_feedback=True, dtype=dtype, seed=3),
                          fr.Linear(4, 2, dtype=dtype, seed=4))
    T, B = 15, 3
    x = np.random.default_rng(6).standard_normal((T, B, 4)).astype(dtype)
    y_whole, states = model.forward(x, training=False)
    stream = model.stream(B)
    assert stream.delay == 3
    y, nones = _step_all(stream, x)
    assert nones == 3
    np.testing.assert_allclose(y, y_whole, **TOLS[dtype])
    for st, ref in zip(stream.state, states):
        if ref is None:
            assert st is None
        else:
            _assert_state(st, ref, dtype)
    stream.reset()
    parts = [stream.step_many(x[:4]), stream.step_many(x[4:5]), stream.step_many(x[5:]), stream.flush()]
    np.testing.assert_allclose(np.concatenate(parts), y_whole, **TOLS[dtype])


def test_batch_first_chunks():
    layer = fr.LSTM(3, 4, context=(1, 1), batch_first=True, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 9, 3))  # (B, T, I)
    y_whole, _ = layer.forward(x, training=False)
    stream = layer.stream(2)
    y = np.concatenate([stream.step_many(x[:, :4]), stream.step_many(x[:, 4:]),
                        stream.flush().transpose(1, 0, 2)], axis=1)
    np.testing.assert_allclose(y, y_whole, **TOLS[np.float64])
    model = fr.Sequential(fr.LSTM(3, 4, batch_first=True, dtype=np.float64, seed=0),
                          fr.Linear(4, 2, dtype=np.float64, seed=1))
    np.testing.assert_allclose(model.stream(2).step_many(x), model.forward(x, training=False)[0],
                               **TOLS[np.float64])


# -- reset of some rows -------------------------------------------------------------------

def _run_with_reset(make_stream, x, x_new, at, rows):
    """Stream x; at frame `at`, reset `rows` and feed them x_new from then on."""
    stream = make_stream(x.shape[1])
    outs = []
    for n in range(len(x)):
        if n == at:
            stream.reset(rows)
        frame = x[n].copy()
        if n >= at:
            frame[rows] = x_new[n - at]
        outs.append(stream.step(frame))
    outs.append(stream.flush())
    return outs


@pytest.mark.parametrize("kind", ["lstm", "lstm_ctx", "rnn", "sequential"])
def test_reset_rows_equals_fresh_streams_and_leaves_the_others(kind):
    dt = np.float64
    if kind == "lstm":
        layer = fr.LSTM(3, 5, num_layers=2, proj_size=2, dtype=dt, seed=0)
    elif kind == "lstm_ctx":
        layer = fr.LSTM(3, 5, context=(2, 2), dtype=dt, seed=0)
    elif kind == "rnn":
        layer = fr.RNN(3, 5, state_feedback=True, dtype=dt, seed=0)
    else:
        layer = fr.Sequential(fr.LSTM(3, 5, context=(1, 2), dtype=dt, seed=0),
                              fr.Linear(5, 4, dtype=dt, seed=1),
                              fr.LSTM(4, 3, context=(0, 1), dtype=dt, seed=2))
    make = lambda B: layer.stream(B)
    delay = make(1).delay
    T, B, at, rows = 12, 4, 5, [1, 3]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, 3))
    x_new = rng.standard_normal((T - at, len(rows), 3))
    outs = _run_with_reset(make, x, x_new, at, rows)
    plain = _run_with_reset(make, x, x_new, T, rows)   # never reset (at = T)
    # the other rows: bit for bit as without the reset (their frames are the same)
    keep = [0, 2]
    for a, b in zip(outs, plain):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a[..., keep, :], b[..., keep, :])
    # the reset rows: zeros until the output of their first frame is due, then a fresh stream's
    steps = [o for o in outs[:-1] if o is not None]
    emitted_before = sum(o is not None for o in outs[:at])
    held = [o[rows] for o in steps[emitted_before:emitted_before + delay]]
    assert all(np.all(h == 0) for h in held)
    fresh, nones = _step_all(make(len(rows)), x_new)
    assert nones == delay
    got = np.concatenate([np.stack([o[rows] for o in steps[emitted_before + delay:]]),
                          outs[-1][:, rows]])
    np.testing.assert_allclose(got, fresh, rtol=1e-12, atol=1e-13)


def test_reset_rows_forms_and_errors():
    layer = fr.LSTM(2, 3, dtype=np.float64, seed=0)
    stream = layer.stream(4, state=fr.LSTMState(np.ones((1, 4, 3)), np.ones((1, 4, 3))))
    stream.reset(np.array([True, False, False, True]))
    np.testing.assert_array_equal(stream.state.s[0, :, 0], [0, 1, 1, 0])
    stream.reset(slice(1, 2))
    stream.reset(-2)
    np.testing.assert_array_equal(stream.state.v[0, :, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="rows"):
        stream.reset([4])
    with pytest.raises(ValueError, match="rows"):
        stream.reset(np.array([True, False]))
    with pytest.raises(TypeError, match="rows"):
        stream.reset([0.5])


# -- weights changed after the stream was made ----------------------------------------

def _follow(layer, change):
    """Step a stream and per-frame forward calls side by side; `change(n)` alters
    the weights before frame n. Returns the max difference."""
    B = 2
    x = np.random.default_rng(1).standard_normal((8, B, layer.input_size)).astype(layer.dtype)
    stream = layer.stream(B)
    state = layer.initial_state(B)
    diff = 0.0
    for n in range(len(x)):
        change(n)
        y_ref, state = layer.forward(x[n:n + 1], state=state, training=False)
        diff = max(diff, float(np.abs(stream.step(x[n]) - y_ref[0]).max()))
    return diff


def test_weights_changed_by_an_optimiser_are_used():
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    opt = fr.optim.SGD(layer, lr=0.5)
    for g in layer.grads.values():
        g[...] = np.random.default_rng(0).standard_normal(g.shape)
    before = {k: v.copy() for k, v in layer.params.items()}
    assert _follow(layer, lambda n: opt.step() if n in (2, 5) else None) < 1e-13
    assert any(np.abs(layer.params[k] - before[k]).max() > 0.1 for k in before)


@pytest.mark.parametrize("how", ["in_place", "entry_replaced", "dict_replaced"])
def test_weights_changed_are_used(how):
    layer = fr.RNN(3, 4, num_layers=2, dtype=np.float64, seed=0) if how == "dict_replaced" \
        else fr.LSTM(3, 4, proj_size=2, peepholes="full", dtype=np.float64, seed=0)
    rng = np.random.default_rng(3)

    def change(n):
        if n not in (3, 6):
            return
        for k, v in list(layer.params.items()):
            new = rng.uniform(-0.5, 0.5, v.shape)
            if how == "in_place":
                layer.params[k][...] = new
            elif how == "entry_replaced":
                layer.params[k] = new
        if how == "dict_replaced":
            layer.params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in layer.params.items()}

    assert _follow(layer, change) < 1e-13


def test_weights_replaced_with_a_wrong_array_are_refused():
    layer = fr.LSTM(3, 4, dtype=np.float32, seed=0)
    stream = layer.stream(1)
    frame = np.zeros((1, 3), np.float32)
    W = layer.params["W_v"]
    layer.params["W_v"] = np.zeros((16, 5), np.float32)
    with pytest.raises(ValueError, match=r"params\['W_v'\].*\(16, 4\)"):
        stream.step(frame)
    layer.params["W_v"] = W.astype(np.float64)
    with pytest.raises(TypeError, match=r"params\['W_v'\].*float32"):
        stream.step(frame)
    layer.params["W_v"] = np.asfortranarray(W)
    with pytest.raises(ValueError, match=r"params\['W_v'\].*C-contiguous"):
        stream.step(frame)
    del layer.params["W_v"]
    with pytest.raises(KeyError, match="W_v"):
        stream.step(frame)
    layer.params["W_v"] = W
    assert stream.frames_in == 0          # the refused steps changed nothing
    np.testing.assert_allclose(stream.step(frame), layer.forward(frame[None], training=False)[0][0],
                               **TOLS[np.float32])


def test_linear_stream_reads_its_weights_each_step():
    lin = fr.Linear(3, 2, dtype=np.float64, seed=0)
    stream = lin.stream(2)
    x = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_allclose(stream.step(x), lin.forward(x, training=False), rtol=1e-14)
    lin.params["W"][...] = 1.0
    np.testing.assert_allclose(stream.step(x), lin.forward(x, training=False), rtol=1e-14)
    lin.params["b"] = np.arange(2.0)
    np.testing.assert_allclose(stream.step(x), lin.forward(x, training=False), rtol=1e-14)


# -- refusals and bad input -----------------------------------------------------------------

def test_layers_that_cannot_stream():
    with pytest.raises(ValueError, match="bidirectional"):
        fr.LSTM(3, 4, bidirectional=True).stream(1)
    with pytest.raises(ValueError, match="bidirectional"):
        fr.RNN(3, 4, bidirectional=True).stream(1)
    with pytest.raises(ValueError, match="reverse"):
        fr.LSTM(3, 4, reverse=True).stream(1)
    with pytest.raises(ValueError, match="bidirectional"):
        fr.Sequential(fr.LSTM(3, 4), fr.LSTM(4, 4, bidirectional=True)).stream(1)
    with pytest.raises(ValueError, match="dtype"):
        fr.Sequential(fr.LSTM(3, 4), fr.Linear(4, 2, dtype=np.float64)).stream(1)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch"):
            fr.LSTM(3, 4).stream(bad)
    with pytest.raises(TypeError, match="batch"):
        fr.LSTM(3, 4).stream(1.5)
    with pytest.raises(ValueError, match="state"):
        fr.LSTM(3, 4).stream(2, state=fr.LSTMState(np.zeros((1, 3, 4)), np.zeros((1, 3, 4))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_frames_name_frame_and_the_expected_shape(dtype):
    layer = fr.LSTM(3, 4, dtype=dtype, seed=0)
    stream = layer.stream(2)
    other = np.float32 if dtype == np.float64 else np.float64
    good = np.zeros((2, 3), dtype)
    want = r"frame must be a C-contiguous NumPy array of shape \(2, 3\) and dtype " + np.dtype(dtype).name
    cases = [
        (ValueError, np.zeros((2, 4), dtype)),            # shape
        (ValueError, np.zeros((3,), dtype)),              # rank 1
        (ValueError, np.zeros((1, 2, 3), dtype)),         # rank 3
        (TypeError, np.zeros((2, 3), other)),             # dtype
        (TypeError, np.zeros((2, 3), np.int32)),
        (ValueError, np.zeros((2, 6), dtype)[:, ::2]),    # not contiguous
        (ValueError, np.asfortranarray(np.zeros((2, 3), dtype))),
        (TypeError, [[0.0] * 3] * 2),                     # not an array
        (TypeError, None),
    ]
    for err, frame in cases:
        with pytest.raises(err, match=want):
            stream.step(frame)
    with pytest.raises(ValueError, match=r"out must be .*\(2, 4\)"):
        stream.step(good, out=np.zeros((2, 3), dtype))
    with pytest.raises(TypeError, match=r"out must be .*dtype"):
        stream.step(good, out=np.zeros((2, 4), other))
    ro = np.zeros((2, 4), dtype)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be .*writeable"):
        stream.step(good, out=ro)
    buf = np.zeros(8, dtype)
    with pytest.raises(ValueError, match="overlap"):
        stream.step(buf[:6].reshape(2, 3), out=buf.reshape(2, 4))
    with pytest.raises(ValueError, match=r"chunk must have shape \(T, B, 3\)"):
        stream.step_many(np.zeros((4, 3, 3), dtype))
    with pytest.raises(TypeError, match="chunk must have dtype"):
        stream.step_many(np.zeros((4, 2, 3), other))
    assert stream.frames_in == 0          # nothing was taken in
    np.testing.assert_array_equal(stream.state.s, 0)


def test_linear_and_sequential_bad_frames():
    model = fr.Sequential(fr.LSTM(3, 4, seed=0), fr.Linear(4, 2, seed=1))
    stream = model.stream(1)
    with pytest.raises(ValueError, match=r"frame must be .*\(1, 3\)"):
        stream.step(np.zeros((1, 4), np.float32))
    lin = fr.Linear(4, 2).stream(1)
    with pytest.raises(ValueError, match=r"frame must be .*\(1, 4\)"):
        lin.step(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="frame must be .*float32"):
        lin.step(np.zeros((1, 4), np.float64))


# -- threads ------------------------------------------------------------------------

def test_a_second_thread_inside_the_same_stream_is_refused():
    """Deterministic: the first thread is held inside step (the weights check
    calls back when params changed) while a second thread steps."""
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    stream = layer.stream(1)
    inside, go_on = threading.Event(), threading.Event()
    rebind = stream._rebind

    def slow_rebind():
        inside.set()
        go_on.wait(10)
        rebind()

    stream._rebind = slow_rebind
    layer.params["b"] = layer.params["b"].copy()  # the next step rebinds
    frame = np.ones((1, 3))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("y", stream.step(frame)))
    t.start()
    assert inside.wait(10)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        stream.step(frame)
    with pytest.raises(RuntimeError, match="in use by another thread"):
        stream.reset()
    go_on.set()
    t.join(10)
    y, _ = layer.forward(frame[None], training=False)
    np.testing.assert_allclose(result["y"], y[0], rtol=1e-13)
    assert stream.frames_in == 1


def test_two_threads_on_one_stream_never_mix():
    """Both threads send the same frame: whatever interleaving, the state is
    that of as many serial steps as succeeded."""
    layer = fr.LSTM(8, 256, dtype=np.float64, seed=0)
    B = 4
    stream = layer.stream(B)
    assert stream.release_gil  # big enough that a step runs without the GIL
    frame = np.random.default_rng(0).standard_normal((B, 8)) * 0.1
    done, refused = [0, 0], [0, 0]

    def run(i):
        for _ in range(60):
            try:
                stream.step(frame)
                done[i] += 1
            except RuntimeError:
                refused[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(done) == stream.frames_in and sum(done) + sum(refused) == 120
    serial = layer.stream(B)
    for _ in range(sum(done)):
        serial.step(frame)
    np.testing.assert_array_equal(stream.state.s, serial.state.s)
    np.testing.assert_array_equal(stream.state.v, serial.state.v)


def test_streams_of_one_layer_are_independent():
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 1, 3))
    a, b = layer.stream(1), layer.stream(1)
    ya = [a.step(f) for f in x]
    yb = [b.step(f) for f in x[::-1]]
    np.testing.assert_allclose(np.stack(ya), layer.forward(x, training=False)[0], rtol=1e-12)
    np.testing.assert_allclose(np.stack(yb), layer.forward(x[::-1].copy(), training=False)[0],
                               rtol=1e-12)


def test_step_with_out_allocates_nothing():
    import tracemalloc
    layer = fr.LSTM(4, 8, context=(1, 1), seed=0)
    stream = layer.stream(2)
    frame, out = np.ones((2, 4), np.float32), np.empty((2, 8), np.float32)
    for _ in range(10):
        stream.step(frame, out=out)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):
        stream.step(frame, out=out)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 4096, grown


# -- fusedrnn.torch modules ------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_torch_module_stream_equals_forward(kind, dtype):
    torch = _torch()
    import fusedrnn.torch as frt
    tdt = getattr(torch, dtype)
    T, B = 11, 3
    g = torch.Generator().manual_seed(0)
    if kind == "lstm":
        m = frt.LSTM(4, 6, context=(1, 2), proj_size=3, num_layers=2, dtype=tdt, seed=0)
        hx = (0.3 * torch.randn(2, B, 3, generator=g, dtype=tdt),
              0.3 * torch.randn(2, B, 6, generator=g, dtype=tdt),
              torch.randn(1, B, 4, generator=g, dtype=tdt))
    else:
        m = frt.RNN(4, 6, state_feedback=True, num_layers=2, dtype=tdt, seed=0)
        hx = (0.3 * torch.randn(2, B, 6, generator=g, dtype=tdt),
              0.3 * torch.randn(2, B, 6, generator=g, dtype=tdt))
    x = torch.randn(T, B, 4, generator=g, dtype=tdt)
    with torch.no_grad():
        y_whole, st_whole = m(x, hx)
    stream = m.stream(B, state=hx)
    outs, out = [], torch.empty(B, m.proj_size if kind == "lstm" else 6, dtype=tdt)
    for n, frame in enumerate(x):
        y = stream.step(frame, out=out) if n % 2 else stream.step(frame)
        if y is not None:
            assert (y is out) == bool(n % 2) and isinstance(y, torch.Tensor)
            outs.append(y.clone())
    outs.append(stream.flush())
    tol = TOLS[np.float64 if dtype == "float64" else np.float32]
    np.testing.assert_allclose(torch.cat([o.reshape(-1, B, o.shape[-1]) for o in outs]).numpy(),
                               y_whole.numpy(), **tol)
    for a, b in zip(stream.state, st_whole):   # (h, c[, x_past]) / (h, s), torch's order
        np.testing.assert_allclose(a.numpy(), b.numpy(), **tol)


def test_torch_stream_follows_the_parameters():
    torch = _torch()
    import fusedrnn.torch as frt
    m = frt.LSTM(3, 5, dtype=torch.float64, seed=0)
    x = torch.randn(9, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    stream = m.stream(2)
    opt = torch.optim.SGD(m.parameters(), lr=0.3)
    hx = None
    for n, frame in enumerate(x):
        if n == 2:   # an optimiser step: in place
            m(x)[0].square().sum().backward()
            opt.step()
        elif n == 4:  # a Parameter replaced
            m.W_v = torch.nn.Parameter(torch.rand_like(m.W_v) - 0.5)
        elif n == 6:  # .data swapped
            m.b.data = torch.rand_like(m.b) - 0.5
        with torch.no_grad():
            y_ref, hx = m(frame[None], hx)
        np.testing.assert_allclose(stream.step(frame).numpy(), y_ref[0].numpy(), rtol=1e-12,
                                   atol=1e-13)
    m.double()  # no change: still float64
    stream.step(x[0])
    m.float()
    with pytest.raises(ValueError, match="float32.*make a new stream"):
        stream.step(x[0].float())


def test_torch_stream_bad_frames():
    torch = _torch()
    import fusedrnn.torch as frt
    stream = frt.RNN(3, 4, seed=0).stream(2)
    want = r"frame must be a contiguous CPU tensor of shape \(2, 3\) and dtype torch.float32"
    for err, frame in [(TypeError, torch.zeros(2, 3, dtype=torch.float64)),
                       (ValueError, torch.zeros(2, 4)), (ValueError, torch.zeros(3)),
                       (ValueError, torch.zeros(3, 2).t()), (TypeError, np.zeros((2, 3), np.float32))]:
        with pytest.raises(err, match=want):
            stream.step(frame)
    with pytest.raises(ValueError, match=r"out must be .*\(2, 4\)"):
        stream.step(torch.zeros(2, 3), out=torch.zeros(2, 3))
    frame = torch.zeros(2, 3, requires_grad=True)
    assert not stream.step(frame).requires_grad     # inference: no graph
    with pytest.raises(ValueError, match="bidirectional"):
        frt.LSTM(3, 4, bidirectional=True).stream(1)


def test_streaming_example_quick(tmp_path):
    pytest.importorskip("matplotlib")
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                        "streaming.py")
    spec = importlib.util.spec_from_file_location("example_streaming", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    res = ex.main(["--quick", "--frames", "60", "--out", str(tmp_path)])
    assert os.path.getsize(tmp_path / "streaming_latency.png") > 10_000
    assert res["max_diff"] <= 1e-5
    np.testing.assert_allclose(res["streamed"], res["whole"], **TOLS[np.float32])
    assert {"fusedrnn forward per frame", "fusedrnn stream"} <= set(res["stats"])
    for s in res["stats"].values():
        assert 0 < s["p50"] <= s["p99"] <= s["max"]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_child_forked_during_a_step_can_step():
    """The child's copy of a stream another thread was inside is not left in use."""
    import os
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    stream = layer.stream(1)
    inside, go_on = threading.Event(), threading.Event()
    rebind = stream._rebind

    def slow_rebind():
        inside.set()
        go_on.wait(10)
        rebind()

    stream._rebind = slow_rebind
    layer.params["b"] = layer.params["b"].copy()
    t = threading.Thread(target=stream.step, args=(np.ones((1, 3)),))
    t.start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:   # the child: no other thread, the stream usable
        code = 1
        try:
            stream._rebind = rebind
            y = stream.step(np.ones((1, 3)))
            code = 0 if y.shape == (1, 4) and np.isfinite(y).all() else 2
        finally:
            os._exit(code)
    go_on.set()
    t.join(10)
    import time
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_a_sequential_stream_refuses_a_second_thread():
    model = fr.Sequential(fr.LSTM(3, 4, dtype=np.float64, seed=0), fr.Linear(4, 2, dtype=np.float64))
    stream = model.stream(1)
    core = stream.stages[0]
    inside, go_on = threading.Event(), threading.Event()
    rebind = core._rebind

    def slow_rebind():
        inside.set()
        go_on.wait(10)
        rebind()

    core._rebind = slow_rebind
    model[0].params["b"] = model[0].params["b"].copy()
    frame = np.ones((1, 3))
    t = threading.Thread(target=stream.step, args=(frame,))
    t.start()
    assert inside.wait(10)
    for call in (lambda: stream.step(frame), stream.flush, stream.reset,
                 lambda: stream.step_many(frame[None])):
        with pytest.raises(RuntimeError, match="in use by another thread"):
            call()
    go_on.set()
    t.join(10)
    assert core.frames_in == 1 and stream.stages[1].frames_in == 1


def test_torch_rnn_stream_from_h0_alone():
    torch = _torch()
    import fusedrnn.torch as frt
    m = frt.RNN(3, 4, dtype=torch.float64, seed=0)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        y, h = m(x, h0)
    stream = m.stream(2, state=h0)
    np.testing.assert_allclose(torch.stack([stream.step(f) for f in x]).numpy(), y.numpy(),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(stream.state[0].numpy(), h.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["lstm", "rnn", "sequential"])
def test_a_snapshot_stream_keeps_its_weights(kind):
    """weights="snapshot": a copy taken when the stream is made; later changes of
    params (in place, replaced, an optimiser step) do not reach it."""
    dt = np.float64
    if kind == "lstm":
        layer = fr.LSTM(3, 4, context=(1, 1), proj_size=2, dtype=dt, seed=0)
    elif kind == "rnn":
        layer = fr.RNN(3, 4, state_feedback=True, dtype=dt, seed=0)
    else:
        layer = fr.Sequential(fr.LSTM(3, 4, dtype=dt, seed=0), fr.Linear(4, 2, dtype=dt, seed=1))
    import copy
    frozen = copy.deepcopy(layer)
    x = np.random.default_rng(0).standard_normal((9, 2, 3))
    stream = layer.stream(2, weights="snapshot")
    outs = []
    for n, frame in enumerate(x):
        if n == 2:
            for v in layer.params.values():
                v[...] = 0.123
        if n == 4:
            for k in list(layer.params):
                if "." not in k:
                    layer.params[k] = np.ones_like(layer.params[k])
        if n == 6:
            opt = fr.optim.SGD(layer, lr=1.0)
            for g in layer.grads.values():
                g[...] = 1.0
            opt.step()
        y = stream.step(frame)
        if y is not None:
            outs.append(y)
    outs.append(stream.flush())
    got = np.concatenate([np.stack(outs[:-1]), outs[-1]]) if len(outs) > 1 else outs[-1]
    want, _ = frozen.forward(x, training=False)
    np.testing.assert_allclose(got, want, **TOLS[dt])
    stream.reset()   # chunks read the copy too
    np.testing.assert_allclose(np.concatenate([stream.step_many(x), stream.flush()]), want,
                               **TOLS[dt])
    with pytest.raises(ValueError, match="weights must be 'live'"):
        layer.stream(2, weights="frozen")


def test_a_snapshot_torch_stream_keeps_its_weights():
    torch = _torch()
    import fusedrnn.torch as frt
    m = frt.LSTM(3, 4, dtype=torch.float64, seed=0)
    x = torch.randn(5, 1, 3, dtype=torch.float64)
    with torch.no_grad():
        want, _ = m(x)
    stream = m.stream(1, weights="snapshot")
    with torch.no_grad():
        m.W_v.mul_(3.0)
    got = torch.stack([stream.step(f) for f in x])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-13)


# -- write-tracked params ---------------------------------------------------------------

def test_params_count_their_writes_and_refuse_raw_ones():
    """A layer's params are tracked arrays: writes through them (and their views)
    are counted, writes around them raise, computations give plain arrays."""
    from fusedrnn.core._tracked import VERSION, TrackedArray, is_tracked
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    p = layer.params["W_v"]
    assert is_tracked(p) and is_tracked(layer.params["b"])
    writes = [lambda: p.__setitem__((0, 0), 1.5), lambda: p.__imul__(2.0),
              lambda: np.add(p, 1.0, out=p), lambda: np.copyto(p, np.ones(p.shape)),
              lambda: p.fill(0.25), lambda: p.reshape(-1).__setitem__(3, 7.0),
              lambda: np.add.at(p, (1, 1), 1.0)]
    for write in writes:
        before, old = int(VERSION[0]), np.array(p)
        write()
        assert int(VERSION[0]) >= before + 2 and not np.array_equal(p, old)
        assert is_tracked(p) and type(layer.params["W_v"]) is TrackedArray
    for raw in [lambda: np.asarray(p).__setitem__(0, 0.0), lambda: p.sort(axis=0),
                lambda: p.view(np.ndarray).__iadd__(1.0)]:
        with pytest.raises(ValueError, match="read-only"):
            raw()
    for r in (p * 2, np.abs(p), p.copy(), p.astype(np.float32), np.zeros_like(p), p[[0, 1]]):
        assert type(r) is np.ndarray and r.flags.writeable
    assert type(p.T) is TrackedArray and not p.T.flags.writeable   # a view: tracked
    g = layer.grads["W_v"]
    assert type(g) is np.ndarray and g.flags.writeable              # gradients are plain


def test_a_stream_compares_arrays_that_are_not_tracked():
    """An array stored with params[k] = w is a plain array: writing into it in
    place is seen as well (the stream compares it before every step)."""
    layer = fr.LSTM(3, 4, proj_size=2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(5)
    mine = {k: np.array(v) for k, v in layer.params.items()}

    def change(n):
        if n == 1:
            for k, v in mine.items():
                layer.params[k] = v
        if n in (3, 5):
            for v in mine.values():
                v[...] = rng.uniform(-0.5, 0.5, v.shape)   # raw writes into the plain arrays
    assert _follow(layer, change) < 1e-13


def test_weights_written_between_steps_through_views_are_used():
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(6)

    def change(n):
        if n == 2:
            layer.params["W_x"].reshape(-1)[::3] = rng.uniform(-1, 1, 16)
        if n == 4:
            np.multiply(layer.params["W_v"][:8], 3.0, out=layer.params["W_v"][:8])
        if n == 6:
            layer.params["W_v"].T[1] += 0.5
    assert _follow(layer, change) < 1e-13


# -- GRU streams ----------------------------------------------------------------------------

GRU_OPTS = [dict(), dict(linear_before_reset=False), dict(num_layers=3),
            dict(num_layers=2, linear_before_reset=False)]


def _gru(opts, dtype, I=4, H=6, seed=3):
    return fr.GRU(I, H, dtype=dtype, seed=seed, **opts)


def _gru_state(layer, B, rng):
    return fr.GRUState((0.4 * rng.standard_normal((layer.num_layers, B, layer.hidden_size)))
                       .astype(layer.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", GRU_OPTS, ids=_ids)
def test_gru_stream_equals_whole_forward_and_reference(opts, dtype):
    T, B = 15, 3
    layer = _gru(opts, dtype)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T, B, layer.input_size)).astype(dtype)
    state = _gru_state(layer, B, rng)
    y_whole, st_whole = layer.forward(x, state=state, training=False)
    stream = layer.stream(B, state=state)
    assert stream.delay == 0
    y, nones = _step_all(stream, x)
    assert nones == 0
    np.testing.assert_allclose(y, y_whole, **TOLS[dtype])
    assert isinstance(stream.state, fr.GRUState)
    _assert_state(stream.state, st_whole, dtype)
    if dtype == np.float64:   # the NumPy oracle, step by step
        cells = [{n: layer.params[n + suffix(l, 0)]
                  for n in layer._cell_param_shapes(layer._cell_input_size(l))}
                 for l in range(layer.num_layers)]
        y_ref, h_ref, _ = reference.gru_network_forward(
            x, cells, state.h, linear_before_reset=layer.linear_before_reset)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stream.state.h, h_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_step_many_and_sequential(dtype):
    T, B = 13, 2
    rng = np.random.default_rng(9)
    layer = _gru(dict(num_layers=2, linear_before_reset=False), dtype)
    x = rng.standard_normal((T, B, 4)).astype(dtype)
    y_whole, st_whole = layer.forward(x, training=False)
    stream = layer.stream(B)
    got = np.concatenate([stream.step_many(x[:5]), stream.step(x[5])[None], stream.step_many(x[6:]),
                          stream.flush()])
    np.testing.assert_allclose(got, y_whole, **TOLS[dtype])
    _assert_state(stream.state, st_whole, dtype)
    model = fr.Sequential(fr.LSTM(4, 5, context=(1, 2), dtype=dtype, seed=0),
                          fr.GRU(5, 3, dtype=dtype, seed=1), fr.Linear(3, 2, dtype=dtype, seed=2))
    y_model, _ = model.forward(x, training=False)
    s = model.stream(B)
    assert s.delay == 2
    y, nones = _step_all(s, x)
    assert nones == 2
    np.testing.assert_allclose(y, y_model, **TOLS[dtype])


def test_gru_reset_rows_equals_fresh_streams_and_leaves_the_others():
    layer = fr.GRU(3, 5, num_layers=2, dtype=np.float64, seed=0)
    make = lambda B: layer.stream(B)
    T, B, at, rows = 10, 4, 4, [0, 2]
    rng = np.random.default_rng(10)
    x = rng.standard_normal((T, B, 3))
    x_new = rng.standard_normal((T - at, len(rows), 3))
    outs = _run_with_reset(make, x, x_new, at, rows)
    plain = _run_with_reset(make, x, x_new, T, rows)
    for a, b in zip(outs[:-1], plain[:-1]):
        np.testing.assert_array_equal(a[[1, 3]], b[[1, 3]])
    fresh, _ = _step_all(make(len(rows)), x_new)
    np.testing.assert_allclose(np.stack([o[rows] for o in outs[at:-1]]), fresh,
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("how", ["in_place", "entry_replaced", "dict_replaced", "optimiser"])
def test_gru_stream_follows_changed_weights(how):
    layer = fr.GRU(3, 4, num_layers=2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(11)
    opt = fr.optim.SGD(layer, lr=0.5)
    for g in layer.grads.values():
        g[...] = rng.standard_normal(g.shape)

    def change(n):
        if n not in (2, 5):
            return
        if how == "optimiser":
            opt.step()
        elif how == "dict_replaced":
            layer.params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in layer.params.items()}
        else:
            for k, v in list(layer.params.items()):
                new = rng.uniform(-0.5, 0.5, v.shape)
                if how == "in_place":
                    layer.params[k][...] = new
                else:
                    layer.params[k] = new
    assert _follow(layer, change) < 1e-13


def test_gru_stream_refusals_and_bad_frames():
    with pytest.raises(ValueError, match="bidirectional"):
        fr.GRU(3, 4, bidirectional=True).stream(1)
    with pytest.raises(ValueError, match="reverse"):
        fr.GRU(3, 4, reverse=True).stream(1)
    stream = fr.GRU(3, 4, seed=0).stream(2)
    with pytest.raises(ValueError, match=r"frame must be .*\(2, 3\)"):
        stream.step(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="frame must be .*float32"):
        stream.step(np.zeros((2, 3), np.float64))
    snap = fr.GRU(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 3))
    want, _ = snap.forward(x, training=False)
    s = snap.stream(1, weights="snapshot")
    snap.params["W_h"][...] = 0
    np.testing.assert_allclose(np.stack([s.step(f) for f in x]), want, rtol=1e-13)
