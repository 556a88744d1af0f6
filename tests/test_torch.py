"""Group 3: against torch.nn.LSTM and torch.nn.RNN in float64 through from_torch."""
import numpy as np
import pytest

import fusedrnn as fr

torch = pytest.importorskip("torch")


def _torch_run(module, x, h0, c0, dy, dh, dc):
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    if c0 is None:
        y, hT = module(xt, h0t)
        loss = (y * torch.tensor(dy)).sum() + (hT * torch.tensor(dh)).sum()
        loss.backward()
        return y, hT, None, xt.grad, h0t.grad, None
    c0t = torch.tensor(c0, requires_grad=True)
    y, (hT, cT) = module(xt, (h0t, c0t))
    loss = ((y * torch.tensor(dy)).sum() + (hT * torch.tensor(dh)).sum()
            + (cT * torch.tensor(dc)).sum())
    loss.backward()
    return y, hT, cT, xt.grad, h0t.grad, c0t.grad


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 4), (7, 5, 9, 6), (20, 3, 17, 33)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_matches_torch(T, B, I, H, bias, batch_first):
    torch.manual_seed(T + H)
    module = torch.nn.LSTM(I, H, bias=bias, batch_first=batch_first, dtype=torch.float64)
    layer = fr.LSTM.from_torch(module)
    assert layer.batch_first == batch_first and layer.dtype == np.float64 and layer.peepholes == "none"
    rng = np.random.default_rng(0)
    xs = (B, T, I) if batch_first else (T, B, I)
    ys = (B, T, H) if batch_first else (T, B, H)
    x, dy = rng.standard_normal(xs), rng.standard_normal(ys)
    h0, c0, dh, dc = (rng.standard_normal((1, B, H)) for _ in range(4))

    y_t, hT, cT, dx_t, dh0, dc0 = _torch_run(module, x, h0, c0, dy, dh, dc)
    y, st = layer.forward(x, state=fr.LSTMState(s=c0, v=h0))
    dx, dst = layer.backward(dy, fr.LSTMState(s=dc, v=dh))

    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, _np(y_t), **tol)
    np.testing.assert_allclose(st.v, _np(hT), **tol)
    np.testing.assert_allclose(st.s, _np(cT), **tol)
    np.testing.assert_allclose(dx, _np(dx_t), **tol)
    np.testing.assert_allclose(dst.v, _np(dh0), **tol)
    np.testing.assert_allclose(dst.s, _np(dc0), **tol)
    np.testing.assert_allclose(layer.grads["W_x"], _np(module.weight_ih_l0.grad), **tol)
    np.testing.assert_allclose(layer.grads["W_v"], _np(module.weight_hh_l0.grad), **tol)
    if bias:
        np.testing.assert_allclose(layer.grads["b"], _np(module.bias_ih_l0.grad), **tol)
        np.testing.assert_allclose(layer.grads["b"], _np(module.bias_hh_l0.grad), **tol)


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 4), (7, 5, 9, 6), (20, 3, 17, 33)])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_matches_torch(T, B, I, H, bias):
    torch.manual_seed(T * H)
    module = torch.nn.RNN(I, H, bias=bias, nonlinearity="tanh", dtype=torch.float64)
    layer = fr.RNN.from_torch(module)
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    h0, dh = rng.standard_normal((1, B, H)), rng.standard_normal((1, B, H))

    y_t, hT, _, dx_t, dh0, _ = _torch_run(module, x, h0, None, dy, dh, None)
    # With W_s = 0 the state s[-1] has no effect; r[-1] is torch's h0.
    y, st = layer.forward(x, state=fr.RNNState(s=np.zeros_like(h0), r=h0))
    dx, dst = layer.backward(dy, fr.RNNState(s=None, r=dh))

    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, _np(y_t), **tol)
    np.testing.assert_allclose(st.r, _np(hT), **tol)
    np.testing.assert_allclose(np.tanh(st.s), _np(hT), **tol)
    np.testing.assert_allclose(dx, _np(dx_t), **tol)
    np.testing.assert_allclose(dst.r, _np(dh0), **tol)
    np.testing.assert_allclose(layer.grads["W_x"], _np(module.weight_ih_l0.grad), **tol)
    np.testing.assert_allclose(layer.grads["W_r"], _np(module.weight_hh_l0.grad), **tol)
    if bias:
        np.testing.assert_allclose(layer.grads["theta_s"], _np(module.bias_hh_l0.grad), **tol)


@pytest.mark.parametrize("cls,kw", [(fr.LSTM, {"peepholes": False}), (fr.RNN, {})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_torch_round_trip(cls, kw, dtype):
    layer = cls(5, 7, dtype=dtype, seed=3, **kw)
    module = layer.to_torch()
    assert module.weight_ih_l0.dtype == (torch.float32 if dtype == np.float32 else torch.float64)
    back = cls.from_torch(module)
    for k, v in layer.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    x = np.random.default_rng(0).standard_normal((6, 2, 5)).astype(dtype)
    y, _ = layer.forward(x, training=False)
    with torch.no_grad():
        y_t = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(y, y_t, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_torch_mapping_refusals():
    with pytest.raises(ValueError, match="peepholes"):
        fr.LSTM(3, 4, peepholes=True).to_torch()
    with pytest.raises(ValueError, match="state feedback"):
        fr.RNN(3, 4, state_feedback=True).to_torch()
    with pytest.raises(ValueError, match="coupled gates, cell_clip"):
        fr.LSTM(3, 4, peepholes=None, coupled_gates=True, cell_clip=1.0).to_torch()
    # nonlinearity="relu" maps to activation="relu" (tests/test_warping_kernel.py compares them)
    assert fr.RNN.from_torch(torch.nn.RNN(3, 4, nonlinearity="relu")).activation == "relu"
    with pytest.raises(TypeError, match="torch.nn.LSTM"):
        fr.LSTM.from_torch(torch.nn.GRU(3, 4))
