"""The reduced-precision arithmetic of the NumPy oracle (fusedrnn.reference, §7) against
independent computations: PyTorch's bfloat16 conversion, the definitions written out
element by element, exact rational arithmetic for the bounds."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from fusedrnn import reference as ref


def _bits(x) -> np.ndarray:
    return np.asarray(x, np.float32).view(np.uint32)


def test_bf16_bits_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    u = rng.integers(0, 2 ** 32, size=200_000, dtype=np.uint64).astype(np.uint32)
    u[1::4] = (u[1::4] & 0xFFFF0000) | 0x8000           # exact ties
    u[2::4] = (u[2::4] & 0x807FFFFF) | (127 << 23)     # near 1
    x = u.view(np.float32)
    normal = np.isfinite(x) & (np.abs(x) >= 2.0 ** -126)
    got = ref.bf16_bits(x)
    want = torch.from_numpy(x[normal].copy()).to(torch.bfloat16).view(torch.int16).numpy()
    np.testing.assert_array_equal(got[normal], want.view(np.uint16))
    # below 2^-126: a signed zero (torch keeps bf16 denormals; the kernels do not)
    tiny = np.array([1e-39, -1e-40, 2.0 ** -127, -(2.0 ** -126) * 0.99], np.float32)
    np.testing.assert_array_equal(ref.bf16_bits(tiny), [0, 0x8000, 0, 0x8000])
    special = np.array([np.inf, -np.inf, np.nan, 3.4028235e38, 2.0 ** -126], np.float32)
    b = ref.bf16_bits(special)
    assert b[0] == 0x7F80 and b[1] == 0xFF80 and b[3] == 0x7F80 and b[4] == 0x0080
    assert np.isnan(ref.bf16_value(b[2:3]))[0]
    # round trip: bf16 values are kept exactly
    v = ref.bf16_round(x[normal])
    np.testing.assert_array_equal(ref.bf16_round(v), v)
    fin = np.isfinite(v)                                # beyond 0x7F7F8000 rounds to inf
    assert np.all(np.abs(x[normal][~fin]) >= np.float32(3.3895e38))
    rel = np.abs(v[fin].astype(np.float64) - x[normal][fin]) / np.abs(x[normal][fin].astype(np.float64))
    assert rel.max() <= 2.0 ** -8                        # half a unit of 7 fraction bits


def _quantize_row_written_out(x):
    """The scheme of docs/equations.md §7, one element at a time."""
    x = [np.float32(v) for v in x]
    if not all(np.isfinite(v) for v in x):
        return [0] * len(x), np.float32(np.nan)
    amax = max(abs(v) for v in x)
    if amax < np.float32(2.0 ** -120):
        return [0] * len(x), np.float32(0)
    inv = np.float32(127) / amax
    q = []
    for v in x:
        t = np.float32(v * inv)
        t = min(max(t, np.float32(-127)), np.float32(127))
        q.append(int(np.rint(t)))
    return q, np.float32(amax / np.float32(127))


def test_quantize_int8_against_definition():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((12, 41)) * rng.uniform(0.01, 100, (12, 1))).astype(np.float32)
    X[1] = 0
    X[2] = 1e-37
    X[3, 4] = np.nan
    X[4, 0] = -np.inf
    X[5] = np.linspace(-2.54, 2.54, 41, dtype=np.float32)
    X[6, 7] = 1e30
    q, s = ref.quantize_int8(X)
    assert q.dtype == np.int8 and s.dtype == np.float32
    for r in range(X.shape[0]):
        qw, sw = _quantize_row_written_out(X[r])
        assert list(q[r]) == qw, r
        assert (np.isnan(sw) and np.isnan(s[r])) or sw == s[r], r
        if np.isfinite(s[r]) and s[r] > 0:
            assert np.abs(q[r]).max() == 127
            err = np.abs(X[r].astype(np.float64) - q[r] * np.float64(s[r]))
            assert err.max() <= 0.5001 * s[r]
    assert s[1] == 0 and s[2] == 0 and np.isnan(s[3]) and np.isnan(s[4])
    assert np.abs(q).max() <= 127


def test_matmul_int8_exact_integers():
    rng = np.random.default_rng(2)
    M, N, K = 5, 7, 33
    A = rng.uniform(-2, 2, (M, K)).astype(np.float32)
    W = rng.uniform(-0.5, 0.5, (N, K)).astype(np.float32)
    W_q, w_s = ref.quantize_int8(W)
    C = ref.matmul_int8(A, W_q, w_s)
    a_q, a_s = ref.quantize_int8(A)
    for m in range(M):
        for n in range(N):
            acc = sum(int(a_q[m, k]) * int(W_q[n, k]) for k in range(K))
            assert C[m, n] == np.float32(acc) * np.float32(a_s[m] * w_s[n])
    # and it approximates the float32 product (each operand within half its step)
    bound = (np.abs(A) @ (0.5 * w_s[:, None] * np.ones((N, K))).T
             + (0.5 * a_s[:, None] * np.ones((M, K))) @ np.abs(W).T
             + K * 0.25 * a_s[:, None] * w_s[None, :])
    assert np.all(np.abs(C - A @ W.T) <= 1.001 * bound + 1e-6)


def test_matmul_int8_extremes_fit_int32():
    K = 65536
    A = np.ones((1, K), np.float32)
    W_q = np.full((2, K), 127, np.int8)
    W_q[1] = -127
    C = ref.matmul_int8(A, W_q, np.ones(2, np.float32))
    assert C[0, 0] == np.float32(127 * 127 * K) * np.float32(np.float32(1) / np.float32(127))
    assert C[0, 1] == -C[0, 0]


def test_matmul_bf16_k_order_and_bound():
    rng = np.random.default_rng(3)
    M, N, K = 3, 6, 129
    A = rng.uniform(-2, 2, (M, K)).astype(np.float32)
    W_bits = ref.bf16_bits(rng.uniform(-1, 1, (N, K)).astype(np.float32))
    C = ref.matmul_bf16(A, W_bits)
    a = ref.bf16_round(A)
    w = ref.bf16_value(W_bits)
    exact = ref.matmul_bf16_exact(A, W_bits)
    bound = ref.matmul_bf16_bound(A, W_bits)
    for m in range(M):
        for n in range(N):
            acc = np.float32(0)
            for k in range(K):
                acc = np.float32(acc + np.float32(a[m, k] * w[n, k]))
            assert C[m, n] == acc
            # the exact sum, in rationals
            e = sum(Fraction(float(a[m, k])) * Fraction(float(w[n, k])) for k in range(K))
            assert abs(Fraction(float(exact[m, n])) - e) <= abs(e) * Fraction(2) ** -50
            assert abs(Fraction(float(C[m, n])) - e) <= Fraction(float(bound[m, n]))


# ---- the reduced-precision forward of the oracle's cells -------------------------------

def _lstm_params(rng, I, H, P=0, peep="diagonal"):
    R = P or H
    p = {"W_x": rng.uniform(-0.4, 0.4, (4 * H, I)), "W_v": rng.uniform(-0.4, 0.4, (4 * H, R)),
         "b": rng.uniform(-0.2, 0.2, 4 * H)}
    if peep == "diagonal":
        p["w_s"] = rng.uniform(-0.3, 0.3, (3, H))
    elif peep == "full":
        p["W_s"] = rng.uniform(-0.2, 0.2, (3, H, H))
    if P:
        p["W_qv"] = rng.uniform(-0.4, 0.4, (P, H))
    return {k: v.astype(np.float32) for k, v in p.items()}


def _reduce(p, precision, names):
    out = dict(p)
    for n in names:
        if n not in p:
            continue
        if precision == "bf16":
            out[n] = ref.bf16_bits(p[n])
        else:
            out[n], out[n + "_scale"] = ref.quantize_int8(p[n])
    return out


def _dequantized(q, precision, names):
    """Float params holding the reduced weights' values (what the float forward then sees)."""
    out = {k: v for k, v in q.items() if not k.endswith("_scale")}
    for n in names:
        if n in q:
            out[n] = (ref.bf16_value(q[n]) if precision == "bf16"
                      else q[n].astype(np.float32) * q[n + "_scale"][:, None])
    return out


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_lstm_reduced_first_step_by_hand(precision):
    """T = 1 from zero state: a = W_x x + b (the recurrent product of zeros is exactly 0), so
    the outputs follow from one reduced product, written out here."""
    rng = np.random.default_rng(4)
    I, H, B = 7, 5, 3
    p = _lstm_params(rng, I, H, peep=None)
    q = _reduce(p, precision, ref.REDUCED_LSTM)
    x = rng.uniform(-1, 1, (1, B, I)).astype(np.float32)
    y, s_T, _, _ = ref.lstm_forward(x, q, precision=precision)
    a = (ref.matmul_bf16(x[0], q["W_x"]) if precision == "bf16"
         else ref.matmul_int8(x[0], q["W_x"], q["W_x_scale"])) + np.float32(0) + p["b"]
    sig = lambda z: 0.5 * (1 + np.tanh(0.5 * z))
    g_cu, g_cs, u, g_cr = (a[:, i * H:(i + 1) * H] for i in range(4))
    s = sig(g_cu) * np.tanh(u)
    np.testing.assert_allclose(s_T, s, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y[0], sig(g_cr) * np.tanh(s), rtol=1e-6, atol=1e-7)


