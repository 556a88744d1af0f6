"""The layers' flat tape interface: tape_layout / tape_size / forward_with_tape /
backward_with_tape.

A forward that writes its activations into a caller's buffer must compute what
`forward` computes (bit for bit: the same kernel calls), its backward what
`backward` computes, and both what the NumPy oracle `fusedrnn.reference`
computes; the tape carries everything the backward needs (lengths, dropout
masks, the input), the layer keeps nothing, and bad tapes are refused."""
import threading

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference
from fusedrnn.core._layer import suffix

CASES = {
    "lstm-full-proj-2layers-bidir": (fr.LSTM, dict(peepholes="full", proj_size=2, num_layers=2,
                                                   bidirectional=True)),
    "lstm-context-streaming": (fr.LSTM, dict(context=(2, 1), coupled_gates=True)),
    "lstm-clips-reverse-batch_first": (fr.LSTM, dict(cell_clip=0.4, accumulation_clip=0.9,
                                                     reverse=True, batch_first=True)),
    "lstm-3layers-dropout": (fr.LSTM, dict(num_layers=3, dropout=0.4)),
    "rnn-feedback-2layers-bidir-dropout": (fr.RNN, dict(state_feedback=True, num_layers=2,
                                                        bidirectional=True, dropout=0.3)),
    "rnn-plain": (fr.RNN, dict()),
}
T, B, I, H = 6, 4, 3, 5
LENGTHS = np.array([6, 0, 3, 1])


def _inputs(layer, rng, lengths=True):
    dt = layer.dtype
    LD, R = layer.num_layers * layer.num_directions, layer.output_size
    x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I)).astype(dt)
    s0 = (0.5 * rng.standard_normal((LD, B, H))).astype(dt)
    o0 = (0.5 * rng.standard_normal((LD, B, R))).astype(dt)
    kw = dict(lengths=LENGTHS.copy() if lengths else None)
    extra = ()
    if getattr(layer, "context", (0, 0)) != (0, 0):
        L_past, L_future = layer.context
        extra = (rng.standard_normal((L_past, B, I)).astype(dt),)
        kw["x_future"] = rng.standard_normal((L_future, B, I)).astype(dt)
    state = layer.State(s0, o0, *extra)
    return x, state, kw


