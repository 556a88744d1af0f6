"""_kernel.PackedWeights: a cell's forward weights packed once for the
micro-kernel; a stream of T = 1 forward calls that pass them (no packing, a
caller-owned workspace) computes the whole sequence's forward bit for bit, for
every option the micro-kernel serves, and bad pairings are refused."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _kernel, _tuning
from fusedrnn.core.lstm import _PEEP_CODES


def _stream(layer, x, packed):
    """The cell's forward one step at a time, the state carried, one workspace."""
    T, B, I = x.shape
    H, R, dt = layer.hidden_size, layer.output_size, layer.dtype
    p = {k: v.reshape(-1) for k, v in layer.params.items()}
    cfg = _kernel.LSTMConfig(1, B, I, H, layer.proj_size, _PEEP_CODES[layer.peepholes],
                             layer.coupled_gates, False, layer.cell_clip or 0.0,
                             layer.accumulation_clip or 0.0)
    pw = _kernel.PackedWeights(cfg, W_x=p["W_x"], W_v=p["W_v"], W_qv=p.get("W_qv")) \
        if packed else None
    work = np.empty(cfg.sizes()[2], dt)
    s, v = np.zeros(B * H, dt), np.zeros(B * R, dt)
    ys = np.empty((T, B, R), dt)
    for t in range(T):
        s_T, y_T = np.empty(B * H, dt), np.empty(B * R, dt)
        _kernel.lstm_forward(cfg, y_seq=ys[t].reshape(-1), s_T=s_T, y_T=y_T, acts=None, work=work,
                             x=np.ascontiguousarray(x[t]).reshape(-1), s0=s, y0=v, W_x=p["W_x"],
                             W_v=p["W_v"], b=p["b"], W_s=p.get("w_s"), W_qv=p.get("W_qv"),
                             packed=pw)
        s, v = s_T, y_T
    return ys, s.reshape(B, H), v.reshape(B, R)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("opts", [dict(peepholes=False), dict(peepholes="diagonal", proj_size=7),
                                  dict(peepholes="diagonal", coupled_gates=True, cell_clip=0.5,
                                       accumulation_clip=1.5)], ids=range(3))
def test_stream_of_packed_steps_equals_the_sequence(opts, dtype):
    layer = fr.LSTM(21, 40, dtype=dtype, seed=3, **opts)
    x = np.random.default_rng(0).standard_normal((12, 5, 21)).astype(dtype)
    with _tuning.override(packed_max_rows=1 << 30, team_min_steps=8):  # T = 12: micro-kernel
        y, st = layer.forward(x, training=False)
        ys, s, v = _stream(layer, x, packed=True)
    np.testing.assert_array_equal(ys, y)
    np.testing.assert_array_equal(s, st.s[0])
    np.testing.assert_array_equal(v, st.v[0])
    # and without the pack, T = 1 takes the BLAS: the same numbers to rounding
    ys2, _, _ = _stream(layer, x, packed=False)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(ys2, y, rtol=tol, atol=tol)


def test_packed_weights_are_refused_for_another_cell():
    layer = fr.LSTM(6, 8, seed=0)
    p = {k: v.reshape(-1) for k, v in layer.params.items()}
    cfg = _kernel.LSTMConfig(1, 2, 6, 8, 0, 1)
    pw = _kernel.PackedWeights(cfg, W_x=p["W_x"], W_v=p["W_v"])
    other = _kernel.LSTMConfig(1, 2, 6, 9, 0, 1)
    z = lambda n, dt=np.float32: np.zeros(n, dt)
    with pytest.raises(ValueError, match="packed: made for I, H, P = 6, 8, 0"):
        _kernel.lstm_forward(other, y_seq=z(18), s_T=z(18), y_T=z(18), acts=None,
                             work=z(other.sizes()[2]), x=z(12), s0=z(18), y0=z(18),
                             W_x=z(4 * 9 * 6), W_v=z(4 * 9 * 9), b=z(36), W_s=z(27), W_qv=None,
                             packed=pw)
    with pytest.raises((TypeError, ValueError)):  # float64 buffers with float32 panels
        _kernel.lstm_forward(cfg, y_seq=z(16, np.float64), s_T=z(16, np.float64),
                             y_T=z(16, np.float64), acts=None,
                             work=z(cfg.sizes()[2], np.float64), x=z(12, np.float64),
                             s0=z(16, np.float64), y0=z(16, np.float64),
                             W_x=p["W_x"].astype(np.float64), W_v=p["W_v"].astype(np.float64),
                             b=p["b"].astype(np.float64), W_s=p["w_s"].astype(np.float64),
                             W_qv=None, packed=pw)
    full = _kernel.LSTMConfig(1, 2, 6, 8, 0, 2)
    with pytest.raises(ValueError, match="full peepholes"):
        _kernel.PackedWeights(full, W_x=p["W_x"], W_v=p["W_v"])
    with pytest.raises(ValueError, match="W_v"):
        _kernel.PackedWeights(cfg, W_x=p["W_x"], W_v=p["W_v"][:-1])


CELLS = {  # layer, its packed weights' class and names, the kernel forward's sequence names
    "gru": (lambda dt: fr.GRU(21, 45, dtype=dt, seed=3), "GRUPackedWeights", ("W_x", "W_h")),
    "gru-original": (lambda dt: fr.GRU(21, 45, linear_before_reset=False, dtype=dt, seed=3),
                     "GRUPackedWeights", ("W_x", "W_h")),
    "rnn": (lambda dt: fr.RNN(21, 45, dtype=dt, seed=3), "RNNPackedWeights", ("W_x", "W_r")),
    "rnn-feedback": (lambda dt: fr.RNN(21, 45, state_feedback=True, dtype=dt, seed=3),
                     "RNNPackedWeights", ("W_x", "W_r", "W_s")),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gru_and_rnn_packed_weights_equal_the_call_that_packs(cell, dtype):
    """_kernel.GRUPackedWeights / RNNPackedWeights: a forward on panels packed once equals
    the call that packs its own (H = 45: a partial panel), bit for bit, and a pack for
    another I, H is refused."""
    make, kind, names = CELLS[cell]
    layer = make(dtype)
    x = np.random.default_rng(0).standard_normal((12, 5, 21)).astype(dtype)
    p = layer._cell_dict(layer.params, 0, 0)
    cfg = layer._cell_config(12, 5, 21, None, False)
    pw = getattr(_kernel, kind)(cfg, **{n: p[n].reshape(-1) for n in names})

    def run(lay, c, packed):
        H = lay.hidden_size
        y, s, o = np.empty((12, 5, H), dtype), np.empty((5, H), dtype), np.empty((5, H), dtype)
        z = np.zeros((5, H), dtype)
        work = np.empty(c.sizes()[2], dtype)
        lay._kernel_forward(c, y, s, o, None, work, x, z, z, lay._cell_dict(lay.params, 0, 0),
                            packed)
        return y

    with _tuning.override(packed_max_rows=1 << 30, team_min_steps=8):
        assert _kernel.packs_weights(12, 5) and not _kernel.packs_weights(7, 5)
        np.testing.assert_array_equal(run(layer, cfg, pw), run(layer, cfg, None))
        other = make(dtype).__class__(21, 44, dtype=dtype)
        with pytest.raises(ValueError, match="packed: made for I, H"):
            run(other, other._cell_config(12, 5, 21, None, False), pw)
    with pytest.raises(ValueError, match=names[1]):
        getattr(_kernel, kind)(cfg, **{n: p[n].reshape(-1)[:-1] if n == names[1]
                                       else p[n].reshape(-1) for n in names})
