"""Group 4: the paper's unrolling argument. Two calls with the state carried
equal one call over the concatenated sequence, forward and backward."""
import copy

import numpy as np
import pytest

from conftest import make_layer, random_problem, state_of

CASES = [("lstm", True), ("lstm", False), ("rnn", False), ("rnn", True), ("gru", True),
         ("gru", False)]
TOLS = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,option", CASES)
@pytest.mark.parametrize("split", [1, 7, 12])
def test_chunked_forward_equals_whole(kind, option, dtype, split):
    T, B, I, H = 13, 4, 6, 9
    layer = make_layer(kind, T, B, I, H, dtype, option)
    prob = random_problem(layer, T, B)
    x, state = prob["x"], state_of(layer, prob["s0"], prob["o0"])
    for training in (True, False):
        y_whole, st_whole = layer.forward(x, state=state, training=training)
        y1, st1 = layer.forward(x[:split], state=state, training=training)
        y2, st2 = layer.forward(x[split:], state=st1, training=training)
        np.testing.assert_allclose(np.concatenate([y1, y2]), y_whole, **TOLS[dtype])
        for a, b in zip(st2, st_whole, strict=True):
            assert (a is None) == (b is None)
            if a is not None:  # an LSTM's x_past is None without a context window
                np.testing.assert_allclose(a, b, **TOLS[dtype])


@pytest.mark.parametrize("kind,option", CASES)
def test_chunked_backward_equals_whole(kind, option):
    """BPTT over two windows, passing dE/d(state) from the second window back into
    the first, is exact: the gradients equal one backward over the whole sequence."""
    T, B, I, H, split = 11, 3, 5, 7, 4
    whole = make_layer(kind, T, B, I, H, np.float64, option)
    first, second = copy.deepcopy(whole), copy.deepcopy(whole)
    prob = random_problem(whole, T, B)
    x, dy, state = prob["x"], prob["dy"], state_of(whole, prob["s0"], prob["o0"])
    dstate_T = state_of(whole, prob["ds_T"], prob["do_T"])

    whole.forward(x, state=state)
    dx_whole, dst_whole = whole.backward(dy, dstate_T)

    _, st1 = first.forward(x[:split], state=state)
    second.forward(x[split:], state=st1)
    dx2, dst_mid = second.backward(dy[split:], dstate_T)
    dx1, dst1 = first.backward(dy[:split], dst_mid)

    tol = dict(rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([dx1, dx2]), dx_whole, **tol)
    for a, b in zip(dst1, dst_whole, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, **tol)
    for k in whole.grads:
        np.testing.assert_allclose(first.grads[k] + second.grads[k], whole.grads[k], **tol)
