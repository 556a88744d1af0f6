"""Smoke test of an installed fusedrnn (a wheel): a forward and backward of the
augmented LSTM and of the canonical RNN with state feedback against the NumPy
oracle, float64. Needs only numpy (and scipy for the BLAS GEMM). Run it from a
directory outside the source tree, so that the installed package is imported:

    cd /tmp && python /path/to/tests/wheel_smoke.py

(cibuildwheel's test-command and tests/test_wheel.py do exactly that.)"""
import sys

import numpy as np

import fusedrnn as fr
from fusedrnn import reference as ref


def _suffix(l, d):
    return ("" if l == 0 else f"_l{l}") + ("_reverse" if d else "")


def _cells(layer):
    """The per-cell parameter dicts (base names) in the oracle's order l * D + d."""
    cells = []
    for l in range(layer.num_layers):
        for d in range(layer.num_directions):
            sfx = _suffix(l, d)
            cells.append({k: v for k, v in ((k[:len(k) - len(sfx)] if sfx else k, v)
                                            for k, v in layer.params.items()
                                            if _suffix_of(k) == sfx)})
    return cells


def _suffix_of(key):
    rev = key.endswith("_reverse")
    base = key[:-len("_reverse")] if rev else key
    head, sep, tail = base.rpartition("_l")
    layer = tail if sep and tail.isdigit() else None
    return (f"_l{layer}" if layer else "") + ("_reverse" if rev else "")


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def check(layer, net_fwd, net_bwd, options, T=7, B=3):
    rng = np.random.default_rng(0)
    LD = layer.num_layers * layer.num_directions
    x = rng.standard_normal((T, B, layer.input_size))
    s0 = 0.5 * rng.standard_normal((LD, B, layer.hidden_size))
    o0 = 0.5 * rng.standard_normal((LD, B, layer.output_size))
    lengths = np.array([T, 4, 1][:B])
    dy = rng.standard_normal((T, B, layer.num_directions * layer.output_size))
    dy *= (np.arange(T)[:, None] < lengths[None, :])[:, :, None]
    layer.zero_grad()
    y, st = layer.forward(x, state=layer.State(s0, o0), lengths=lengths)
    dx, dst = layer.backward(dy)
    cells = _cells(layer)
    y_r, s_r, o_r, cache = net_fwd(x, cells, s0, o0, bidirectional=layer.bidirectional,
                                   lengths=lengths, **options)
    dx_r, ds0_r, do0_r, grads_r = net_bwd(dy, None, None, cache)
    errs = {"y": _rel(y, y_r), "s_T": _rel(st[0], s_r), "o_T": _rel(st[1], o_r),
            "dx": _rel(dx, dx_r), "ds0": _rel(dst[0], ds0_r), "do0": _rel(dst[1], do0_r)}
    for i, g in enumerate(grads_r):
        l, d = divmod(i, layer.num_directions)
        sfx = _suffix(l, d)
        for k, v in g.items():
            errs[k + sfx] = _rel(layer.grads[k + sfx], v)
    bad = {k: e for k, e in errs.items() if not e <= 1e-9}
    assert not bad, f"{layer!r}: relative errors {bad}"
    return len(errs)


def main():
    print(f"fusedrnn {fr.__version__} from {fr.__file__} (GEMM: {fr.get_gemm()})")
    lstm = fr.LSTM(4, 5, peepholes="diagonal", proj_size=3, context=(1, 1), coupled_gates=True,
                   cell_clip=2.0, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    n = check(lstm, ref.lstm_network_forward, ref.lstm_network_backward,
              dict(context=(1, 1), coupled_gates=True, cell_clip=2.0))
    rnn = fr.RNN(4, 5, state_feedback=True, num_layers=2, bidirectional=True, dtype=np.float64,
                 seed=1)
    n += check(rnn, ref.rnn_network_forward, ref.rnn_network_backward, {})
    for backend in ("portable", "blas"):
        fr.set_gemm(backend)
        n += check(lstm, ref.lstm_network_forward, ref.lstm_network_backward,
                   dict(context=(1, 1), coupled_gates=True, cell_clip=2.0))
    print(f"wheel smoke test: {n} arrays match the oracle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
