"""Streams: run a trained network on live input, one frame at a time.

    stream = lstm.stream(batch=1)            # validates and allocates once
    for frame in frames:                     # frame (B, I), the layer's dtype
        y = stream.step(frame)               # (B, R); None while a look-ahead waits
    tail = stream.flush()                    # end of the sequence: what is left

`layer.stream(batch, state=None)` exists for `fr.LSTM`, `fr.RNN`, `fr.GRU`,
`fr.Linear`, the quantized `fr.QuantizedLSTM` / `fr.QuantizedRNN` / `fr.QuantizedGRU` (their steps on
the reduced-precision kernels) and a `fr.Sequential` of them (inference only;
unidirectional layers). A stream
holds its state, its output and workspace buffers and the context window of a
look-ahead, so that a step does little more than the kernel's step. The
outputs of a stream equal one `forward` over the whole sequence.

- `step(frame, out=None)`: frame (B, I), C-contiguous, of the layer's dtype
  (no cast: a wrong dtype, shape or layout raises). Returns a new (B, R) array,
  or fills `out` (a C-contiguous (B, R) array) and returns it.
- `step_many(chunk)`: (T, B, I) (or (B, T, I) for a batch_first layer); returns
  the outputs of the steps the chunk completes, (T', B, R).
- Look-ahead (an LSTM with `context=(L_past, L_future)`, L_future > 0): the
  output of frame n is due when frame n + L_future has arrived; `stream.delay`
  is that number of frames, and `step` returns None until then. In a
  `Sequential` the delays of the layers add up. `flush()` ends the sequence
  (zero frames beyond it, as `forward` does) and returns the outputs still
  due, (delay, B, R) (fewer when fewer frames came). After it the next frame
  starts a new sequence from `stream.state`.
- `reset(rows=None)`: rows None starts the whole batch anew (zero state, the
  delay starts again). With rows (ints, a slice or a boolean mask) those rows
  start anew and the others go on untouched; with a look-ahead a reset row
  outputs zeros until its first frame's output is due.
- `state`: the state after the last output step, a State like `forward`'s
  (`LSTMState(s, v, x_past)`, `RNNState(s, r)`, `GRUState(h)`; a list for a
  Sequential);
  frames of a look-ahead that have not been output yet are not in it.
- Weights, `layer.stream(batch, weights="live")` (the default): the stream
  follows the layer's `params`. An in-place update (an optimiser step,
  `params[k][...] = w`) is used from the next step on, and a replaced entry
  (`params[k] = w`) or dict is noticed, checked (shape, dtype) and used.
  Weights the kernel keeps in a packed copy are packed again when they
  differ from the layer's arrays. The layer's own arrays count the writes made
  through them (fusedrnn.core._tracked), so they are compared only after a write;
  an array stored with `params[k] = w` is compared before every step (a read
  of it per step). `weights="snapshot"`: the stream takes a
  private copy of the weights when it is made and never looks at `params`
  again (later changes do not affect it); the fastest steps, for weights that
  stay fixed.
- Threads: a stream is one sequence; a call while another thread is inside a
  call of the same stream raises RuntimeError. Different streams of one layer
  run in parallel (the kernel releases the GIL).
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from . import _kernel
from .core import _threads
from .core import _validate as V
from .core._layer import flat, suffix
from .core._scratch import aligned_empty
from .core._tracked import VERSION, is_tracked
from .core.lstm import _PEEP_CODES
from .core.quantized import _REDUCED_CODES

__all__ = ["Stream", "LinearStream", "SequentialStream"]

# A step runs its kernel calls without the GIL (so that other Python threads run
# meanwhile) from this many multiply-adds on. Releasing and re-taking it costs
# about 40 ns a step: 5% of a step of an RNN with H = 16 (0.85 us), 2% at
# 6e3 multiply-adds, nothing measurable from 1e5 on.
NOGIL_MIN_MACS = 20_000


# Streams alive, so that a child forked while another thread was inside a step
# does not find its copy of that stream marked in use for ever.
_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for s in list(_LIVE):
        s._leave()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Steps from this many multiply-adds may use the team (set_num_threads > 1). Measured
# (a 2-core host under load, 1 thread vs a team of 2, per step): H = 256 B = 8 (2.4e6
# multiply-adds) 101 us vs 1298 us; H = 512 B = 32 (3.6e7) 2.7 ms vs 4.1 ms; H = 1024
# B = 16 (7.0e7) 6.4 ms vs 9.5 ms; H = 1024 B = 64 (2.8e8) 24.6 ms vs 27.3 ms; H = 2048
# B = 16 (2.7e8) 26.7 ms vs 31.0 ms: the caller's thread was faster at every size, so
# the team starts above the largest step measured. (The kernel's plan adds its own rule:
# a call of fewer than `team_min_steps` steps, a stream step included, runs on one thread
# unless that setting is lowered; see fusedrnn._tuning.)
TEAM_MIN_MACS = 500_000_000


def _refuse() -> None:
    raise RuntimeError("this stream is in use by another thread: a stream is one sequence of "
                       "frames; give each thread its own stream")


@contextlib.contextmanager
def _in_use(lock: "threading.Lock") -> Any:
    """Mark a stream in use for a call; a second thread's call raises."""
    if not lock.acquire(blocking=False):
        _refuse()
    try:
        yield
    finally:
        lock.release()


