"""External input context windows (docs/equations.md §3a), as an unfolding of the input.

The accumulations of step n see x[n - L_past] ... x[n + L_future]; stacking
those K = L_past + 1 + L_future frames side by side turns the window into one
wider input, so the kernel keeps its single input GEMM over all steps:

    X[n] = [x[n - L_past], ..., x[n], ..., x[n + L_future]]     (T, B, K * I)

Frames before the chunk come from `x_past` (carried in the state), frames
after it from `x_future` (supplied by a streaming caller); both are zeros when
absent, i.e. at the true start and end of the sequence. With lengths, frames at
or after a row's end are zero. The loops below run over the K window offsets,
never over time steps."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np


def _extended(x: np.ndarray, x_past: Optional[np.ndarray], x_future: Optional[np.ndarray],
              L_past: int, L_future: int) -> np.ndarray:
    T, B, I = x.shape
    past = np.zeros((L_past, B, I), x.dtype) if x_past is None else x_past
    future = np.zeros((L_future, B, I), x.dtype) if x_future is None else x_future
    return np.concatenate([past, x, future])  # (L_past + T + L_future, B, I)


def _valid(T: int, B: int, L_past: int, L_future: int, lengths: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """(L_past + T + L_future, B, 1) mask of frames inside each row's sequence:
    frames before x[0] stay; a row that ends inside the chunk (lengths < T) has
    no frames from its end on, the look-ahead frames included; a row that runs
    the whole chunk goes on into x_future."""
    if lengths is None:
        return None
    m = np.arange(-L_past, T + L_future)[:, None]             # frame index relative to x[0]
    keep = (m < lengths[None, :]) | ((m >= T) & (lengths[None, :] == T))
    return keep[:, :, None]


def unfold(x: np.ndarray, x_past: Optional[np.ndarray], x_future: Optional[np.ndarray],
           L_past: int, L_future: int, lengths: Optional[np.ndarray]) -> np.ndarray:
    """X (T, B, K*I), column block k holding x[n + k - L_past]."""
    T, B, I = x.shape
    ext = _extended(x, x_past, x_future, L_past, L_future)
    valid = _valid(T, B, L_past, L_future, lengths)
    if valid is not None:
        ext = ext * valid
    K = L_past + 1 + L_future
    X = np.empty((T, B, K * I), x.dtype)
    for k in range(K):
        X[:, :, k * I:(k + 1) * I] = ext[k:k + T]
    return X


def fold(dX: np.ndarray, I: int, L_past: int, L_future: int,
         lengths: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The adjoint of `unfold`: dE/dx (T, B, I), dE/dx_past (L_past, B, I),
    dE/dx_future (L_future, B, I)."""
    T, B, _ = dX.shape
    dext = np.zeros((L_past + T + L_future, B, I), dX.dtype)
    for k in range(L_past + 1 + L_future):
        dext[k:k + T] += dX[:, :, k * I:(k + 1) * I]
    valid = _valid(T, B, L_past, L_future, lengths)
    if valid is not None:
        dext *= valid
    return dext[L_past:L_past + T], dext[:L_past], dext[L_past + T:]


def last_frames(before: Any, x: Any, L_past: int,
                concat: Callable[[Any], Any] = np.concatenate) -> Any:
    """The last L_past (> 0) frames of [before, x], both time-major (., B, I): the
    past context of the chunk after x. concat: the array library's concatenation
    (np.concatenate; torch.cat for the tensors of fusedrnn.torch)."""
    return concat([before, x])[-L_past:]


def next_past(x_past: Optional[np.ndarray], x: np.ndarray, L_past: int) -> Optional[np.ndarray]:
    """The last L_past frames of [x_past, x]: the state's context for the next chunk."""
    if L_past == 0:
        return None
    T, B, I = x.shape
    past = np.zeros((L_past, B, I), x.dtype) if x_past is None else x_past
    return np.ascontiguousarray(last_frames(past, x, L_past))
