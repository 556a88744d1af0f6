"""Inference calls keep their cells' packed weights (core/_layer.py `_kept_pack`): the
outputs equal those of a call that packs for itself bit for bit, and the oracle's;
every way a parameter can change (a write through it, a new array in `params`, an
optimiser step, loaded values, a write into an untracked array) changes the next
output to the oracle's new value; training after kept packs is unchanged; threads
share one layer."""
import threading

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import reference
from fusedrnn.core import _layer
from fusedrnn.core._tracked import untrack

T, B, I, H = 11, 3, 5, 9


def _cells(layer):
    D = layer.num_directions
    return [layer._cell_dict(layer.params, l, d) for l in range(layer.num_layers) for d in range(D)]


def _oracle(layer, x, lengths=None):
    """The layer's inference output by fusedrnn.reference (time-major x)."""
    cells = [{k: np.asarray(v, np.float64) for k, v in c.items()} for c in _cells(layer)]
    x = np.asarray(x, np.float64)
    if isinstance(layer, fr.GRU):
        return reference.gru_network_forward(x, cells, linear_before_reset=layer.linear_before_reset,
                                             bidirectional=layer.bidirectional, lengths=lengths)[0]
    if isinstance(layer, fr.RNN):
        return reference.rnn_network_forward(x, cells, bidirectional=layer.bidirectional,
                                             lengths=lengths)[0]
    opts = dict(coupled_gates=layer.coupled_gates, cell_clip=layer.cell_clip)
    return reference.lstm_network_forward(x, cells, bidirectional=layer.bidirectional,
                                          lengths=lengths, **opts)[0]


def _uncached(layer, x, **kw):
    """forward(training=False) with no packed weights kept (the call packs for itself)."""
    keep = _layer.PACKED_MAX_ROWS
    _layer.PACKED_MAX_ROWS = 0
    try:
        return layer.forward(x, training=False, **kw)
    finally:
        _layer.PACKED_MAX_ROWS = keep


def _tol(dtype):
    return 2e-4 if dtype == np.float32 else 1e-10


LAYERS = {
    "lstm": lambda dt: fr.LSTM(I, H, dtype=dt, seed=1),
    "lstm-proj-coupled": lambda dt: fr.LSTM(I, H, proj_size=4, coupled_gates=True, cell_clip=0.7,
                                            dtype=dt, seed=2),
    "lstm-nopeep-bidir-2": lambda dt: fr.LSTM(I, H, peepholes=False, num_layers=2,
                                              bidirectional=True, dtype=dt, seed=3),
    "lstm-full-peep": lambda dt: fr.LSTM(I, H, peepholes="full", dtype=dt, seed=4),
    "gru": lambda dt: fr.GRU(I, H, dtype=dt, seed=5),
    "gru-original-bidir-2": lambda dt: fr.GRU(I, H, linear_before_reset=False, num_layers=2,
                                              bidirectional=True, dtype=dt, seed=6),
    "gru-reverse-batch-first": lambda dt: fr.GRU(I, H, reverse=True, batch_first=True, dtype=dt,
                                                 seed=7),
    "rnn-2": lambda dt: fr.RNN(I, H, num_layers=2, dtype=dt, seed=8),
    "rnn-feedback-bidir": lambda dt: fr.RNN(I, H, state_feedback=True, bidirectional=True,
                                            dtype=dt, seed=10),
}


def _x(layer, seed=0):
    x = np.random.default_rng(seed).standard_normal((T, B, I)).astype(layer.dtype)
    return (x.transpose(1, 0, 2).copy() if layer.batch_first else x), x


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("lengths", [None, np.array([T, 4, 0])], ids=["full", "lengths"])
def test_kept_packs_equal_an_uncached_call_and_the_oracle(name, dtype, lengths):
    layer = LAYERS[name](dtype)
    x, xt = _x(layer)
    want, st_want = _uncached(layer, x, lengths=lengths)
    for _ in range(3):  # the first call packs and keeps, the next ones reuse
        y, st = layer.forward(x, training=False, lengths=lengths)
        np.testing.assert_array_equal(y, want)
        for a, b in zip(st, st_want):
            np.testing.assert_array_equal(a, b)
    takes_packs = "full" not in name
    assert bool(layer._packs) == takes_packs
    y_t = y.transpose(1, 0, 2) if layer.batch_first else y
    if layer.reverse:
        return  # the oracle has no reverse=True network; the bit-equality above covers it
    np.testing.assert_allclose(y_t, _oracle(layer, xt, lengths), rtol=_tol(dtype), atol=_tol(dtype))


def test_lstm_context_windows_keep_their_packs():
    layer = fr.LSTM(I, H, context=(2, 1), seed=9)
    x, _ = _x(layer)
    want, _ = _uncached(layer, x)
    for _ in range(2):
        np.testing.assert_array_equal(layer.forward(x, training=False)[0], want)
    assert layer._packs


