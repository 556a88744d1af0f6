"""Group 5: the kernel's portable GEMM and SciPy's BLAS give the same results,
for the GEMM itself and for whole forward/backward passes."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _kernel, _tuning
from conftest import make_layer, random_problem, run_kernel


def _naive(A, B, tA, tB, alpha, beta, C):
    a = A.T if tA else A
    b = B.T if tB else B
    return alpha * (a.astype(np.float64) @ b.astype(np.float64)) + beta * C


@pytest.mark.parametrize("backend", ["portable", "blas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tA", [False, True])
@pytest.mark.parametrize("tB", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (3, 17, 5), (65, 7, 130), (8, 33, 1)])
def test_gemm_against_numpy(backend, dtype, tA, tB, M, N, K):
    fr.set_gemm(backend)
    assert fr.get_gemm() == backend
    rng = np.random.default_rng(M * N + K)
    A = rng.standard_normal((K, M) if tA else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if tB else (K, N)).astype(dtype)
    C0 = rng.standard_normal((M, N)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for alpha, beta in [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0)]:
        C = C0.copy()
        _kernel.gemm(C.reshape(-1), A.reshape(-1), B.reshape(-1), tA, tB, M, N, K, alpha, beta)
        np.testing.assert_allclose(C, _naive(A, B, tA, tB, alpha, beta, C0), rtol=tol, atol=tol * K)
    # beta = 0 must not read C: NaN in the output buffer may not propagate.
    C = np.full((M, N), np.nan, dtype)
    _kernel.gemm(C.reshape(-1), A.reshape(-1), B.reshape(-1), tA, tB, M, N, K, 1.0, 0.0)
    assert np.isfinite(C).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,option", [("lstm", True), ("lstm", False), ("rnn", False), ("rnn", True)])
def test_portable_equals_blas_end_to_end(kind, option, dtype):
    T, B, I, H = 6, 5, 19, 23
    layer = make_layer(kind, T, B, I, H, dtype, option)
    prob = random_problem(layer, T, B)
    fr.set_gemm("blas")
    out_b, grad_b = run_kernel(layer, prob)
    fr.set_gemm("portable")
    out_p, grad_p = run_kernel(layer, prob)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    for k in out_b:
        np.testing.assert_allclose(out_p[k], out_b[k], **tol, err_msg=k)
    for k in grad_b:
        np.testing.assert_allclose(grad_p[k], grad_b[k], **tol, err_msg=k)


def test_set_gemm_rejects_unknown():
    with pytest.raises(ValueError, match="backend"):
        fr.set_gemm("mkl")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("opts", [dict(peepholes="diagonal"), dict(proj_size=5, peepholes="full"),
                                  dict(bidirectional=True, num_layers=2)])
@pytest.mark.parametrize("B", [1, 3, 4, 7, 9])
def test_packed_microkernel_equals_provider(opts, B, dtype):
    """The per-step recurrent GEMMs on the packed micro-kernel (small batches)
    give the results of the GEMM provider, forward and backward."""
    T, I, H = 5, 6, 11  # 4H = 44 and R = 5 or 11: partial panels
    layer = fr.LSTM(I, H, dtype=dtype, seed=B, **opts)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, layer.num_directions * layer.output_size)).astype(dtype)
    results = []
    for rows in (0, 64):  # T = 5 takes the team path too
        with _tuning.override(packed_max_rows=rows, team_min_steps=1):
            layer.zero_grad()
            y, st = layer.forward(x)
            dx, _ = layer.backward(dy)
            results.append((y.copy(), dx, {k: g.copy() for k, g in layer.grads.items()}))
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    (y0, dx0, g0), (y1, dx1, g1) = results
    np.testing.assert_allclose(y1, y0, **tol)
    np.testing.assert_allclose(dx1, dx0, **tol)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], **tol, err_msg=k)
