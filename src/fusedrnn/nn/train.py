"""Truncated back-propagation through time (the paper's unrolling argument).

Over a window of K steps with given initial conditions the recurrence is a
feed-forward chain of K cells sharing the weights, so BPTT over the window is
exact for that window. A long sequence is walked window by window: the final
state of one window is the initial state of the next (the forward is the same
as one call over the whole sequence), but no gradient flows back across a
window boundary (the carried state is treated as a constant: `backward` is
called without a state gradient). One optimiser step per window.

    model = fr.Sequential(fr.LSTM(I, H, seed=0), fr.Linear(H, C, seed=1))
    opt = fr.optim.Adam(model, lr=2e-3)
    history, state = fr.train.tbptt(model, x, targets, fr.cross_entropy,
                                    window=64, optimizer=opt, epochs=3)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from ..core import _validate as V
from .optim import clip_grad_norm
from ..core.sequential import Sequential, is_recurrent

__all__ = ["History", "StopTraining", "window_slices", "windowed_forward", "tbptt", "evaluate"]

LossFn = Callable[..., Tuple[float, np.ndarray]]


class StopTraining(Exception):
    """Raise from a `tbptt` callback to end training after the current window."""


@dataclass
class History:
    """What `tbptt` records, one entry per window (= per optimiser step)."""

    loss: List[float] = field(default_factory=list)       # the window's loss E
    grad_norm: List[float] = field(default_factory=list)  # global gradient norm before clipping
    epoch: List[int] = field(default_factory=list)        # epoch of the window (0-based)
    metrics: List[Dict[str, Any]] = field(default_factory=list)  # what callbacks returned, with "step"

    def __len__(self) -> int:
        return len(self.loss)

    def epoch_loss(self) -> List[float]:
        """Mean window loss of every epoch."""
        ep = np.asarray(self.epoch)
        loss = np.asarray(self.loss)
        return [float(loss[ep == e].mean()) for e in np.unique(ep)]


def _time_axis(model: Any) -> int:
    return 1 if getattr(model, "batch_first", False) else 0


def window_slices(T: int, window: int) -> List[slice]:
    """[0, K), [K, 2K), ... covering T steps; the last window may be shorter."""
    window = V.positive_int(window, "window")
    if T < 1:
        raise ValueError(f"the sequence must have at least one step, got T={T}")
    return [slice(a, min(a + window, T)) for a in range(0, T, window)]


def _take(a: Any, sl: slice, axis: int) -> Any:
    index = (slice(None),) * axis + (sl,)
    return a[index]


def _targets(target: Any) -> Tuple[Any, ...]:
    return tuple(target) if isinstance(target, tuple) else (target,)


def _length(x: Any, axis: int, name: str = "x") -> int:
    shape = np.shape(x)
    if len(shape) <= axis:
        raise ValueError(f"{name} must have a time axis {axis}, got shape {shape}")
    return int(shape[axis])


def _check_targets(targets: Tuple[Any, ...], T: int, axis: int) -> None:
    for i, t in enumerate(targets):
        if t is not None and _length(t, axis, f"target {i}") != T:
            raise ValueError(f"target {i} has {_length(t, axis)} steps along axis {axis}, "
                             f"x has {T}")


def _context(model: Any) -> Tuple[int, int]:
    """(L_past, L_future) of the model's first layer (an LSTM with a context window)."""
    first = model.layers[0] if isinstance(model, Sequential) else model
    ctx = getattr(first, "context", (0, 0)) if is_recurrent(first) else (0, 0)
    return int(ctx[0]), int(ctx[1])