def _changes(layer):
    """(name, change) pairs: each changes W_x (or every parameter) of the first cell."""
    rng = np.random.default_rng(11)

    def in_place(p):
        p["W_x"][...] = rng.standard_normal(p["W_x"].shape)

    def item(p):
        p["W_x"][0, 1] += 0.5

    def inplace_op(p):
        p["W_x"] *= 1.5

    def assign(p):
        p["W_x"] = rng.standard_normal(p["W_x"].shape).astype(layer.dtype)

    def assign_tracked(p):
        other = type(layer)(I, H, seed=99, dtype=layer.dtype)
        p["W_x"] = other.params["W_x"]

    def optimizer(p):
        for g in layer.grads.values():
            g[...] = rng.standard_normal(g.shape)
        fr.optim.SGD(layer, lr=0.1).step()

    def loaded(p):
        other = type(layer)(I, H, seed=123, dtype=layer.dtype)
        for k in p:
            p[k][...] = other.params[k]

    return [("in_place", in_place), ("item", item), ("inplace_op", inplace_op),
            ("assign", assign), ("assign_tracked", assign_tracked), ("optimizer", optimizer),
            ("loaded", loaded)]


@pytest.mark.parametrize("cls", [fr.LSTM, fr.GRU, fr.RNN], ids=["lstm", "gru", "rnn"])
@pytest.mark.parametrize("which", range(7))
def test_each_change_of_a_parameter_reaches_the_next_inference(cls, which):
    layer = cls(I, H, seed=1)
    x, _ = _x(layer)
    before, _ = layer.forward(x, training=False)
    layer.forward(x, training=False)
    assert layer._packs
    _, change = _changes(layer)[which]
    change(layer.params)
    y, _ = layer.forward(x, training=False)
    assert not np.array_equal(y, before)
    np.testing.assert_array_equal(y, _uncached(layer, x)[0])
    np.testing.assert_allclose(y, _oracle(layer, x), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("cls", [fr.LSTM, fr.GRU], ids=["lstm", "gru"])
def test_a_write_into_an_untracked_array_is_seen(cls):
    layer = cls(I, H, seed=1)
    x, _ = _x(layer)
    plain = untrack(layer.params["W_x"])  # writes into it are not counted from now on
    layer.forward(x, training=False)
    before, _ = layer.forward(x, training=False)
    plain[0, :] += 1.0
    y, _ = layer.forward(x, training=False)
    assert not np.array_equal(y, before)
    np.testing.assert_array_equal(y, _uncached(layer, x)[0])
    np.testing.assert_allclose(y, _oracle(layer, x), rtol=2e-4, atol=2e-4)
    # a plain array stored in params, written in place
    w = np.array(layer.params["W_h" if cls is fr.GRU else "W_v"])
    layer.params["W_h" if cls is fr.GRU else "W_v"] = w
    layer.forward(x, training=False)
    w *= 0.5
    np.testing.assert_array_equal(layer.forward(x, training=False)[0], _uncached(layer, x)[0])


@pytest.mark.parametrize("cls", [fr.LSTM, fr.GRU], ids=["lstm", "gru"])
def test_checkpoints_and_copies_compute_the_same(cls, tmp_path):
    import copy
    layer = cls(I, H, seed=1)
    x, _ = _x(layer)
    want, _ = layer.forward(x, training=False)
    fr.save(tmp_path / "m.npz", layer)
    for other in (fr.load(tmp_path / "m.npz"), copy.deepcopy(layer)):
        assert not other._packs
        for _ in range(2):
            np.testing.assert_array_equal(other.forward(x, training=False)[0], want)
    # values loaded into this layer's arrays change its next output
    src = cls(I, H, seed=5)
    fr.save(tmp_path / "n.npz", src)
    loaded = fr.load(tmp_path / "n.npz")
    for k, p in layer.params.items():
        p[...] = loaded.params[k]
    np.testing.assert_array_equal(layer.forward(x, training=False)[0],
                                  src.forward(x, training=False)[0])


@pytest.mark.parametrize("cls", [fr.LSTM, fr.GRU], ids=["lstm", "gru"])
def test_training_after_kept_packs_is_unchanged(cls):
    fresh, layer = cls(I, H, seed=1, dtype=np.float64), cls(I, H, seed=1, dtype=np.float64)
    x, _ = _x(layer)
    dy = np.random.default_rng(3).standard_normal((T, B, H))
    layer.forward(x, training=False)
    layer.forward(x, training=False)
    out = []
    for m in (fresh, layer):
        y, _ = m.forward(x)
        dx, _ = m.backward(dy)
        out.append((np.array(y), dx, {k: g.copy() for k, g in m.grads.items()}))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    for k in out[0][2]:
        np.testing.assert_array_equal(out[0][2][k], out[1][2][k])


@pytest.mark.parametrize("cls", [fr.LSTM, fr.GRU], ids=["lstm", "gru"])
def test_threads_share_the_kept_packs(cls):
    layer = cls(I, H, seed=1, bidirectional=True)
    xs = [np.random.default_rng(s).standard_normal((T, B, I)).astype(np.float32) for s in range(4)]
    want = [_uncached(layer, x)[0] for x in xs]
    errors = []

    def run(k):
        try:
            for _ in range(30):
                y, _ = layer.forward(xs[k], training=False)
                if not np.array_equal(y, want[k]):
                    errors.append(k)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