def _zeros(shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n = int(np.prod(shape))
    a = aligned_empty(max(n, 1), dtype)[:n].reshape(shape)
    a[...] = 0
    return a


def _weights_mode(weights: Any) -> bool:
    """True for "snapshot", False for "live" (ValueError naming `weights` else)."""
    if weights not in ("live", "snapshot"):
        raise ValueError(f"weights must be 'live' (follow the layer's params) or 'snapshot' "
                         f"(a copy taken now), got {weights!r}")
    return weights == "snapshot"


def _row_index(rows: Any, batch: int) -> np.ndarray:
    """Row numbers from ints, a slice or a boolean mask (ValueError naming `rows`)."""
    if isinstance(rows, slice):
        return np.arange(batch)[rows]
    arr = np.asarray(rows)
    if arr.dtype == np.bool_:
        if arr.shape != (batch,):
            raise ValueError(f"rows as a boolean mask must have shape ({batch},), got {arr.shape}")
        return np.flatnonzero(arr)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise TypeError(f"rows must be None, an int, a sequence of ints, a slice or a boolean "
                        f"mask of shape ({batch},), got {rows!r}")
    idx = arr.reshape(-1).astype(np.int64)
    if idx.size and (idx.min() < -batch or idx.max() >= batch):
        raise ValueError(f"rows must lie in [0, {batch}) (the stream's batch), got {rows!r}")
    return np.unique(idx % batch)


def _chunk(chunk: Any, name: str, dtype: np.dtype, features: int, batch: int,
           batch_first: bool) -> np.ndarray:
    """A time-major (T, B, F) contiguous array of exactly `dtype` (no cast)."""
    if not isinstance(chunk, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of dtype {dtype}, got {type(chunk).__name__}")
    if chunk.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (the stream does not cast), got {chunk.dtype}")
    layout = f"(B, T, {features})" if batch_first else f"(T, B, {features})"
    if chunk.ndim != 3 or chunk.shape[2] != features or chunk.shape[0 if batch_first else 1] != batch:
        raise ValueError(f"{name} must have shape {layout} with B = {batch}, got {chunk.shape}")
    return np.ascontiguousarray(chunk.transpose(1, 0, 2) if batch_first else chunk)


class Stream(_kernel.StreamCore):
    """A stream over an `fr.LSTM`, `fr.RNN` or `fr.GRU` (see the module docstring); made by
    `layer.stream(batch, state=None)`."""

    def __init__(self, layer: Any, batch: int, state: Any = None, weights: str = "live") -> None:
        self._snapshot = _weights_mode(weights)
        if getattr(layer, "bidirectional", False):
            raise ValueError("a bidirectional layer cannot stream: its reverse direction needs "
                             "the whole sequence; run forward over the sequence instead")
        if getattr(layer, "reverse", False):
            raise ValueError("a reverse=True layer cannot stream: it reads each sequence from "
                             "its end; run forward over the sequence instead")
        B = V.positive_int(batch, "batch")
        self.layer = layer
        self._lstm = hasattr(layer, "proj_size")
        self._gru = hasattr(layer, "linear_before_reset")
        # a quantized layer's FR_REDUCED_* code (0: float): its cells run on the reduced panels
        self._reduced = _REDUCED_CODES[layer.precision] if hasattr(layer, "precision") else 0
        L_past, L_future = getattr(layer, "context", (0, 0))
        self._L_past, self._L_future, self._K = L_past, L_future, L_past + 1 + L_future
        dt, I, H, R = layer.dtype, layer.input_size, layer.hidden_size, layer.output_size
        L = layer.num_layers
        s0, o0, x_past = layer._state_in(state, B)
        win = _zeros((B, self._K, I), dt) if self._K > 1 else None
        self._win = win
        self._init_core(L, dt, B, I, R, L_past, L_future, win)
        # the state of every cell in two halves (the kernel reads one, writes the other)
        self._s = [[_zeros((B, H), dt), _zeros((B, H), dt)] for _ in range(L)]
        self._o = [[_zeros((B, R), dt), _zeros((B, R), dt)] for _ in range(L)]
        self._y = [_zeros((B, R), dt) for _ in range(L - 1)]  # outputs of the cells below the top
        B_macs = 0
        for l in range(L):
            I_l = layer._cell_input_size(l)
            x = None if l == 0 else self._y[l - 1]
            y = None if l == L - 1 else self._y[l]
            if self._lstm:
                self._set_lstm_cell(l, I_l, H, layer.proj_size, _PEEP_CODES[layer.peepholes],
                                    layer.coupled_gates, layer.cell_clip or 0.0,
                                    layer.accumulation_clip or 0.0,
                                    self._threads(B * 4 * H * (I_l + R)),
                                    x, y, self._s[l], self._o[l], layer._warps[0],
                                    self._reduced)
                B_macs += B * 4 * H * (I_l + R) + (B * layer.proj_size * H)
            elif self._gru:
                macs = B * 3 * H * (I_l + H)
                self._set_gru_cell(l, I_l, H, layer.linear_before_reset, self._threads(macs),
                                   x, y, self._s[l], self._o[l], layer._warps[0],
                                   layer.accumulation_clip or 0.0, self._reduced)
                B_macs += macs
            else:
                self._set_rnn_cell(l, I_l, H, layer.state_feedback, x, y, self._s[l], self._o[l],
                                   layer._warps[0], layer.accumulation_clip or 0.0, self._reduced)
                B_macs += B * H * (I_l + H * (2 if layer.state_feedback else 1))
            self._s[l][0][...] = s0[l]
            self._o[l][0][...] = o0[l]
        self._packed: List[Optional[Any]] = [None] * L   # PackedWeights of each LSTM cell
        self._work = aligned_empty(max(self._work_size(), 1), dt)
        self._set_work(self._work)
        self.release_gil = B_macs >= NOGIL_MIN_MACS
        if win is not None and x_past is not None:
            win[:, self._K - L_past:, :] = x_past.transpose(1, 0, 2)
        self._rebind()
        _LIVE.add(self)

    @staticmethod
    def _threads(macs: int) -> int:
        """Kernel threads of a step of `macs` multiply-adds: the caller's thread, but
        for very large steps (then set_num_threads). One step has a barrier after
        each element-wise pass, and between frames the team's workers go to
        sleep (see TEAM_MIN_MACS for the measurements)."""
        return 1 if macs < TEAM_MIN_MACS else _threads.kernel_threads()

    # -- weights ---------------------------------------------------------------------
    def _rebind(self) -> None:
        """Point the cells at the layer's current parameter arrays (checked), or at
        private copies of them for a snapshot. A quantized layer's arrays are read-only
        (no copies) and its cells get the packed reduced weights."""
        layer = self.layer
        if self._reduced:
            layer._checked_params()   # its read-only arrays of the stored dtypes and shapes
        params = layer.params
        seen = int(VERSION[0])   # before the copies: a write from now on is checked
        watched = []
        cells: List[dict] = []
        checks: list = []
        for l in range(layer.num_layers):
            shapes = layer._cell_param_shapes(layer._cell_input_size(l))
            arrays, tracked = {}, {}
            for name, shape in shapes.items():
                key = name + suffix(l, 0)
                if self._reduced:   # checked above
                    held = arrays[name] = params[key]
                else:
                    a = V.parameter(params, key, layer.dtype, shape)
                    held = params[key]
                    if not held.flags.c_contiguous:
                        raise ValueError(f"params[{key!r}] must be C-contiguous for a stream (a "
                                         "step reads it in place); store "
                                         "np.ascontiguousarray(...) there")
                    arrays[name] = np.array(a) if self._snapshot else a
                tracked[name] = is_tracked(held)
                watched.append((key, held))
            if self._reduced:  # the float weights are not read, the panels are (kept alive)
                q = layer._qpacked(layer._cell_config(1, self.batch, layer._cell_input_size(l),
                                                      None, False), arrays)
                self._packed[l] = None
                arrays["(packed)"] = q
                order = ([None, None, arrays["b"], arrays.get("w_s", arrays.get("W_s")), None,
                          None, q.buffer] if self._lstm else
                         [None, None, arrays["b"], arrays.get("b_hn"), q.buffer] if self._gru else
                         [None, None, arrays["theta_s"], arrays.get("W_s"), q.buffer])
            elif self._lstm:
                packed = self._pack(l, arrays, tracked, checks)
                order = [arrays["W_x"], arrays["W_v"], arrays["b"],
                         arrays.get("w_s", arrays.get("W_s")), arrays.get("W_qv"),
                         None if packed is None else packed.buffer]
            elif self._gru:
                order = [arrays["W_x"], arrays["W_h"], arrays["b"], arrays.get("b_hn")]
            else:
                order = [arrays["W_x"], arrays["W_r"], arrays["theta_s"], arrays.get("W_s")]
            self._set_weights(l, order)
            cells.append(arrays)
        self._cells = cells       # what the cells point at (kept alive; step_many reads it)
        self._set_checks(checks, VERSION, seen)
        self._watch([] if self._snapshot else [(layer, params, watched)])

    def _pack(self, l: int, arrays: dict, tracked: dict, checks: list) -> Optional[Any]:
        """Cell l's forward weights packed once for the micro-kernel (None with full
        peepholes, whose cells run on the BLAS, and with a kernel that packs in
        every call: the cells then read the weights in place). A live stream
        compares the packed arrays with copies: write-tracked ones (the layer's
        own arrays) when a write through a tracked array happened since the last
        step, the others before every step."""
        if self.layer.peepholes == "full" or not hasattr(_kernel, "PackedWeights"):
            self._packed[l] = None
            return None
        cfg = self.layer._cell_config(1, self.batch, self.layer._cell_input_size(l), None, False)
        names = ["W_x", "W_v"] + (["W_qv"] if "W_qv" in arrays else [])
        self._packed[l] = _kernel.PackedWeights(cfg, **{n: flat(arrays[n]) for n in names})
        if not self._snapshot:
            checks.extend((arrays[n], np.array(arrays[n]), tracked[n]) for n in names)
        return self._packed[l]

    # -- the public API ----------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.layer.dtype

    def __repr__(self) -> str:
        return (f"Stream({self.layer!r}, batch={self.batch}, delay={self.delay}, "
                f"frames_in={self.frames_in})")

    @property
    def state(self) -> Any:
        """The state after the last output step (copies): a State like forward's."""
        cur = self.cur
        s = np.stack([h[cur] for h in self._s])
        o = np.stack([h[cur] for h in self._o])
        if self._gru:
            return self.layer.State(o)
        if not self._lstm:
            return self.layer.State(s, o)
        x_past = None
        if self._L_past:
            start = self._K - self._L_past - min(self.frames_in, self._L_future)
            x_past = np.ascontiguousarray(self._win[:, start:start + self._L_past].transpose(1, 0, 2))
        return self.layer.State(s, o, x_past)

    def reset(self, rows: Any = None) -> None:
        """Zero the state of `rows` (None: every row, and the delay starts again)."""
        self._reset(rows, 0)

    def _reset(self, rows: Any, upstream_hold: int) -> int:
        """Reset rows; `upstream_hold` frames of zeros still come for them from the
        layers before this one in a Sequential. Returns the steps these rows hold."""
        self._enter()
        try:
            cur = self.cur
            if rows is None:
                for h in (*self._s, *self._o):
                    h[cur][...] = 0
                if self._win is not None:
                    self._win[...] = 0
                self._clear()
                return 0
            idx = _row_index(rows, self.batch)
            for h in (*self._s, *self._o):
                h[cur][idx] = 0
            if self._win is not None:
                self._win[idx] = 0
            hold = min(self.delay, self.frames_in) + upstream_hold
            self._set_hold(idx.tolist(), hold)
            return hold
        finally:
            self._leave()

    def flush(self) -> np.ndarray:
        """End the sequence: zero frames beyond it (as forward) give the outputs still
        due, (n, B, R) with n = min(delay, frames received). The next frame starts a
        new sequence from `state`."""
        B, I, R, K, L_past = self.batch, self.input_size, self.output_size, self._K, self._L_past
        outs: List[np.ndarray] = []
        self._enter()
        try:
            if self.delay:
                past = self._win[:, K - L_past:].copy() if L_past else None
                zero = np.zeros((B, I), self.dtype)
                for _ in range(self.delay):
                    y = self._step_held(zero)
                    if y is not None:
                        outs.append(y)
                self._win[...] = 0
                if past is not None:
                    self._win[:, K - L_past:] = past
            self._clear()
        finally:
            self._leave()
        return np.stack(outs) if outs else np.zeros((0, B, R), self.dtype)

    def step_many(self, chunk: Any) -> np.ndarray:
        """Take T frames (T, B, I) (batch_first: (B, T, I)) and return the outputs of
        the steps they complete (T', B, R) (batch_first: (B, T', R)); T' = T without
        a look-ahead. One kernel call per cell for the whole chunk."""
        bf = self.layer.batch_first
        y = self._step_many_tm(_chunk(chunk, "chunk", self.dtype, self.input_size, self.batch, bf))
        return y.transpose(1, 0, 2) if bf else y

    def _step_many_tm(self, x: np.ndarray) -> np.ndarray:
        """step_many on a time-major contiguous chunk, time-major outputs."""
        outs: List[np.ndarray] = []
        t = 0
        self._enter()
        try:
            while t < x.shape[0] and self.rows_holding:  # holds end inside: frame by frame
                y = self._step_held(x[t])
                t += 1
                if y is not None:
                    outs.append(y[None])
            if t < x.shape[0]:
                outs.append(self._chunk_steps(x[t:]))
        finally:
            self._leave()
        return np.concatenate(outs) if outs else np.zeros((0, self.batch, self.output_size),
                                                          self.dtype)

    def _chunk_steps(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        self._check_weights()
        T, B, I = x.shape
        K, L_future = self._K, self._L_future
        if K > 1:
            ext = np.concatenate([self._win[:, 1:].transpose(1, 0, 2), x])  # (K-1+T, B, I)
            skip = max(0, min(T, L_future - self.frames_in))  # frames whose step is not due
            n = T - skip
            inp = np.empty((n, B, K * I), self.dtype)
            for k in range(K):
                inp[:, :, k * I:(k + 1) * I] = ext[skip + k:skip + k + n]
            self._win[:, 1:] = ext[-(K - 1):].transpose(1, 0, 2)
        else:
            inp, n = x, T
        self.frames_in += T
        if n == 0:
            return np.zeros((0, B, self.output_size), self.dtype)
        cur, nxt = self.cur, 1 - self.cur
        for l in range(layer.num_layers):
            I_l = inp.shape[2]
            cfg = layer._cell_config(n, B, I_l, None, False)
            y = aligned_empty(n * B * self.output_size, self.dtype).reshape(n, B, self.output_size)
            work = aligned_empty(max(cfg.sizes()[2], 1), self.dtype)
            p = self._cells[l]
            x_l = np.ascontiguousarray(inp)
            if self._lstm and self._packed[l] is not None:
                _kernel.lstm_forward(cfg, y_seq=flat(y), s_T=flat(self._s[l][nxt]),
                                     y_T=flat(self._o[l][nxt]), acts=None, work=work, x=flat(x_l),
                                     s0=flat(self._s[l][cur]), y0=flat(self._o[l][cur]),
                                     W_x=flat(p["W_x"]), W_v=flat(p["W_v"]), b=flat(p["b"]),
                                     W_s=flat(p.get("w_s")), W_qv=flat(p.get("W_qv")),
                                     packed=self._packed[l])
            else:
                layer._kernel_forward(cfg, y, self._s[l][nxt], self._o[l][nxt], None, work,
                                      x_l, self._s[l][cur], self._o[l][cur], p)
            inp = y
        self.cur = nxt
        return inp


class LinearStream:
    """A stream over an `fr.Linear`: y = frame W^T + b per frame (no state)."""

    delay = 0

    def __init__(self, layer: Any, batch: int, state: Any = None, weights: str = "live") -> None:
        if state is not None:
            raise ValueError("state must be None: a Linear layer has no state")
        self.layer = layer
        self._snapshot: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None
        self.batch = V.positive_int(batch, "batch")
        self.dtype = layer.dtype
        self.input_size, self.output_size = layer.in_features, layer.out_features
        self._hold = np.zeros(self.batch, np.int64)
        self.frames_in = 0
        self._lock = threading.Lock()
        _LIVE.add(self)
        if _weights_mode(weights):
            W, b = self._weights()
            self._snapshot = (W.copy(), None if b is None else b.copy())

    def __repr__(self) -> str:
        return f"LinearStream({self.layer!r}, batch={self.batch})"

    @property
    def state(self) -> None:
        return None

    def _weights(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        if self._snapshot is not None:
            return self._snapshot
        p, L = self.layer.params, self.layer
        W = V.parameter(p, "W", L.dtype, (L.out_features, L.in_features))
        b = V.parameter(p, "b", L.dtype, (L.out_features,)) if L.bias else None
        return W, b

    def _check(self, a: Any, name: str, cols: int) -> None:
        if not (type(a) is np.ndarray and a.dtype == self.dtype and a.shape == (self.batch, cols)
                and a.flags.c_contiguous):
            want = f"a C-contiguous NumPy array of shape ({self.batch}, {cols}) and dtype {self.dtype}"
            got = (f"shape {a.shape}, dtype {a.dtype}" if isinstance(a, np.ndarray)
                   else type(a).__name__)
            err = ValueError if isinstance(a, np.ndarray) and a.dtype == self.dtype else TypeError
            raise err(f"{name} must be {want}, got {got}")

    def step(self, frame: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """frame (B, in_features) -> (B, out_features): a new array, or `out` filled."""
        if not self._lock.acquire(blocking=False):
            _refuse()
        try:
            return self._step_held(frame, out)
        finally:
            self._lock.release()

    def _leave(self) -> None:
        self._lock = threading.Lock()

    def _step_held(self, frame: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        self._check(frame, "frame", self.input_size)
        if out is None:
            out = np.empty((self.batch, self.output_size), self.dtype)
        else:
            self._check(out, "out", self.output_size)
            if np.may_share_memory(out, frame):
                raise ValueError("out must not overlap frame")
        W, b = self._weights()
        np.matmul(frame, W.T, out=out)
        if b is not None:
            out += b
        if self._hold.any():
            held = self._hold > 0
            out[held] = 0
            self._hold[held] -= 1
        self.frames_in += 1
        return out

    def step_many(self, chunk: Any) -> np.ndarray:
        """(T, B, in_features) -> (T, B, out_features)."""
        return self._step_many_tm(_chunk(chunk, "chunk", self.dtype, self.input_size,
                                         self.batch, False))

    def _step_many_tm(self, x: np.ndarray) -> np.ndarray:
        with _in_use(self._lock):
            return np.stack([self._step_held(f) for f in x]) if len(x) else \
                np.zeros((0, self.batch, self.output_size), self.dtype)

    def flush(self) -> np.ndarray:
        with _in_use(self._lock):
            self.frames_in = 0
            self._hold[...] = 0
            return np.zeros((0, self.batch, self.output_size), self.dtype)

    def reset(self, rows: Any = None) -> None:
        self._reset(rows, 0)

    def _reset(self, rows: Any, upstream_hold: int) -> int:
        with _in_use(self._lock):
            if rows is None:
                self._hold[...] = 0
                self.frames_in = 0
                return 0
            self._hold[_row_index(rows, self.batch)] = upstream_hold
            return upstream_hold


class SequentialStream:
    """A stream over an `fr.Sequential` of LSTM, RNN and Linear layers: each frame
    goes through every layer's stream; the delays of the layers add up."""

    def __init__(self, model: Any, batch: int, state: Optional[Sequence[Any]] = None,
                 weights: str = "live") -> None:
        _weights_mode(weights)
        states = model._per_layer(state, "state")
        dtypes = {np.dtype(l.dtype) for l in model.layers}
        if len(dtypes) > 1:
            raise ValueError("the layers of a streamed Sequential must share one dtype, got "
                             f"{sorted(d.name for d in dtypes)}")
        self.model = model
        self.batch = V.positive_int(batch, "batch")
        self.stages: List[Any] = []
        for i, (layer, st) in enumerate(zip(model.layers, states)):
            if not hasattr(layer, "stream"):
                raise TypeError(f"layer {i} ({type(layer).__name__}) cannot stream: a streamed "
                                "Sequential takes fr.LSTM, fr.RNN, fr.GRU and fr.Linear layers")
            self.stages.append(layer.stream(self.batch, state=st, weights=weights))
        for i, (a, b) in enumerate(zip(self.stages, self.stages[1:])):
            if a.output_size != b.input_size:
                raise ValueError(f"layer {i} outputs {a.output_size} features, layer {i + 1} "
                                 f"takes {b.input_size}")
        # the outputs of the stages below the top, reused every step
        self._bufs = [np.empty((self.batch, s.output_size), s.dtype) for s in self.stages[:-1]]
        self.dtype = self.stages[0].dtype
        self.input_size, self.output_size = self.stages[0].input_size, self.stages[-1].output_size
        self._lock = threading.Lock()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"SequentialStream(batch={self.batch}, delay={self.delay}, stages={len(self.stages)})"

    @property
    def delay(self) -> int:
        """Frames between a frame and its output: the sum of the layers' delays."""
        return sum(s.delay for s in self.stages)

    @property
    def state(self) -> List[Any]:
        """One state per layer (None for Linear), as Sequential.forward returns."""
        return [s.state for s in self.stages]

    def step(self, frame: np.ndarray, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """frame (B, I) -> (B, F_out), or None while the delay is not over."""
        if not self._lock.acquire(blocking=False):
            _refuse()
        try:
            h: Optional[np.ndarray] = frame
            last = len(self.stages) - 1
            for i, s in enumerate(self.stages):
                h = s.step(h, out=out if i == last else self._bufs[i])
                if h is None:
                    return None
            return h
        finally:
            self._lock.release()

    def _leave(self) -> None:
        self._lock = threading.Lock()

    def step_many(self, chunk: Any) -> np.ndarray:
        """(T, B, I) (batch_first: (B, T, I)) -> (T', B, F_out): each layer's
        step_many in turn."""
        bf = self.model.batch_first
        h = _chunk(chunk, "chunk", self.dtype, self.input_size, self.batch, bf)
        with _in_use(self._lock):
            for s in self.stages:
                h = s._step_many_tm(h)
        return h.transpose(1, 0, 2) if bf else h

    def flush(self) -> np.ndarray:
        """End the sequence; returns the outputs still due (n, B, F_out)."""
        h: Optional[np.ndarray] = None
        with _in_use(self._lock):
            for s in self.stages:
                parts = [] if h is None or len(h) == 0 else [s._step_many_tm(h)]
                parts.append(s.flush())
                h = np.concatenate(parts)
        assert h is not None
        return h

    def reset(self, rows: Any = None) -> None:
        """Zero the state of rows (None: all, the delay starts again) in every layer."""
        hold = 0
        with _in_use(self._lock):
            for s in self.stages:
                hold = s._reset(rows, hold)
