"""Issue 3, group 4: chunked processing equals whole-sequence processing for
context windows with and without look-ahead, and for stacked and projected
models (the state carries the past frames; the caller passes the look-ahead)."""
import numpy as np
import pytest

import fusedrnn as fr

OPTS = [
    dict(context=(2, 0)),
    dict(context=(0, 2)),
    dict(context=(3, 1), proj_size=3),
    dict(context=(1, 2), num_layers=2, proj_size=2, peepholes="full"),
    dict(num_layers=3, proj_size=4),
    dict(context=(2, 1), coupled_gates=True, cell_clip=0.5, accumulation_clip=2.0),
]


def _chunks(T, cuts):
    edges = [0, *cuts, T]
    return list(zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opts", OPTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("cuts", [[5], [1, 2, 9], [3, 6, 10]])
def test_chunked_equals_whole(opts, cuts, dtype):
    T, B, I, H = 12, 3, 4, 6
    layer = fr.LSTM(I, H, dtype=dtype, seed=2, **opts)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(dtype)
    y_whole, st_whole = layer.forward(x, training=False)
    L_future = layer.context[1]
    state, ys = layer.initial_state(B), []  # a stream starts from an explicit state
    for a, b in _chunks(T, cuts):
        future = x[b:b + L_future] if L_future else None
        if future is not None and len(future) < L_future:  # the true end: pad with zeros
            future = np.concatenate([future, np.zeros((L_future - len(future), B, I), dtype)])
        y, state = layer.forward(x[a:b], state=state, x_future=future, training=False)
        ys.append(y)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(ys), y_whole, **tol)
    np.testing.assert_allclose(state.s, st_whole.s, **tol)
    np.testing.assert_allclose(state.v, st_whole.v, **tol)


def test_streaming_state_carries_past_frames():
    layer = fr.LSTM(2, 3, context=(2, 0), dtype=np.float64, seed=0)
    x = np.arange(10, dtype=np.float64).reshape(5, 1, 2)
    _, st = layer.forward(x)
    np.testing.assert_array_equal(st.x_past, x[-2:])
    # a chunk shorter than the window, streamed: padded with the zero past
    _, st1 = layer.forward(x[:1], state=layer.initial_state(1))
    np.testing.assert_array_equal(st1.x_past, np.concatenate([np.zeros((1, 1, 2)), x[:1]]))


@pytest.mark.parametrize("opts", [dict(context=(2, 1)), dict(context=(1, 0), proj_size=2, num_layers=2)])
def test_chunked_backward_with_context(opts):
    """Gradients through a streamed sequence: the whole-sequence backward equals
    the sum over chunks when dE/d(state) flows back and the context-frame
    gradients are routed to their frames."""
    T, B, I, H, cut = 9, 2, 3, 5, 4
    whole = fr.LSTM(I, H, dtype=np.float64, seed=4, **opts)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, whole.output_size))
    whole.forward(x)
    dx_whole, _ = whole.backward(dy)
    # with look-ahead the first chunk's outputs depend on the second chunk's frames
    # (x_future), so compare the part of dE/dx that flows through the states only
    # when L_future == 0; with L_future > 0 check the forward and the dx of the
    # second chunk's own frames instead.
    first, second = (fr.LSTM(I, H, dtype=np.float64, seed=4, **opts) for _ in range(2))
    Lf = whole.context[1]
    _, st = first.forward(x[:cut], x_future=x[cut:cut + Lf] if Lf else None)
    second.forward(x[cut:], state=st)
    dx2, dst = second.backward(dy[cut:])
    dx1, _ = first.backward(dy[:cut], dst)
    if Lf == 0:
        dx_chunks = np.concatenate([dx1, dx2])
        dx_chunks[cut - whole.context[0]:cut] += dst.x_past  # frames seen through the state
        np.testing.assert_allclose(dx_chunks, dx_whole, rtol=1e-10, atol=1e-12)
        for k in whole.grads:
            np.testing.assert_allclose(first.grads[k] + second.grads[k], whole.grads[k],
                                       rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(dx2[Lf:], dx_whole[cut + Lf:], rtol=1e-10, atol=1e-12)
