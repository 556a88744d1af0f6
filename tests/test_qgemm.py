"""The reduced-precision GEMM of the kernel (every ISA path this CPU runs) against the NumPy
oracle's scheme (fusedrnn.reference, docs/equations.md §7): int8 bit for bit; bf16 bit for bit
(float32 sums in k order on the widening paths, pair by pair on vdpbf16ps) and within the
float32 rounding bound of the exact sums. The paths this CPU cannot run are listed as skipped
with what they need."""
from __future__ import annotations

import numpy as np
import pytest

from fusedrnn import _kernel
from fusedrnn import reference as ref


def _paths(precision):
    return [pytest.param(precision, isa, name, marks=() if ok else pytest.mark.skip(
        reason=f"{precision} path {name} needs {needs}, which this CPU lacks"), id=f"{precision}-{name}")
            for isa, name, needs, ok in _kernel.qisa_paths(precision)]


PATHS = _paths("bf16") + _paths("int8")
SHAPES = [(1, 1, 1), (1, 33, 5), (3, 32, 2), (5, 70, 7), (8, 512, 128), (13, 97, 64),
          (17, 130, 600), (40, 64, 129), (200, 33, 31),
          # the bf16 AVX2 path's wide tile from 16 rows on (qgemm.h FR_QWIDE_MIN_ROWS): both
          # sides of the switch, its row tiles and blocks, blocks of K (odd K), half panels
          (15, 45, 257), (16, 16, 129), (21, 70, 255), (123, 33, 257)]


@pytest.fixture
def forced():
    """Force a path for one test, then restore the default."""
    saved = {p: _kernel.qget_isa(p) for p in ("bf16", "int8")}
    yield lambda precision, isa: _kernel.qset_isa(precision, isa)
    for p, isa in saved.items():
        _kernel.qset_isa(p, isa)


def _weights(precision, rng, N, K):
    W = rng.uniform(-0.5, 0.5, (N, K)).astype(np.float32)
    if precision == "bf16":
        bits = np.empty(N * K, np.uint16)
        _kernel.bf16_round(W.reshape(-1), bits)
        np.testing.assert_array_equal(bits, ref.bf16_bits(W).reshape(-1))   # the same rounding
        return (bits.reshape(N, K),)
    q = np.empty((N, K), np.int8)
    s = np.empty(N, np.float32)
    _kernel.s8_quantize(W, q, s)
    q_ref, s_ref = ref.quantize_int8(W)
    np.testing.assert_array_equal(q, q_ref)                                  # the same scheme
    np.testing.assert_array_equal(s, s_ref)
    return q, s


@pytest.mark.parametrize("precision, isa, name", PATHS)
def test_qgemm_matches_the_oracle(precision, isa, name, forced):
    forced(precision, isa)
    rng = np.random.default_rng(isa)
    for M, N, K in SHAPES:
        w = _weights(precision, rng, N, K)
        Wp = _kernel.qpack(precision, *w)
        A = rng.uniform(-2, 2, (M, K)).astype(np.float32)
        if M > 2:
            A[1, K // 2] = 9.0                                   # one large entry in a row
        C0 = rng.uniform(-1, 1, (M, N)).astype(np.float32)
        for beta1 in (False, True):
            C = C0.copy()
            _kernel.qgemm(precision, C, A, Wp, beta1)
            if precision == "int8":
                want = ref.matmul_int8(A, *w)
                want = C0 + want if beta1 else want
                np.testing.assert_array_equal(C, want, err_msg=f"{name} M={M} N={N} K={K}")
                continue
            exact = ref.matmul_bf16_exact(A, w[0]) + (C0 if beta1 else 0)
            bound = ref.matmul_bf16_bound(A, w[0]) + (2.0 ** -24 * np.abs(C0) if beta1 else 0)
            assert np.all(np.abs(C - exact) <= bound + 1e-30), f"{name} M={M} N={N} K={K}"
            # k-order float32 sums; vdpbf16ps: pair by pair, the odd product first
            want = ref.matmul_bf16(A, w[0], pairs=name == "avx512bf16")
            want = C0 + want if beta1 else want
            np.testing.assert_array_equal(C, want, err_msg=f"{name} M={M} N={N} K={K}")


def test_paths_are_listed_and_forcing_is_checked(forced):
    for precision in ("bf16", "int8"):
        paths = _kernel.qisa_paths(precision)
        assert [p[0] for p in paths] == [0, 1, 2, 3] and paths[0][3]       # generic runs anywhere
        for isa, name, needs, ok in paths:
            if not ok:
                with pytest.raises(ValueError, match="not a .* path this CPU runs"):
                    _kernel.qset_isa(precision, isa)
    with pytest.raises(ValueError, match="precision must be"):
        _kernel.qget_isa("fp8")


def test_qgemm_bad_arguments():
    q = np.ones((4, 3), np.int8)
    Wp = _kernel.qpack("int8", q, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="do not match"):
        _kernel.qgemm("int8", np.zeros((2, 4), np.float32), np.zeros((3, 3), np.float32), Wp, False)
    with pytest.raises(ValueError, match="Wp must hold"):
        _kernel.qgemm("int8", np.zeros((2, 40), np.float32), np.zeros((2, 3), np.float32), Wp, False)
    q[1, 1] = -128
    with pytest.raises(ValueError):
        _kernel.qpack("int8", q, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="scale must"):
        _kernel.qpack("int8", np.ones((4, 3), np.int8), np.ones(3, np.float32))
