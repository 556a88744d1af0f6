"""API behaviour the core issue promises: batch_first, conversions, in-place
parameter updates, the paper's names, read-only outputs, NaN policy, GIL release."""
import threading
import time

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference


def test_demo_contract():
    rng = np.random.default_rng(0)
    lstm = fr.LSTM(input_size=32, hidden_size=64, peepholes=True, dtype=np.float32, seed=0)
    x, x2 = rng.standard_normal((10, 3, 32)), rng.standard_normal((5, 3, 32))
    y, state = lstm.forward(x)
    assert y.shape == (10, 3, 64) and y.dtype == np.float32
    assert state.s.shape == state.v.shape == (1, 3, 64)
    y2, state2 = lstm.forward(x2, state=state)
    dx, dstate = lstm.backward(np.ones_like(y2))
    assert dx.shape == (5, 3, 32) and dstate.s.shape == (1, 3, 64)
    assert set(lstm.params) == set(lstm.grads) == {"W_x", "W_v", "b", "w_s"}
    for k in lstm.params:
        assert lstm.params[k].shape == lstm.grads[k].shape
    # the oracle from the carried state gives the same second window
    p = {k: v.astype(np.float64) for k, v in lstm.params.items()}
    y_ref, *_ = reference.lstm_forward(x2.astype(np.float32).astype(np.float64), p,
                                       state.s[0].astype(np.float64), state.v[0].astype(np.float64))
    np.testing.assert_allclose(y2, y_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
def test_batch_first_equals_time_major(cls):
    rng = np.random.default_rng(1)
    tm = cls(3, 4, dtype=np.float64, seed=5)
    bf = cls(3, 4, dtype=np.float64, seed=5, batch_first=True)
    x = rng.standard_normal((6, 2, 3))
    dy = rng.standard_normal((6, 2, 4))
    y_tm, st_tm = tm.forward(x)
    y_bf, st_bf = bf.forward(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(y_bf, y_tm.transpose(1, 0, 2))
    np.testing.assert_array_equal(st_bf[0], st_tm[0])
    dx_tm, _ = tm.backward(dy)
    dx_bf, _ = bf.backward(dy.transpose(1, 0, 2))
    np.testing.assert_array_equal(dx_bf, dx_tm.transpose(1, 0, 2))
    for k in tm.grads:
        np.testing.assert_array_equal(bf.grads[k], tm.grads[k])


@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
def test_array_likes_and_layouts(cls):
    layer = cls(3, 4, dtype=np.float64, seed=2)
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5, 2, 6))
    x = base[:, :, ::2]  # non-contiguous view
    assert not x.flags.c_contiguous
    y_ref, _ = layer.forward(np.ascontiguousarray(x), training=False)
    np.testing.assert_array_equal(layer.forward(x, training=False)[0], y_ref)
    np.testing.assert_array_equal(layer.forward(x.tolist(), training=False)[0], y_ref)
    ro = np.ascontiguousarray(x)
    ro.flags.writeable = False
    np.testing.assert_array_equal(layer.forward(ro)[0], y_ref)
    layer.backward(np.ones((5, 2, 4)))  # a read-only input is fine for training too
    # integers are cast to the layer dtype (documented)
    xi = np.arange(30).reshape(5, 2, 3) % 3
    np.testing.assert_array_equal(layer.forward(xi, training=False)[0],
                                  layer.forward(xi.astype(np.float64), training=False)[0])


