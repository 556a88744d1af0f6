"""Losses E and their gradients dE/dy, as (loss, grad) pairs.

The gradient is what enters the backward pass from above: the paper's
∂y[n]/∂v[n] term of χ[n], per time step. Each function returns the loss as a
Python float and the gradient with the shape and dtype of the prediction.

Padded steps: `mask` is a weight per position (bool or float, broadcastable to
the positions): masked (zero-weight) positions contribute neither to the loss
nor to its normaliser, and their gradient is zero."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ..core import _validate as V

__all__ = ["mse_loss", "cross_entropy", "log_softmax", "softmax"]

_REDUCTIONS = ("mean", "sum")


def _float_array(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


def _weights(mask: Any, shape: Tuple[int, ...], name: str = "mask") -> Optional[np.ndarray]:
    """The mask as float64 weights broadcast to `shape` (None: all ones)."""
    if mask is None:
        return None
    w = np.asarray(mask)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be bool or numeric, got dtype {w.dtype}")
    w = w.astype(np.float64)
    # a mask over the leading axes (e.g. (T, B) for y (T, B, F)) gets trailing unit axes
    while w.ndim < len(shape) and w.shape == shape[:w.ndim]:
        w = w[..., None]
    try:
        w = np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {np.shape(mask)} does not fit positions of shape "
                         f"{shape}") from None
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"{name} weights must be finite and >= 0")
    return w


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def mse_loss(y: Any, target: Any, mask: Any = None, reduction: str = "mean"
             ) -> Tuple[float, np.ndarray]:
    """Mean squared error E = Σ w (y - target)² / Σ w.

    y, target: the same shape, e.g. (T, B, F) or (N, F). mask: optional weights
    of shape y.shape or of its leading axes (e.g. (T, B)); None weighs every
    element 1. reduction="sum" drops the division.
    Returns (E, dE/dy) with dE/dy = 2 w (y - target) / Σ w, shaped and typed like y.
    With every weight zero, E = 0 and the gradient is zero."""
    _check_reduction(reduction)
    ya = _float_array(y, "y")
    ta = _float_array(target, "target")
    if ta.shape != ya.shape:
        raise ValueError(f"target must have the shape of y {ya.shape}, got {ta.shape}")
    err = ya.astype(np.float64) - ta
    w = _weights(mask, ya.shape)
    if w is None:
        sq, denom = err * err, float(err.size)
        we = err
    else:
        we = w * err
        sq, denom = we * err, float(w.sum())
    if reduction == "sum":
        denom = 1.0
    if denom == 0.0:
        return 0.0, np.zeros(ya.shape, ya.dtype)
    loss = float(sq.sum()) / denom
    return loss, ((2.0 / denom) * we).astype(ya.dtype, copy=False)


def log_softmax(z: Any, axis: int = -1) -> np.ndarray:
    """log softmax(z) = z - logsumexp(z) along `axis`, stable for any finite z
    (the maximum is subtracted first)."""
    za = _float_array(z, "z")
    if not V.is_int(axis):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not -za.ndim <= axis < za.ndim or za.shape[axis] == 0:
        raise ValueError(f"z must have at least one class along axis {axis}, got shape {za.shape}")
    m = np.max(za, axis=axis, keepdims=True)
    shifted = za - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z: Any, axis: int = -1) -> np.ndarray:
    """softmax(z) along `axis`, stable for any finite z."""
    return np.exp(log_softmax(z, axis))


def cross_entropy(logits: Any, targets: Any, mask: Any = None, ignore_index: Optional[int] = None,
                  reduction: str = "mean") -> Tuple[float, np.ndarray]:
    """Softmax cross-entropy over C classes at every position (time step).

    logits: (..., C), e.g. (T, B, C); targets: integer class indices (...), e.g.
    (T, B). Positions whose target equals `ignore_index`, or whose `mask`
    weight is 0, are padding: they add nothing to the loss or the normaliser.
    mask: optional weights of shape targets.shape (or broadcastable to it).

        E = Σ_p w_p (logsumexp(z_p) - z_p[target_p]) / Σ_p w_p     (reduction="mean")

    computed in float64 with the log-sum-exp shift, so any finite logits are safe.
    Returns (E, dE/dlogits) where dE/dz_p = w_p (softmax(z_p) - onehot(target_p)) / Σ w,
    shaped and typed like logits. With no valid position, E = 0 and the gradient is zero."""
    _check_reduction(reduction)
    z = _float_array(logits, "logits")
    if z.ndim < 1:
        raise ValueError("logits must have a class axis: shape (..., C)")
    C = z.shape[-1]
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got dtype {t.dtype}")
    if t.shape != z.shape[:-1]:
        raise ValueError(f"targets must have shape {z.shape[:-1]} (logits without the class "
                         f"axis), got {t.shape}")
    if ignore_index is not None and not V.is_int(ignore_index):
        raise TypeError(f"ignore_index must be an int class index or None, got {ignore_index!r}")
    valid = np.ones(t.shape, bool) if ignore_index is None else (t != ignore_index)
    w = _weights(mask, t.shape)
    w = valid.astype(np.float64) if w is None else w * valid
    active = w > 0
    bad = active & ((t < 0) | (t >= C))
    if np.any(bad):
        raise ValueError(f"targets must lie in [0, {C}) at unmasked positions, got "
                         f"{t[bad].ravel()[:5].tolist()}")
    denom = 1.0 if reduction == "sum" else float(w.sum())
    if denom == 0.0 or not np.any(active):
        return 0.0, np.zeros(z.shape, z.dtype)
    logp = log_softmax(z.astype(np.float64, copy=False))
    t_safe = np.where(active, t, 0)
    nll = -np.take_along_axis(logp, t_safe[..., None], axis=-1)[..., 0]
    loss = float(np.sum(w * nll)) / denom
    grad = np.exp(logp)
    np.put_along_axis(grad, t_safe[..., None],
                      np.take_along_axis(grad, t_safe[..., None], axis=-1) - 1.0, axis=-1)
    grad *= (w / denom)[..., None]
    return loss, grad.astype(z.dtype, copy=False)
