"""Sequential: backward against central finite differences (float64) for every
parameter, the input and the initial states; params/grads are the layers'
storage; per-layer state lists; Linear alone."""
import numpy as np
import pytest

import fusedrnn as fr


def make_model(dtype=np.float64):
    return fr.Sequential(
        fr.LSTM(3, 5, peepholes=True, dtype=dtype, seed=0),
        fr.RNN(5, 4, state_feedback=True, dtype=dtype, seed=1),
        fr.Linear(4, 2, dtype=dtype, seed=2),
    )


def test_backward_matches_finite_differences():
    T, B = 6, 2
    rng = np.random.default_rng(0)
    model = make_model()
    x = rng.standard_normal((T, B, 3))
    w_y = rng.standard_normal((T, B, 2))             # E = Σ w_y ⊙ y + Σ w_s ⊙ final states
    state0 = [fr.LSTMState(*(0.3 * rng.standard_normal((2, 1, B, 5)))),
              fr.RNNState(*(0.3 * rng.standard_normal((2, 1, B, 4)))), None]
    w_st = [fr.LSTMState(*rng.standard_normal((2, 1, B, 5))),
            fr.RNNState(*rng.standard_normal((2, 1, B, 4))), None]

    def energy(xx, st):
        y, st_T = model.forward(xx, state=st, training=False)
        e = np.sum(w_y * y)
        for s, w in zip(st_T, w_st):
            if s is not None:
                e += np.sum(s[0] * w[0]) + np.sum(s[1] * w[1])
        return e

    model.zero_grad()
    model.forward(x, state=state0)
    dx, dstate0 = model.backward(w_y, dstate=w_st)
    assert dstate0[2] is None and len(dstate0) == 3

    eps = 1e-6
    pick = np.random.default_rng(1)
    for key, p in model.params.items():
        g = model.grads[key]
        for _ in range(4):
            i = tuple(pick.integers(0, n) for n in p.shape)
            old = p[i]
            p[i] = old + eps
            ep = energy(x, state0)
            p[i] = old - eps
            em = energy(x, state0)
            p[i] = old
            assert g[i] == pytest.approx((ep - em) / (2 * eps), rel=1e-5, abs=1e-7), (key, i)
    for _ in range(6):
        i = tuple(pick.integers(0, n) for n in x.shape)
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        assert dx[i] == pytest.approx((energy(xp, state0) - energy(xm, state0)) / (2 * eps),
                                      rel=1e-5, abs=1e-7)
    for layer in (0, 1):
        for field in (0, 1):
            i = (0, int(pick.integers(0, B)), int(pick.integers(0, 3)))
            sp = [None if s is None else type(s)(s[0].copy(), s[1].copy()) for s in state0]
            sm = [None if s is None else type(s)(s[0].copy(), s[1].copy()) for s in state0]
            sp[layer][field][i] += eps
            sm[layer][field][i] -= eps
            fd = (energy(x, sp) - energy(x, sm)) / (2 * eps)
            assert dstate0[layer][field][i] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_params_are_the_layers_storage():
    model = make_model(np.float32)
    assert list(model.params) == ["0.W_x", "0.W_v", "0.b", "0.w_s", "1.W_x", "1.W_r",
                                  "1.theta_s", "1.W_s", "2.W", "2.b"]
    assert model.params["1.W_r"] is model[1].params["W_r"]
    assert model.grads["2.W"] is model[2].grads["W"]
    model.params["0.W_x"][...] = 0.5
    assert np.all(model[0].params["W_x"] == 0.5)
    model.grads["2.b"][...] = 1
    model.zero_grad()
    assert not any(g.any() for g in model.grads.values())
    assert model.dtype == np.float32 and len(model) == 3


def test_states_carry_like_one_call():
    rng = np.random.default_rng(2)
    model = make_model()
    x = rng.standard_normal((9, 3, 3))
    y, st = model.forward(x, training=False)
    y1, st1 = model.forward(x[:4], training=False)
    y2, st2 = model.forward(x[4:], state=st1, training=False)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y, rtol=1e-12, atol=1e-14)
    for a, b in zip(st, st2):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a.s, b.s, rtol=1e-12, atol=1e-14)
    zero = model.initial_state(3)
    assert zero[2] is None and zero[0].s.shape == (1, 3, 5)
    y0, _ = model.forward(x, state=zero, training=False)
    np.testing.assert_array_equal(y0, y)


def test_errors():
    model = make_model()
    x = np.zeros((2, 1, 3))
    with pytest.raises(ValueError, match="one entry per layer"):
        model.forward(x, state=[None, None])
    with pytest.raises(ValueError, match="no state"):
        model.forward(x, state=[None, None, fr.RNNState(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)))])
    with pytest.raises(ValueError, match="batch_first"):
        fr.Sequential(fr.LSTM(2, 2, batch_first=True), fr.LSTM(2, 2))
    with pytest.raises(TypeError):
        fr.Sequential(object())
    with pytest.raises(ValueError):
        fr.Sequential()