class _Walker:
    """Runs the windows of one pass over a sequence: slices x, encodes it, and
    for a first layer with a context window streams the frames across window
    boundaries (state.x_past carries the past, x_future passes the next
    L_future frames, zeros past the end of the sequence), so that the windows
    see exactly what one call over the whole sequence sees."""

    def __init__(self, model: Any, x: Any, encode: Optional[Callable[[np.ndarray], np.ndarray]]):
        if not (callable(getattr(model, "forward", None)) and hasattr(model, "params")):
            raise TypeError(f"model must be a fusedrnn layer or Sequential, got {type(model).__name__}")
        if encode is not None and not callable(encode):
            raise TypeError(f"encode must be callable or None, got {type(encode).__name__}")
        self.model, self.x, self.encode = model, x, encode
        self.axis = _time_axis(model)
        if np.ndim(x) < 2:
            layout = "(B, T, ...)" if self.axis else "(T, B, ...)"
            raise ValueError(f"x must have a time and a batch axis {layout}, e.g. (T, B, I) or "
                             f"(T, B) indices with encode; got shape {np.shape(x)}")
        self.T = _length(x, self.axis)
        self.L_past, self.L_future = _context(model)
        self.batch = int(np.shape(x)[1 - self.axis])

    def start(self, state: Any) -> Any:
        """The state a pass (or a reset window) starts from: a stream start for a
        context window (zeros, incl. the past frames), else as given."""
        if state is None and (self.L_past or self.L_future):
            return self.model.initial_state(self.batch)
        return state

    def forward(self, sl: slice, state: Any, training: bool) -> Tuple[np.ndarray, Any]:
        xw = _take(self.x, sl, self.axis)
        xw = self.encode(xw) if self.encode else xw
        kw = {}
        if self.L_future:
            xf = _take(self.x, slice(sl.stop, sl.stop + self.L_future), self.axis)
            n = _length(xf, self.axis)
            xf = (self.encode(xf) if self.encode else np.asarray(xf)) if n else None
            shape = list(np.shape(xw))
            shape[self.axis] = self.L_future
            padded = np.zeros(shape, np.asarray(xw).dtype)
            if xf is not None:
                padded[(slice(None),) * self.axis + (slice(0, n),)] = xf
            kw["x_future"] = padded
        return self.model.forward(xw, state=state, training=training, **kw)


def windowed_forward(model: Any, x: Any, window: int, state: Any = None,
                     reset_state: bool = False, training: bool = False,
                     encode: Optional[Callable[[np.ndarray], np.ndarray]] = None
                     ) -> Tuple[np.ndarray, Any]:
    """Run `model` over x (T, B, I) window by window, carrying the state.

    Returns the concatenated output (T, B, F) and the final state. Without
    reset_state this equals model.forward(x, state) (the unrolling argument),
    also for a first LSTM layer with a context window (see `_Walker`).
    encode: optional per-window input transform (e.g. one-hot encoding)."""
    reset_state = V.flag(reset_state, "reset_state")
    walk = _Walker(model, x, encode)
    ys = []
    st = walk.start(state)
    for sl in window_slices(walk.T, window):
        y, st_out = walk.forward(sl, walk.start(None) if reset_state else st, training)
        ys.append(np.array(y))
        st = st_out
    return np.concatenate(ys, axis=walk.axis), st