def _grads_zero(layer):
    return {k: np.zeros_like(v) for k, v in layer.params.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_tape_path_equals_forward_and_backward(case, dtype):
    cls, opts = CASES[case]
    layer = cls(I, H, dtype=dtype, seed=3, **opts)
    rng = np.random.default_rng(1)
    x, state, kw = _inputs(layer, rng)
    dropout = layer.dropout > 0
    tape = np.empty(layer.tape_size(T, B, dropout=dropout), layer.dtype)
    y, st = layer.forward_with_tape(x, tape, state, dropout_seed=11 if dropout else None, **kw)
    assert not np.shares_memory(y, tape)
    with pytest.raises(ValueError, match="needs a preceding forward"):
        layer.backward()                     # the tape forward left nothing in the layer
    # the same call through forward(), its dropout masks from the same seed
    ref_layer = cls(I, H, dtype=dtype, seed=3, **opts)
    ref_layer._dropout_rng = np.random.default_rng(11)
    y_r, st_r = ref_layer.forward(x, state, **kw)
    np.testing.assert_array_equal(y, y_r)
    for a, b in zip(st, st_r):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dstate = layer.State(rng.standard_normal(st[0].shape).astype(dtype),
                         rng.standard_normal(st[1].shape).astype(dtype))
    grads = _grads_zero(layer)
    dx, dst = layer.backward_with_tape(tape, dy, dstate, grads=grads)
    dx_r, dst_r = ref_layer.backward(dy, dstate)
    np.testing.assert_array_equal(dx, dx_r)
    for a, b in zip(dst, dst_r):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    for k in grads:
        np.testing.assert_array_equal(grads[k], ref_layer.grads[k], err_msg=k)
        assert not layer.grads[k].any(), k       # the layer's own grads are untouched
    # a second backward through the same tape accumulates the same again
    layer.backward_with_tape(tape, dy, dstate, grads=grads)
    ref_layer.backward(dy, dstate)
    for k in grads:
        np.testing.assert_array_equal(grads[k], ref_layer.grads[k], err_msg=k)


def test_tape_matches_the_oracle_with_its_masks_and_lengths():
    layer = fr.LSTM(I, H, peepholes="diagonal", proj_size=2, num_layers=2, bidirectional=True,
                    dropout=0.5, dtype=np.float64, seed=5)
    rng = np.random.default_rng(2)
    x, state, kw = _inputs(layer, rng)
    tape = np.empty(layer.tape_size(T, B, dropout=True))
    y, st = layer.forward_with_tape(x, tape, state, dropout_seed=3, **kw)
    layout = layer.tape_layout(T, B, dropout=True)
    off, shape = layout["mask_l1"]
    mask = tape[off:off + int(np.prod(shape))].reshape(shape)
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < mask.mean() < 2
    D = layer.num_directions
    cells = [{n: layer.params[n + suffix(l, d)] for n in ("W_x", "W_v", "b", "w_s", "W_qv")}
             for l in range(2) for d in range(D)]
    y_r, s_r, v_r, cache = reference.lstm_network_forward(
        x, cells, state.s, state.v, bidirectional=True, lengths=LENGTHS, dropout_masks=[mask])
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, y_r, **tol)
    np.testing.assert_allclose(st.s, s_r, **tol)
    np.testing.assert_allclose(st.v, v_r, **tol)
    dy = rng.standard_normal(y.shape)
    grads = _grads_zero(layer)
    dx, dst = layer.backward_with_tape(tape, dy, grads=grads)
    dx_r, ds0_r, dv0_r, grads_r = reference.lstm_network_backward(dy, None, None, cache)
    np.testing.assert_allclose(dx, dx_r, **tol)
    np.testing.assert_allclose(dst.s, ds0_r, **tol)
    np.testing.assert_allclose(dst.v, dv0_r, **tol)
    for i, g_r in enumerate(grads_r):
        l, d = divmod(i, D)
        for name, g in g_r.items():
            np.testing.assert_allclose(grads[name + suffix(l, d)], g, **tol, err_msg=name)


def test_layout_regions_are_aligned_disjoint_and_fill_the_size():
    for cls, opts in CASES.values():
        layer = cls(I, H, seed=0, **opts)
        for dropout in (False, True):
            layout = layer.tape_layout(T, B, dropout=dropout)
            size = layer.tape_size(T, B, dropout=dropout)
            spans = sorted((off, off + int(np.prod(shape))) for off, shape in layout.values())
            assert spans[0][0] == 0 and spans[-1][1] <= size < spans[-1][1] + 16
            for (a0, a1), (b0, _) in zip(spans, spans[1:]):
                assert a1 <= b0 < a1 + 16                  # disjoint, 64-byte gaps at most
            assert all(off * 4 % 64 == 0 for off, _ in layout.values())
            D, L = layer.num_directions, layer.num_layers
            assert layout["x"][1] == (T, B, layer._cell_input_size(0))
            assert layout["y"][1] == (T, B, layer.output_size)
            assert layout["s0"][1] == (L * D, B, H)
            assert ("mask_l1" in layout) == (dropout and layer.dropout > 0 and L > 1)


