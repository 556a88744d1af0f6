"""Kernel workspaces are kept between calls of a layer (fusedrnn.core._scratch):
the kept buffers are handed out again, and whatever they hold (here NaN) never
reaches a result: the kernel writes its workspace before it reads it. The
buffers start on cache lines, and the kernel gives the same bits when they do
not (it aligns its packed-weight regions itself)."""
import numpy as np
import pytest

import fusedrnn as fr
import fusedrnn.core._layer
from fusedrnn.core._scratch import ALIGN, MAX_KEPT, ScratchPool, aligned_empty


def test_pool_reuses_the_smallest_fitting_buffer_and_bounds_what_it_keeps():
    pool = ScratchPool(np.float32)
    a, b = pool.take(100), pool.take(50)
    pool.give(a)
    pool.give(b)
    got = pool.take(40)
    assert got.shape == (40,) and np.shares_memory(got, b)
    assert np.shares_memory(pool.take(90), a)
    for n in range(MAX_KEPT + 3):
        pool.give(np.empty(10 + n, np.float32))
    assert len(pool._kept) == MAX_KEPT
    assert [k.shape[0] for k in sorted(pool._kept, key=len)] == \
        [10 + n for n in range(3, MAX_KEPT + 3)]  # the largest stay
    pool.give(np.empty(5, np.float64))  # another dtype is not kept
    assert all(k.dtype == np.float32 for k in pool._kept)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("opts", [dict(peepholes="diagonal"),
                                  dict(proj_size=5, accumulation_clip=2.0, bidirectional=True)])
def test_poisoned_workspaces_do_not_change_results(dtype, opts):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 6)).astype(dtype)
    lengths = np.array([9, 4, 0])

    def step(layer):
        layer.zero_grad()
        y, st = layer.forward(x, lengths=lengths)
        dx, dst = layer.backward(np.ones_like(y))
        y_inf, _ = layer.forward(x, training=False, lengths=lengths)
        return [np.array(y), dx, y_inf, np.array(dst[0])] + \
            [g.copy() for g in layer.grads.values()]

    fresh = step(fr.LSTM(6, 11, dtype=dtype, seed=1, **opts))
    layer = fr.LSTM(6, 11, dtype=dtype, seed=1, **opts)
    step(layer)
    assert layer._scratch._kept, "the layer keeps its workspaces"
    for buf in layer._scratch._kept:
        buf[...] = np.nan
    for got, want in zip(step(layer), fresh):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_buffers_start_on_a_cache_line(dtype):
    for n in (1, 7, 1000, 300_001):
        a = aligned_empty(n, dtype)
        assert a.shape == (n,) and a.dtype == dtype and a.ctypes.data % ALIGN == 0
    pool = ScratchPool(dtype)
    raw = np.empty(5000, dtype)[1:]  # a kept buffer that starts off a line
    pool.give(raw)
    got = pool.take(4000)
    assert got.ctypes.data % ALIGN == 0 and np.shares_memory(got, raw)
    assert pool.take(5000).ctypes.data % ALIGN == 0  # too large for what is kept: new


def _on_line_shifted(n, dtype):
    a = np.empty(n + 16, dtype)
    off = (-a.ctypes.data % ALIGN) // a.itemsize + 1  # one element past a line
    return a[off:off + n]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_workspaces_off_cache_lines_give_the_same_bits(dtype, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 3, 40)).astype(dtype)

    def step():
        layer = fr.LSTM(40, 70, dtype=dtype, seed=2, peepholes="diagonal")
        y, _ = layer.forward(x)
        dx, _ = layer.backward(np.ones_like(y))
        y_inf, _ = layer.forward(x, training=False)
        return [np.array(y), dx, y_inf] + [g.copy() for g in layer.grads.values()]

    aligned = step()
    monkeypatch.setattr(ScratchPool, "take", lambda self, n: _on_line_shifted(n, self.dtype))
    monkeypatch.setattr(fusedrnn.core._layer, "aligned_empty", _on_line_shifted)
    for got, want in zip(step(), aligned):
        np.testing.assert_array_equal(got, want)