OPTION_CASES = [
    dict(peep="diagonal"), dict(peep="full"), dict(peep=None, P=3),
    dict(peep="diagonal", coupled_gates=True, cell_clip=0.8, accumulation_clip=1.5),
    dict(peep="diagonal", context=(1, 1)), dict(peep="diagonal", lengths=True, reverse=True),
]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("case", range(len(OPTION_CASES)))
def test_lstm_reduced_every_option_near_float(precision, case):
    """Every cell option runs in reduced precision; the outputs stay near the float32 ones
    computed with the same (dequantised) weights, and differ from them (the activations are
    rounded too), by amounts of the size of the rounding steps."""
    opts = dict(OPTION_CASES[case])
    rng = np.random.default_rng(10 + case)
    T, B, I, H = 6, 3, 5, 8
    P = opts.pop("P", 0)
    p = _lstm_params(rng, I * (3 if "context" in opts else 1), H, P, opts.pop("peep"))
    if opts.pop("lengths", False):
        opts["lengths"] = np.array([6, 0, 3])
    q = _reduce(p, precision, ref.REDUCED_LSTM)
    x = rng.uniform(-1, 1, (T, B, I)).astype(np.float32)
    y_q, s_q, _, _ = ref.lstm_forward(x, q, precision=precision, **opts)
    y_f, s_f, _, _ = ref.lstm_forward(x, _dequantized(q, precision, ref.REDUCED_LSTM), **opts)
    err = max(np.abs(y_q - y_f).max(), np.abs(s_q - s_f).max())
    assert 0 < err < (2e-2 if precision == "bf16" else 5e-2), err


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_rnn_and_networks_reduced(precision):
    rng = np.random.default_rng(5)
    T, B, I, H = 5, 2, 4, 6
    layers = []
    for l in range(4):                               # 2 layers x 2 directions
        p = {"W_x": rng.uniform(-0.5, 0.5, (H, I if l < 2 else 2 * H)),
             "W_r": rng.uniform(-0.5, 0.5, (H, H)), "theta_s": rng.uniform(-0.1, 0.1, H),
             "W_s": rng.uniform(-0.3, 0.3, (H, H))}
        layers.append(_reduce({k: v.astype(np.float32) for k, v in p.items()}, precision,
                              ref.REDUCED_RNN))
    x = rng.uniform(-1, 1, (T, B, I)).astype(np.float32)
    lens = np.array([5, 3])
    r_q, s_q, _, cache = ref.rnn_network_forward(x, layers, bidirectional=True, lengths=lens,
                                                 precision=precision)
    assert np.isnan(layers[0]["W_s"]).sum() == 0 and layers[0]["W_s"].dtype == np.float32
    deq = [_dequantized(p, precision, ref.REDUCED_RNN) for p in layers]
    r_f, s_f, _, _ = ref.rnn_network_forward(x, deq, bidirectional=True, lengths=lens)
    assert 0 < np.abs(r_q - r_f).max() < (2e-2 if precision == "bf16" else 6e-2)
    with pytest.raises(ValueError, match="inference only"):
        ref.rnn_network_backward(np.ones_like(r_q), None, None, cache)


def test_reduced_forward_refuses_bad_input():
    rng = np.random.default_rng(6)
    p = _lstm_params(rng, 3, 4)
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match="precision must be"):
        ref.lstm_forward(x, p, precision="fp8")
    with pytest.raises(ValueError, match="must be uint16"):
        ref.lstm_forward(x, p, precision="bf16")
    q = _reduce(p, "int8", ref.REDUCED_LSTM)
    del q["W_v_scale"]
    with pytest.raises(ValueError, match="W_v_scale"):
        ref.lstm_forward(x, q, precision="int8")
    with pytest.raises(ValueError, match="float32"):
        ref.lstm_forward(x.astype(np.float64), _reduce(p, "bf16", ref.REDUCED_LSTM), precision="bf16")
    _, _, _, cache = ref.lstm_forward(x, _reduce(p, "bf16", ref.REDUCED_LSTM), precision="bf16")
    with pytest.raises(ValueError, match="inference only"):
        ref.lstm_backward(np.zeros((2, 1, 4), np.float32), None, None, cache)
