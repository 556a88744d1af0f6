"""Losses: values against direct formulas and PyTorch, gradients against
central finite differences (float64), masking/ignore of padded steps, stability."""
import numpy as np
import pytest

import fusedrnn as fr


def fd_grad(f, a, eps=1e-6):
    """Central finite differences of the scalar f at every entry of a (float64)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        fp = f(a)
        a[i] = old - eps
        fm = f(a)
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("mask_kind", [None, "leading", "full"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_value_and_fd(mask_kind, reduction):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((5, 3, 2))
    t = rng.standard_normal((5, 3, 2))
    mask = {None: None, "leading": rng.integers(0, 2, (5, 3)).astype(bool),
            "full": rng.uniform(0, 2, (5, 3, 2))}[mask_kind]
    loss, grad = fr.mse_loss(y, t, mask=mask, reduction=reduction)
    w = np.ones_like(y) if mask is None else np.broadcast_to(
        mask[..., None] if mask.ndim == 2 else mask, y.shape).astype(float)
    expected = np.sum(w * (y - t) ** 2) / (1.0 if reduction == "sum" else w.sum())
    assert loss == pytest.approx(expected, rel=1e-12)
    fd = fd_grad(lambda a: fr.mse_loss(a, t, mask=mask, reduction=reduction)[0], y.copy())
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert grad.shape == y.shape and grad.dtype == y.dtype


def test_mse_dtype_and_all_masked():
    y = np.ones((4, 2, 3), np.float32)
    loss, grad = fr.mse_loss(y, np.zeros_like(y))
    assert loss == pytest.approx(1.0) and grad.dtype == np.float32
    loss, grad = fr.mse_loss(y, np.zeros_like(y), mask=np.zeros((4, 2), bool))
    assert loss == 0.0 and not grad.any()
    with pytest.raises(ValueError, match="shape"):
        fr.mse_loss(y, np.zeros((4, 2)))


@pytest.mark.parametrize("use_mask,use_ignore", [(False, False), (True, False), (False, True),
                                                 (True, True)])
def test_cross_entropy_fd(use_mask, use_ignore):
    rng = np.random.default_rng(1)
    T, B, C = 4, 3, 5
    z = 3 * rng.standard_normal((T, B, C))
    t = rng.integers(0, C, (T, B))
    mask = rng.integers(0, 2, (T, B)).astype(bool) if use_mask else None
    ignore = None
    if use_ignore:
        ignore = -1
        t[0, 0] = t[2, 1] = -1
    loss, grad = fr.cross_entropy(z, t, mask=mask, ignore_index=ignore)
    fd = fd_grad(lambda a: fr.cross_entropy(a, t, mask=mask, ignore_index=ignore)[0], z.copy())
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    # direct formula over the valid positions
    valid = np.ones((T, B), bool) if mask is None else mask.copy()
    if ignore is not None:
        valid &= t != ignore
    lse = np.log(np.exp(z).sum(-1))
    nll = lse - np.take_along_axis(z, np.where(valid, t, 0)[..., None], -1)[..., 0]
    assert loss == pytest.approx(nll[valid].mean(), rel=1e-12)
    assert not grad[~valid].any()


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    z = rng.standard_normal((6, 4, 7))
    t = rng.integers(0, 7, (6, 4))
    t[1, 2] = -100
    loss, grad = fr.cross_entropy(z, t, ignore_index=-100)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt.reshape(-1, 7), torch.tensor(t).reshape(-1),
                                           ignore_index=-100)
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_stable_for_huge_logits():
    z = np.array([[1e4, -1e4, 0.0], [800.0, 799.0, -5e3]], np.float32)
    t = np.array([1, 0])
    loss, grad = fr.cross_entropy(z, t)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    # log-sum-exp: row 0 costs 2e4, row 1 costs log(1 + e^-1)
    assert loss == pytest.approx((2e4 + np.log1p(np.exp(-1.0))) / 2, rel=1e-6)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(fr.losses.softmax(z).sum(-1), 1.0, rtol=1e-12)


def test_cross_entropy_all_padded_and_errors():
    z = np.zeros((2, 3, 4))
    loss, grad = fr.cross_entropy(z, np.full((2, 3), -1), ignore_index=-1)
    assert loss == 0.0 and not grad.any()
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        fr.cross_entropy(z, np.full((2, 3), 4))
    with pytest.raises(TypeError, match="integer"):
        fr.cross_entropy(z, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        fr.cross_entropy(z, np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="reduction"):
        fr.cross_entropy(z, np.zeros((2, 3), int), reduction="none")
    # out-of-range targets are fine where masked out
    t = np.full((2, 3), 9)
    t[0, 0] = 1
    m = np.zeros((2, 3), bool)
    m[0, 0] = True
    loss, _ = fr.cross_entropy(z, t, mask=m)
    assert loss == pytest.approx(np.log(4))