def test_tape_keeps_the_call_inputs_and_many_tapes_are_in_flight():
    layer = fr.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    rng = np.random.default_rng(4)
    calls = []
    for _ in range(4):
        x, state, kw = _inputs(layer, rng)
        tape = np.empty(layer.tape_size(T, B))
        y, _ = layer.forward_with_tape(x, tape, state, **kw)
        calls.append((x.copy(), fr.LSTMState(state.s.copy(), state.v.copy()),
                      kw["lengths"].copy(), tape, rng.standard_normal(y.shape)))
        x[...] = 7.0               # the caller reuses its buffers: the tape has its own copies
        state.s[...] = 7.0
        kw["lengths"][...] = T
    results = [None] * 4

    def back(i):
        g = _grads_zero(layer)
        results[i] = (layer.backward_with_tape(calls[i][3], calls[i][4], grads=g)[0], g)

    threads = [threading.Thread(target=back, args=(i,)) for i in (3, 1, 0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (x, state, lens, _, dy), (dx, g) in zip(calls, results):
        ref = fr.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
        ref.forward(x, state, lengths=lens)
        dx_r, _ = ref.backward(dy)
        np.testing.assert_array_equal(dx, dx_r)
        for k in g:
            np.testing.assert_array_equal(g[k], ref.grads[k], err_msg=k)


def test_params_argument_replaces_the_layer_weights():
    layer = fr.RNN(I, H, state_feedback=True, dtype=np.float64, seed=0)
    other = fr.RNN(I, H, state_feedback=True, dtype=np.float64, seed=9)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    tape = np.empty(layer.tape_size(T, B))
    y, _ = layer.forward_with_tape(x, tape, params=other.params)
    y_r, _ = other.forward(x)
    np.testing.assert_array_equal(y, y_r)
    dy = np.ones_like(y)
    g = _grads_zero(layer)
    dx, _ = layer.backward_with_tape(tape, dy, params=other.params, grads=g)
    dx_r, _ = other.backward(dy)
    np.testing.assert_array_equal(dx, dx_r)
    for k in g:
        np.testing.assert_array_equal(g[k], other.grads[k])
    # default grads: the layer's own, accumulated
    layer.backward_with_tape(tape, dy, params=other.params)
    for k in g:
        np.testing.assert_array_equal(layer.grads[k], other.grads[k])
    y_inf, _ = layer.forward_with_tape(x, None, params=other.params)   # inference
    np.testing.assert_array_equal(y_inf, other.forward(x, training=False)[0])


def test_bad_tapes_and_arguments_are_refused():
    layer = fr.LSTM(I, H, num_layers=2, dropout=0.5, seed=0)
    x = np.zeros((T, B, I), np.float32)
    n = layer.tape_size(T, B)
    with pytest.raises(ValueError, match=rf"tape must have tape_size\({T}, {B}, dropout=False\) = {n}"):
        layer.forward_with_tape(x, np.empty(n + 1, np.float32))
    with pytest.raises(ValueError, match=rf"dropout=True\) = {layer.tape_size(T, B, dropout=True)}"):
        layer.forward_with_tape(x, np.empty(n, np.float32), dropout_seed=1)
    with pytest.raises(ValueError, match="tape must be a 1-D C-contiguous array of dtype float32"):
        layer.forward_with_tape(x, np.empty(n, np.float64))
    with pytest.raises(ValueError, match="tape must be a 1-D C-contiguous"):
        layer.forward_with_tape(x, np.empty((2, n), np.float32))
    with pytest.raises(TypeError, match="tape must be a 1-D numpy array"):
        layer.forward_with_tape(x, [0.0] * n)
    ro = np.empty(n, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="tape must be writeable"):
        layer.forward_with_tape(x, ro)
    with pytest.raises(TypeError, match="dropout_seed must be None or an int"):
        layer.forward_with_tape(x, np.empty(n, np.float32), dropout_seed=1.5)
    with pytest.raises(ValueError, match="dropout_seed must be None or an int >= 0"):
        layer.forward_with_tape(x, np.empty(n, np.float32), dropout_seed=-1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        layer.tape_size(0, B)
    with pytest.raises(KeyError, match="params is missing 'W_x_l1'"):
        layer.forward_with_tape(x, np.empty(n, np.float32),
                                params={k: v for k, v in layer.params.items() if k != "W_x_l1"})
    tape = np.empty(n, np.float32)
    layer.forward_with_tape(x, tape)
    with pytest.raises(ValueError, match="not filled by forward_with_tape"):
        layer.backward_with_tape(np.zeros(n, np.float32))
    with pytest.raises(ValueError, match="another configuration"):
        fr.LSTM(I, H + 1, num_layers=2, seed=0).backward_with_tape(tape)
    with pytest.raises(ValueError, match=rf"tape must have tape_size\({T}, {B}"):
        layer.backward_with_tape(tape[:-16])
    with pytest.raises(ValueError, match="grads\\['b'\\] must be a writeable"):
        g = _grads_zero(layer)
        g["b"] = np.zeros((4 * H, 2), np.float32)[:, 0]
        layer.backward_with_tape(tape, grads=g)
    with pytest.raises(ValueError, match="dy must have 6 time steps"):
        layer.backward_with_tape(tape, np.zeros((T + 1, B, H), np.float32))
