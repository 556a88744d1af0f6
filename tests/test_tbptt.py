"""Truncated BPTT: windows of K steps give the same forward as one call; the
state is carried but no gradient crosses a window boundary; state reset;
callbacks, history and progress bar; a seed reproduces a training run."""
import copy

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn.train import StopTraining, tbptt, window_slices, windowed_forward


def model64(seed=0, kind="lstm"):
    cell = fr.LSTM(2, 4, dtype=np.float64, seed=seed) if kind == "lstm" else \
        fr.RNN(2, 4, dtype=np.float64, seed=seed)
    return fr.Sequential(cell, fr.Linear(4, 1, dtype=np.float64, seed=seed + 1))


def data(T=23, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, 2)), rng.standard_normal((T, B, 1))


def test_window_slices():
    assert window_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert window_slices(3, 8) == [slice(0, 3)]
    with pytest.raises(ValueError):
        window_slices(5, 0)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("K", [1, 5, 23, 50])
def test_windowed_forward_equals_one_call(kind, K):
    model = model64(kind=kind)
    x, _ = data()
    y, st = model.forward(x, training=False)
    yw, stw = windowed_forward(model, x, K)
    np.testing.assert_allclose(yw, y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stw[0].s, st[0].s, rtol=1e-12, atol=1e-14)
    # a single layer works the same way
    yl, _ = model[0].forward(x, training=False)
    np.testing.assert_allclose(windowed_forward(model[0], x, K)[0], yl, rtol=1e-12, atol=1e-14)


def test_tbptt_windows_see_the_carried_state_but_no_gradient():
    K = 5
    model = model64()
    ref = copy.deepcopy(model)
    x, t = data()
    hist, st = tbptt(model, x, t, fr.mse_loss, window=K, optimizer=None, progress=False)
    # the forward of each window is the corresponding slice of one whole forward
    y, st_whole = ref.forward(x, training=False)
    slices = window_slices(len(x), K)
    expected = [fr.mse_loss(y[sl], t[sl])[0] for sl in slices]
    np.testing.assert_allclose(hist.loss, expected, rtol=1e-12)
    np.testing.assert_allclose(st[0].s, st_whole[0].s, rtol=1e-12)
    # the gradients left in the model are those of the last window alone, started
    # from the carried state, with no gradient into that state (truncation)
    _, st_before_last = ref.forward(x[:slices[-1].start], training=False)
    ref.zero_grad()
    y_last, _ = ref.forward(x[slices[-1]], state=st_before_last)
    ref.backward(fr.mse_loss(y_last, t[slices[-1]])[1])
    for k in ref.grads:
        np.testing.assert_allclose(model.grads[k], ref.grads[k], rtol=1e-12, atol=1e-15)
    # and they differ from full BPTT over the whole sequence
    full = copy.deepcopy(ref)
    full.zero_grad()
    yf, _ = full.forward(x)
    dy = np.zeros_like(yf)
    dy[slices[-1]] = fr.mse_loss(yf[slices[-1]], t[slices[-1]])[1]
    full.backward(dy)
    assert not np.allclose(full.grads["0.W_x"], ref.grads["0.W_x"])
    assert len(hist) == len(slices) and hist.epoch == [0] * len(slices)


def test_reset_state_starts_every_window_from_zero():
    K = 6
    model = model64()
    x, t = data()
    hist, _ = tbptt(model, x, t, fr.mse_loss, window=K, reset_state=True, progress=False)
    for sl, loss in zip(window_slices(len(x), K), hist.loss):
        y, _ = model.forward(x[sl], training=False)
        assert loss == pytest.approx(fr.mse_loss(y, t[sl])[0], rel=1e-12)
    yr, _ = windowed_forward(model, x, K, reset_state=True)
    y, _ = model.forward(x, training=False)
    np.testing.assert_allclose(yr[:K], y[:K], rtol=1e-12)
    assert not np.allclose(yr[K:], y[K:])


def test_training_reduces_loss_with_target_tuple_and_epochs():
    rng = np.random.default_rng(1)
    T, B = 200, 8
    x = rng.choice([-1.0, 1.0], size=(T, B, 2))
    target = np.zeros((T, B, 1))
    target[2:, :, 0] = x[:-2, :, 0]                      # recall from 2 steps back
    mask = np.ones((T, B), bool)
    mask[:2] = False                                       # nothing to recall yet
    model = model64()
    opt = fr.optim.Adam(model, lr=0.03)
    hist, _ = tbptt(model, x, (target, mask), fr.mse_loss, window=20, optimizer=opt,
                    epochs=15, clip_norm=1.0, progress=False)
    ep = hist.epoch_loss()
    assert len(ep) == 15 and ep[-1] < 0.5 * ep[0]
    assert max(hist.grad_norm) > 0