def test_float64_input_to_float32_layer_is_cast():
    layer = fr.LSTM(3, 4, dtype=np.float32, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    y, st = layer.forward(x)
    assert y.dtype == st.s.dtype == np.float32
    np.testing.assert_array_equal(y, layer.forward(x.astype(np.float32))[0])


def test_in_place_param_update_is_seen():
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    y0, _ = layer.forward(x, training=False)
    layer.params["W_v"] *= 0.5  # in place, as an optimiser does
    y1, _ = layer.forward(x, training=False)
    p = dict(layer.params)
    y_ref, *_ = reference.lstm_forward(x, p, np.zeros((2, 4)), np.zeros((2, 4)))
    np.testing.assert_allclose(y1, y_ref, rtol=1e-12)
    assert not np.allclose(y0, y1)


def test_paper_views_are_views():
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    v = layer.paper_params
    assert set(v) == {f"{p}{g}" for p in ("W_x", "W_v", "b_") for g in ("cu", "cs", "du", "cr")} | {
        "w_scu", "w_scs", "w_scr"}
    np.testing.assert_array_equal(v["W_xcs"], layer.params["W_x"][4:8])
    np.testing.assert_array_equal(v["w_scr"], layer.params["w_s"][2])
    v["W_vdu"][...] = 7.0
    assert (layer.params["W_v"][8:12] == 7.0).all()
    g = layer.paper_grads
    g["b_cr"][...] = 1.0
    assert (layer.grads["b"][12:16] == 1.0).all() and (layer.grads["b"][:12] == 0).all()


def test_training_output_is_read_only_and_backward_unaffected():
    layer = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    y, _ = layer.forward(x)
    with pytest.raises(ValueError):
        y[0, 0, 0] = 1.0
    x[...] = 0  # mutating the caller's input after forward does not change backward
    dx, _ = layer.backward(np.ones((4, 2, 4)))
    layer2 = fr.LSTM(3, 4, dtype=np.float64, seed=0)
    layer2.forward(np.random.default_rng(0).standard_normal((4, 2, 3)))
    dx2, _ = layer2.backward(np.ones((4, 2, 4)))
    np.testing.assert_array_equal(dx, dx2)
    for k in layer.grads:
        np.testing.assert_array_equal(layer.grads[k], layer2.grads[k])


@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
def test_nan_propagates(cls):
    """Documented NaN policy: no checks, NaN/Inf propagate like in NumPy."""
    layer = cls(3, 4, dtype=np.float64, seed=0)
    x = np.zeros((4, 2, 3))
    x[1, 0, 0] = np.nan
    y, _ = layer.forward(x)
    assert np.isnan(y[1:, 0]).all()      # row 0 is poisoned from step 1 on
    assert np.isfinite(y[:, 1]).all()    # other rows are untouched
    assert np.isfinite(y[0]).all()


@pytest.mark.parametrize("cls", [fr.LSTM, fr.RNN])
def test_gil_released_two_threads_overlap(cls):
    """Two Python threads running different layers overlap in time: the kernel
    call releases the GIL (if it held it, the intervals could not overlap)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    layers = [cls(128, 128, dtype=np.float64, seed=i) for i in range(2)]
    x = rng.standard_normal((1500, 4, 128))  # ~20-50 ms per call
    with threadpoolctl.threadpool_limits(1, "blas"):
        layers[0].forward(x, training=False)  # warm-up
        for _attempt in range(10):
            spans = [None, None]
            barrier = threading.Barrier(2)

            def work(i):
                barrier.wait()
                t0 = time.perf_counter()
                layers[i].forward(x, training=False)
                spans[i] = (t0, time.perf_counter())

            threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            (a0, a1), (b0, b1) = spans
            if min(a1, b1) > max(a0, b0):
                return
    pytest.fail(f"kernel calls never overlapped: {spans}")


def test_initial_state_and_repr():
    lstm = fr.LSTM(3, 4, seed=0)
    st = lstm.initial_state(5)
    assert st.s.shape == (1, 5, 4) and not st.s.any() and st.v.dtype == np.float32
    assert "peepholes='diagonal'" in repr(lstm)
    assert "state_feedback=False" in repr(fr.RNN(3, 4))


def test_seed_reproducible():
    a, b, c = fr.LSTM(3, 4, seed=7), fr.LSTM(3, 4, seed=7), fr.LSTM(3, 4, seed=8)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W_x"], c.params["W_x"])


def test_set_num_threads_controls_the_blas_and_parallel_directions():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    old = fr.get_num_threads()
    try:
        fr.set_num_threads(1)
        assert fr.get_num_threads() == 1
        blas = [i for i in threadpoolctl.threadpool_info() if "scipy" in i["filepath"]]
        assert blas and all(i["num_threads"] == 1 for i in blas)
        layer = fr.LSTM(3, 4, bidirectional=True, num_layers=2, dtype=np.float64, seed=0)
        x = np.random.default_rng(0).standard_normal((5, 2, 3))
        y1, _ = layer.forward(x)
        dx1, _ = layer.backward(np.ones_like(y1))
        g1 = {k: v.copy() for k, v in layer.grads.items()}
        fr.set_num_threads(2)  # the directions now run on two threads: same results
        layer.zero_grad()
        y2, _ = layer.forward(x)
        dx2, _ = layer.backward(np.ones_like(y2))
        np.testing.assert_array_equal(y2, y1)
        np.testing.assert_array_equal(dx2, dx1)
        for k in g1:
            np.testing.assert_array_equal(layer.grads[k], g1[k])
    finally:
        fr.set_num_threads(old)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fr.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fr.set_num_threads(1.5)