def evaluate(model: Any, x: Any, target: Any, loss: LossFn, window: int, state: Any = None,
             reset_state: bool = False,
             encode: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> float:
    """Mean loss of `model` over a long sequence, inference only (nothing stored),
    window by window with the state carried; windows weighted by their length."""
    if not callable(loss):
        raise TypeError(f"loss must be callable, loss(y, *target) -> (E, dE/dy); got "
                        f"{type(loss).__name__}")
    reset_state = V.flag(reset_state, "reset_state")
    walk = _Walker(model, x, encode)
    axis, T = walk.axis, walk.T
    targets = _targets(target)
    _check_targets(targets, T, axis)
    total, st = 0.0, walk.start(state)
    for sl in window_slices(T, window):
        y, st_out = walk.forward(sl, walk.start(None) if reset_state else st, training=False)
        L, _ = _loss_pair(loss(y, *(None if t is None else _take(t, sl, axis) for t in targets)))
        total += L * (sl.stop - sl.start)
        st = st_out
    return total / T


def tbptt(model: Any, x: Any, target: Any, loss: LossFn, *, window: int,
          optimizer: Any = None, epochs: int = 1, state: Any = None, reset_state: bool = False,
          clip_norm: Optional[float] = None,
          encode: Optional[Callable[[np.ndarray], np.ndarray]] = None,
          callback: Optional[Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]] = None,
          progress: bool = True, desc: str = "tbptt",
          history: Optional[History] = None) -> Tuple[History, Any]:
    """Train `model` on long sequences by truncated BPTT with windows of K = `window` steps.

    model: a recurrent layer or a `Sequential` (forward(x, state, training) ->
        (y, state), backward(dy), zero_grad(), grads).
    x: (T, B, I) (or (B, T, I) for a batch_first model): B parallel streams of T steps.
    target: what `loss` compares y with, sliced along time like x, or a tuple of
        such arrays (all sliced; None entries passed as None), e.g. (labels, mask).
    loss: loss(y_window, *target_window) -> (E, dE/dy), e.g. fr.mse_loss, fr.cross_entropy.
    optimizer: stepped once per window (None: only the gradients of the last
        window are left in model.grads, e.g. to inspect them).
    epochs: passes over the sequence; each starts from `state`.
    state: initial state (None: zeros). reset_state: start every window from
        zeros instead of the carried state.
    clip_norm: clip the global gradient norm of every window to this value (> 0;
        None: no clipping).
    encode: optional per-window input transform (e.g. indices -> one-hot), so
        a long sequence need not be encoded at once.
    A first LSTM layer with a context window (L_past, L_future) is streamed: the
        windows see the same frames as one call (the state carries the past frames,
        the next L_future frames are passed as x_future; no gradient flows into them).
    callback: called after every window with a dict (epoch, window, step, loss,
        grad_norm, model, optimizer, state); a returned dict is recorded in
        history.metrics; raising StopTraining ends training.
    progress: show a tqdm bar with the running (exponentially averaged) loss.
    history: an existing History to append to (to continue a run).

    Returns (history, final state of the last window).
    Per window: zero_grad, forward from the carried state, loss, backward with
    no gradient into the initial state (the truncation), optional clipping, step."""
    epochs = V.positive_int(epochs, "epochs")
    clip_norm = V.optional_positive(clip_norm, "clip_norm")
    if not callable(loss):
        raise TypeError(f"loss must be callable, loss(y, *target) -> (E, dE/dy); got "
                        f"{type(loss).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    reset_state = V.flag(reset_state, "reset_state")
    if optimizer is not None and not callable(getattr(optimizer, "step", None)):
        raise TypeError(f"optimizer must have a step() method (e.g. fr.optim.Adam) or be None, "
                        f"got {type(optimizer).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a fusedrnn.train.History or None, got "
                        f"{type(history).__name__}")
    walk = _Walker(model, x, encode)
    axis, T = walk.axis, walk.T
    targets = _targets(target)
    _check_targets(targets, T, axis)
    slices = window_slices(T, window)
    hist = history if history is not None else History()
    step = len(hist)
    running = math.nan
    bar = tqdm(total=epochs * len(slices), desc=desc, unit="win", disable=not progress,
               dynamic_ncols=True, leave=True)
    st_final = state
    try:
        for ep in range(int(epochs)):
            st = walk.start(state)
            for w, sl in enumerate(slices):
                model.zero_grad()
                y, st_out = walk.forward(sl, walk.start(None) if reset_state else st, True)
                L, dy = _loss_pair(loss(y, *(None if t is None else _take(t, sl, axis)
                                             for t in targets)))
                model.backward(dy)  # no dstate: no gradient crosses the window boundary
                gnorm = clip_grad_norm(model, clip_norm) if clip_norm else _grad_norm(model)
                if optimizer is not None:
                    optimizer.step()
                st = st_final = st_out
                hist.loss.append(float(L))
                hist.grad_norm.append(gnorm)
                hist.epoch.append(ep)
                running = L if math.isnan(running) else 0.95 * running + 0.05 * L
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", refresh=False)
                if callback is not None:
                    info = dict(epoch=ep, window=w, step=step, loss=float(L), grad_norm=gnorm,
                                model=model, optimizer=optimizer, state=st)
                    try:
                        metrics = callback(info)
                    except StopTraining:
                        return hist, st_final
                    if metrics:
                        hist.metrics.append({"step": step, **metrics})
                step += 1
    finally:
        bar.close()
    return hist, st_final


def _loss_pair(out: Any) -> Tuple[float, Any]:
    """The loss function's (E, dE/dy), checked."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"loss must return a pair (E, dE/dy), got {type(out).__name__}")
    try:
        E = float(out[0])
    except (TypeError, ValueError):
        raise TypeError(f"loss must return a pair (E, dE/dy) with a number E, got "
                        f"{out[0]!r}") from None
    return E, out[1]


def _grad_norm(model: Any) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64)))
                             for g in model.grads.values())))