def test_callback_metrics_and_stop():
    model = model64()
    x, t = data()
    seen = []

    def cb(info):
        seen.append((info["epoch"], info["window"], info["step"]))
        if info["step"] == 6:
            raise StopTraining
        return {"double": 2 * info["loss"]} if info["window"] == 0 else None

    hist, _ = tbptt(model, x, t, fr.mse_loss, window=10, epochs=5,
                    optimizer=fr.optim.SGD(model, lr=0.01), callback=cb, progress=False)
    assert seen[:4] == [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3)]
    assert len(hist) == 7 and hist.epoch[-1] == 2
    assert [m["step"] for m in hist.metrics] == [0, 3]     # step 6 raised instead
    assert hist.metrics[0]["double"] == pytest.approx(2 * hist.loss[0])
    hist2, _ = tbptt(model, x, t, fr.mse_loss, window=10, progress=False, history=hist)
    assert hist2 is hist and len(hist) == 10


def test_progress_bar_shows_running_loss(capsys):
    model = model64()
    x, t = data()
    tbptt(model, x, t, fr.mse_loss, window=8, progress=True, desc="unit")
    err = capsys.readouterr().err
    assert "unit" in err and "loss=" in err and "3/3" in err


def test_errors():
    model = model64()
    x, t = data()
    with pytest.raises(ValueError, match="steps"):
        tbptt(model, x, t[:-1], fr.mse_loss, window=4, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        tbptt(model, x, t, fr.mse_loss, window=4, epochs=0, progress=False)


def run_once(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60, 4, 3)).astype(np.float32)
    t = rng.integers(0, 5, (60, 4))
    model = fr.Sequential(fr.LSTM(3, 8, seed=seed), fr.RNN(8, 6, seed=seed + 1),
                          fr.Linear(6, 5, seed=seed + 2))
    opt = fr.optim.Adam(model, lr=0.01, weight_decay=1e-4)
    hist, _ = tbptt(model, x, t, fr.cross_entropy, window=7, optimizer=opt, epochs=3,
                    clip_norm=0.5, progress=False)
    return model, hist


def test_seed_reproduces_initialisation_and_training():
    m1, h1 = run_once(11)
    m2, h2 = run_once(11)
    m3, h3 = run_once(12)
    assert h1.loss == h2.loss and h1.grad_norm == h2.grad_norm
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k])
    assert h1.loss != h3.loss
    for cls, args in ((fr.LSTM, (3, 5)), (fr.RNN, (3, 5)), (fr.Linear, (3, 5))):
        a, b = cls(*args, seed=4), cls(*args, seed=4)
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("context", [(2, 0), (0, 3), (2, 3)])
@pytest.mark.parametrize("K", [1, 4, 9, 23])
def test_windows_stream_a_context_window(context, K):
    """A first LSTM with an input context window sees the same frames in every
    window as in one call: past frames ride in the state, the look-ahead frames
    are passed as x_future (zeros after the end)."""
    model = fr.Sequential(fr.LSTM(2, 4, context=context, dtype=np.float64, seed=0),
                          fr.Linear(4, 1, dtype=np.float64, seed=1))
    x, t = data()
    y, _ = model.forward(x, training=False)
    yw, _ = windowed_forward(model, x, K)
    np.testing.assert_allclose(yw, y, rtol=1e-12, atol=1e-14)
    hist, _ = tbptt(model, x, t, fr.mse_loss, window=K, progress=False)
    expected = [fr.mse_loss(y[sl], t[sl])[0] for sl in window_slices(len(x), K)]
    np.testing.assert_allclose(hist.loss, expected, rtol=1e-12)
    # a bare layer too, with a one-hot style encode
    layer = fr.LSTM(3, 4, context=context, dtype=np.float64, seed=2)
    ids = np.random.default_rng(3).integers(0, 3, (23, 2))
    enc = lambda i: np.eye(3)[i]                                  # noqa: E731
    np.testing.assert_allclose(windowed_forward(layer, ids, K, encode=enc)[0],
                               layer.forward(enc(ids), training=False)[0], rtol=1e-12, atol=1e-14)
