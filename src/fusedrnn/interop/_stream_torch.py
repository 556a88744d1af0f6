"""`module.stream(batch)` for the `fusedrnn.torch` modules: the NumPy stream
(fusedrnn.stream) on numpy views of the module's Parameters, with torch tensors
in and out (CPU, no copy) and torch's state order ((h, c) for the LSTM, h for
the GRU)."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np
import torch

from ..core.gru import GRUState
from ..core.lstm import LSTMState
from ..core.rnn import RNNState

Tensor = torch.Tensor


class TorchStream:
    """A stream over a `fusedrnn.torch.LSTM`, `RNN` or `GRU` (inference): step(frame)
    with frame a CPU tensor (B, I) of the module's dtype returns a tensor (B, R)
    that shares memory with a new NumPy array, or fills `out`. The stream reads
    the Parameters' storage in place (an optimiser step is used from the next
    step on); a replaced Parameter or `.data` is noticed and used. With
    weights="snapshot" the stream uses a copy of the weights taken when it is
    made.

    state: LSTM (h, c), or (h, c, x_past) with a past context window; RNN (h, s);
    GRU a tensor h.
    The other methods (step_many, flush, reset, delay) are those of
    `fusedrnn.stream.Stream`, with tensors."""

    def __init__(self, module: Any, batch: int, state: Any = None, weights: str = "live") -> None:
        ws, dtype = module._weights()
        self.module = module
        self.dtype = dtype
        self._names = tuple(module._names)
        self._held: List[Tuple[str, Tensor, int]] = [
            (n, w, w.data_ptr()) for n, w in zip(self._names, ws)]
        self._layer = module.fr_layer            # params: numpy views of the Parameters
        self._lstm = isinstance(self._layer, _lstm_class())
        self._gru = self._layer.State is GRUState
        self._np = self._layer.stream(batch, self._np_state(state, batch), weights=weights)
        if weights == "snapshot":
            self._held = []   # the NumPy stream holds its copy: nothing to follow
        self.batch = self._np.batch
        self._in_shape = (self.batch, self._np.input_size)
        self._out_shape = (self.batch, self._np.output_size)
        self._from_numpy = torch.from_numpy

    # -- state in torch's order -------------------------------------------------------
    def _np_state(self, state: Any, batch: int) -> Any:
        if state is None:
            return None
        m, dt = self.module, self.dtype
        H, R = m.hidden_size, getattr(m, "proj_size", 0) or m.hidden_size
        as_np = lambda t: t.detach().numpy()
        if self._lstm:
            if not isinstance(state, (tuple, list)) or len(state) not in (2, 3):
                raise ValueError("state must be None, (h0, c0), or (h0, c0, x_past) with a past "
                                 "context window")
            h0 = m._state_part(state[0], "h0", dt, R, batch, False)
            c0 = m._state_part(state[1], "c0", dt, H, batch, False)
            x_past = None
            if len(state) == 3:
                x_past = as_np(state[2])
            return LSTMState(as_np(c0), as_np(h0), x_past)
        if self._gru:
            if not isinstance(state, torch.Tensor):
                raise TypeError(f"state must be None or a tensor h0, got {type(state).__name__}")
            return GRUState(as_np(m._state_part(state, "h0", dt, H, batch, False)))
        if isinstance(state, torch.Tensor):
            h0 = m._state_part(state, "h0", dt, H, batch, False)
            r0 = as_np(h0)
            return RNNState(np.zeros_like(r0), r0)
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError("state must be None, a tensor h0 or a tuple (h0, s0)")
        h0 = m._state_part(state[0], "h0", dt, H, batch, False)
        s0 = m._state_part(state[1], "s0", dt, H, batch, False)
        return RNNState(as_np(s0), as_np(h0))

    @property
    def state(self) -> Any:
        """LSTM: (h, c) (+ x_past with a past context window); RNN: (h, s); GRU: h;
        copies."""
        st = self._np.state
        if self._gru:
            return torch.from_numpy(st.h)
        if self._lstm:
            out = (torch.from_numpy(st.v), torch.from_numpy(st.s))
            return out + ((torch.from_numpy(st.x_past),) if st.x_past is not None else ())
        return torch.from_numpy(st.r), torch.from_numpy(st.s)

    @property
    def delay(self) -> int:
        return self._np.delay

    @property
    def frames_in(self) -> int:
        return self._np.frames_in

    def __repr__(self) -> str:
        return f"TorchStream({type(self.module).__name__}, batch={self.batch}, delay={self.delay})"

    # -- weights ------------------------------------------------------------------------
    def _check_weights(self) -> None:
        params = self.module._parameters
        for name, w, ptr in self._held:
            if params.get(name) is not w or w.data_ptr() != ptr:
                self._rebind()
                return

    def _rebind(self) -> None:
        for name in self._names:
            w = self.module._parameters.get(name)
            if w is None:
                raise ValueError(f"the module has no parameter {name!r} any more")
            if w.dtype != self.dtype or w.device.type != "cpu":
                raise ValueError(f"parameter {name!r} is now {w.dtype} on {w.device}; this stream "
                                 f"computes in {self.dtype} on the CPU: make a new stream")
        ws, _ = self.module._weights()
        self._layer.params = {n: w.detach().numpy() for n, w in zip(self._names, ws)}
        self._held = [(n, w, w.data_ptr()) for n, w in zip(self._names, ws)]

    # -- frames ---------------------------------------------------------------------------
    def _checked(self, t: Any, name: str, shape: Tuple[int, int]) -> int:
        """The data address of a contiguous CPU tensor of the stream's dtype and shape."""
        if type(t) is not torch.Tensor or t.dtype is not self.dtype or not t.is_cpu \
                or t.layout is not torch.strided or t.shape != shape or not t.is_contiguous():
            self._bad(t, name, shape[1])
        return int(t.data_ptr())

    def _bad(self, t: Any, name: str, width: int) -> None:
        want = (f"a contiguous CPU tensor of shape ({self.batch}, {width}) and dtype "
                f"{self.dtype}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be {want}, got {type(t).__name__}")
        if t.dtype != self.dtype:
            raise TypeError(f"{name} must be {want}, got dtype {t.dtype} (the stream does not "
                            f"cast: convert with {name}.to({self.dtype}))")
        if t.device.type != "cpu":
            raise ValueError(f"{name} must be {want}, got a tensor on {t.device}")
        if t.layout != torch.strided:
            raise ValueError(f"{name} must be {want}, got layout {t.layout}")
        if tuple(t.shape) != (self.batch, width):
            raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
        raise ValueError(f"{name} must be {want}, got a non-contiguous tensor "
                         f"(pass {name}.contiguous())")

    def step(self, frame: Tensor, out: Optional[Tensor] = None) -> Optional[Tensor]:
        """frame (B, I) -> (B, R) (None while a look-ahead waits): a new tensor, or
        `out` (a contiguous CPU tensor (B, R)) filled in place."""
        params = self.module._parameters
        for name, w, ptr in self._held:
            if params.get(name) is not w or w.data_ptr() != ptr:
                self._rebind()
                break
        np_ = self._np
        fp = self._checked(frame, "frame", self._in_shape)
        if not np_.due:
            return np_._step_at(fp, None, 0)
        if out is None:
            return self._from_numpy(np_._step_at(fp, None, 0))
        return np_._step_at(fp, out, self._checked(out, "out", self._out_shape))

    def step_many(self, chunk: Tensor) -> Tensor:
        """(T, B, I) (batch_first: (B, T, I)) -> the outputs of the steps it completes."""
        self._check_weights()
        if not isinstance(chunk, torch.Tensor) or chunk.device.type != "cpu":
            raise TypeError(f"chunk must be a CPU tensor of dtype {self.dtype}")
        if chunk.dtype != self.dtype:
            raise TypeError(f"chunk must have dtype {self.dtype} (the stream does not cast), "
                            f"got {chunk.dtype}")
        return torch.from_numpy(np.ascontiguousarray(self._np.step_many(chunk.detach().numpy())))

    def flush(self) -> Tensor:
        """End the sequence: the outputs still due (n, B, R)."""
        self._check_weights()
        return torch.from_numpy(self._np.flush())

    def reset(self, rows: Any = None) -> None:
        """Zero the state of rows (None: all; see fusedrnn.stream.Stream.reset)."""
        if isinstance(rows, torch.Tensor):
            rows = rows.detach().cpu().numpy()
        self._np.reset(rows)


def _lstm_class() -> type:
    from ..core.lstm import LSTM
    return LSTM
