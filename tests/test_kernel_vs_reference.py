"""Group 2: the C kernel against the NumPy oracle, every output and gradient,
over a grid of shapes (T=1, B=1, odd and non-power-of-two sizes, I != H)."""
import numpy as np
import pytest

from conftest import (TOL, compare_all, make_layer, random_problem, run_kernel, run_reference,
                      state_of)

SHAPES = [  # (T, B, I, H)
    (1, 1, 1, 1),
    (1, 3, 5, 3),
    (3, 1, 17, 17),
    (17, 3, 1, 65),
    (5, 17, 130, 3),
    (3, 65, 3, 17),
    (2, 2, 65, 130),
    (17, 1, 130, 65),
    (9, 5, 7, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,option", [("lstm", True), ("lstm", False), ("rnn", False), ("rnn", True),
                                         ("gru", True), ("gru", False)],
                         ids=["lstm-peep", "lstm-nopeep", "rnn", "rnn-feedback", "gru",
                              "gru-original"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"T{t}B{b}I{i}H{h}" for t, b, i, h in SHAPES])
def test_kernel_matches_oracle(shape, kind, option, dtype):
    T, B, I, H = shape
    layer = make_layer(kind, T, B, I, H, dtype, option, seed=T * 1000 + H)
    prob = random_problem(layer, T, B, seed=B + I)
    out_k, grad_k = run_kernel(layer, prob)
    out_r, grad_r = run_reference(layer, prob)
    compare_all(out_k, out_r, TOL[dtype], "output")
    compare_all(grad_k, grad_r, TOL[dtype], "gradient")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,option", [("lstm", True), ("rnn", True), ("gru", True), ("gru", False)])
def test_inference_equals_training_forward(kind, option, dtype):
    # T * B large enough that inference hoists the input GEMM over several chunks.
    T, B, I, H = 37, 64, 9, 11
    layer = make_layer(kind, T, B, I, H, dtype, option)
    prob = random_problem(layer, T, B)
    state = state_of(layer, prob["s0"], prob["o0"])
    y_train, st_train = layer.forward(prob["x"], state=state, training=True)
    y_inf, st_inf = layer.forward(prob["x"], state=state, training=False)
    np.testing.assert_array_equal(y_inf, y_train)
    for a, b in zip(st_inf, st_train, strict=True):
        np.testing.assert_array_equal(a, b)  # (an LSTM's x_past: None == None)


@pytest.mark.parametrize("kind,option", [("lstm", True), ("rnn", True), ("gru", True), ("gru", False)])
def test_backward_accumulates(kind, option):
    T, B, I, H = 4, 3, 5, 6
    layer = make_layer(kind, T, B, I, H, np.float64, option)
    prob = random_problem(layer, T, B)
    _, g1 = run_kernel(layer, prob)
    layer.backward(prob["dy"], state_of(layer, prob["ds_T"], prob["do_T"]))
    for k, g in layer.grads.items():
        np.testing.assert_allclose(g, 2 * g1[k], rtol=1e-13, atol=1e-15)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())