def test_batch_first_model():
    rng = np.random.default_rng(4)
    tm = fr.Sequential(fr.LSTM(2, 3, dtype=np.float64, seed=0), fr.Linear(3, 1, dtype=np.float64))
    bf = fr.Sequential(fr.LSTM(2, 3, dtype=np.float64, seed=0, batch_first=True),
                       fr.Linear(3, 1, dtype=np.float64))
    bf[1].params["W"][...] = tm[1].params["W"]
    bf[1].params["b"][...] = tm[1].params["b"]
    x = rng.standard_normal((5, 2, 2))
    y, _ = tm.forward(x)
    yb, _ = bf.forward(x.transpose(1, 0, 2))
    assert bf.batch_first
    np.testing.assert_allclose(yb, y.transpose(1, 0, 2), rtol=1e-12)
    dx = tm.backward(np.ones_like(y))[0]
    dxb = bf.backward(np.ones_like(yb))[0]
    np.testing.assert_allclose(dxb, dx.transpose(1, 0, 2), rtol=1e-12)


def test_linear_alone():
    rng = np.random.default_rng(5)
    lin = fr.Linear(4, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal((7, 4))                    # (N, F) input
    y = lin.forward(x)
    np.testing.assert_allclose(y, x @ lin.params["W"].T + lin.params["b"])
    dy = rng.standard_normal((7, 3))
    dx = lin.backward(dy)
    np.testing.assert_allclose(dx, dy @ lin.params["W"])
    np.testing.assert_allclose(lin.grads["W"], dy.T @ x)
    np.testing.assert_allclose(lin.grads["b"], dy.sum(0))
    lin.backward(dy)                                   # accumulates
    np.testing.assert_allclose(lin.grads["b"], 2 * dy.sum(0))
    x_saved = x.copy()
    lin.zero_grad()
    lin.forward(x)
    x[...] = 0                                         # the layer kept its own copy
    lin.backward(dy)
    np.testing.assert_allclose(lin.grads["W"], dy.T @ x_saved)
    lin.forward(x, training=False)
    with pytest.raises(ValueError, match="training=True"):
        lin.backward(dy)
    with pytest.raises(ValueError, match="shape"):
        lin.forward(np.zeros((2, 5)))
    nb = fr.Linear(2, 2, bias=False, seed=0)
    assert list(nb.params) == ["W"] and nb.forward(np.zeros((1, 2))).dtype == np.float32
    assert fr.Linear(3, 2, seed=7).params["W"].tolist() == fr.Linear(3, 2, seed=7).params["W"].tolist()


def test_lengths_pass_to_the_recurrent_layers():
    rng = np.random.default_rng(6)
    model = fr.Sequential(fr.LSTM(2, 3, dtype=np.float64, seed=0), fr.Linear(3, 2, dtype=np.float64))
    x = rng.standard_normal((6, 3, 2))
    lengths = np.array([6, 2, 4])
    y, st = model.forward(x, lengths=lengths, training=False)
    for b, n in enumerate(lengths):
        yb, stb = model.forward(x[:n, b:b + 1], training=False)
        np.testing.assert_allclose(y[:n, b], yb[:, 0], rtol=1e-12)
        np.testing.assert_allclose(st[0].s[:, b], stb[0].s[:, 0], rtol=1e-12)
        np.testing.assert_allclose(y[n:, b], model[1].params["b"] + 0 * y[n:, b])  # zero input


def test_augmented_layers_inside_sequential():
    """Stacked, bidirectional, projected LSTMs feed a Linear; gradients still match FD."""
    rng = np.random.default_rng(7)
    model = fr.Sequential(
        fr.LSTM(2, 4, peepholes="full", proj_size=3, num_layers=2, bidirectional=True,
                dtype=np.float64, seed=0),
        fr.Linear(6, 1, dtype=np.float64, seed=1))
    x = rng.standard_normal((5, 2, 2))
    w = rng.standard_normal((5, 2, 1))
    model.zero_grad()
    y, _ = model.forward(x)
    model.backward(w)
    eps = 1e-6
    for key in ("0.W_qv_l1_reverse", "0.W_s", "1.W"):
        p = model.params[key]
        i = tuple(int(rng.integers(0, n)) for n in p.shape)
        old = p[i]
        p[i] = old + eps
        ep = np.sum(w * model.forward(x, training=False)[0])
        p[i] = old - eps
        em = np.sum(w * model.forward(x, training=False)[0])
        p[i] = old
        assert model.grads[key][i] == pytest.approx((ep - em) / (2 * eps), rel=1e-5, abs=1e-8)
