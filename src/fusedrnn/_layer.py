"""What the LSTM and the canonical RNN layers share: parameters and gradients,
state handling, input conversion, and the forward/backward bookkeeping around
the C kernel calls (the math lives in csrc/ and, for reading, in reference.py)."""
from __future__ import annotations

import threading
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from . import _validate as V


def flat(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A 1-D view of a C-contiguous array (what the bindings take), None stays None."""
    return None if a is None else a.reshape(-1)


class Tape(NamedTuple):
    """What a training forward keeps for the backward (all time-major, C-contiguous)."""

    x: np.ndarray       # (T, B, I) input, private copy
    y: np.ndarray       # (T, B, H) outputs (the recurrent feedback of the next step)
    s0: np.ndarray      # (B, H) initial state s[-1]
    o0: np.ndarray      # (B, H) initial output v[-1] (LSTM) or r[-1] (RNN)
    acts: np.ndarray    # activation store of the kernel
    params: Dict[str, np.ndarray]  # the weights the forward used


class RecurrentLayer:
    """Base of `LSTM` and `RNN`. Subclasses define `State`, `_param_shapes`,
    `_kernel_forward` and `_kernel_backward`.

    Threads: one layer may be shared by several threads. The activations of a
    training forward are kept per thread, so `backward` pairs with the same
    thread's last training forward, and the accumulation into `grads` is
    serialised by a per-layer lock. Calls on different layers run in parallel
    (the kernel releases the GIL)."""

    State: Any  # a NamedTuple type with two fields: s and the output (v or r)

    def __init__(self, input_size: int, hidden_size: int, *, dtype: Any = np.float32,
                 batch_first: bool = False, seed: Optional[int] = None) -> None:
        self.input_size = V.positive_int(input_size, "input_size")
        self.hidden_size = V.positive_int(hidden_size, "hidden_size")
        self.dtype = V.as_dtype(dtype)
        self.batch_first = bool(batch_first)
        rng = np.random.default_rng(seed)
        # PyTorch's initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).
        k = 1.0 / np.sqrt(self.hidden_size)
        self.params: Dict[str, np.ndarray] = {
            name: rng.uniform(-k, k, size=shape).astype(self.dtype)
            for name, shape in self._param_shapes().items()
        }
        self.grads: Dict[str, np.ndarray] = {
            name: np.zeros_like(p) for name, p in self.params.items()
        }
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._local = threading.local()  # .tape: this thread's last training forward
        self._grad_lock = threading.Lock()

    def __getstate__(self) -> dict:
        # copies and pickles carry configuration and parameters, not activations
        state = self.__dict__.copy()
        del state["_local"], state["_grad_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    @property
    def _tape(self) -> Optional[Tape]:
        return getattr(self._local, "tape", None)

    @_tape.setter
    def _tape(self, tape: Optional[Tape]) -> None:
        self._local.tape = tape

    # -- to be provided by subclasses ---------------------------------------------
    def _param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        raise NotImplementedError

    def _kernel_forward(self, y, s_T, o_T, acts, x, s0, o0, p, T, B):  # pragma: no cover
        raise NotImplementedError

    def _kernel_backward(self, dx, ds0, do0, dy, ds_T, do_T, tape, T, B):  # pragma: no cover
        raise NotImplementedError

    def _sizes(self, T: int, B: int) -> Tuple[int, int, int, int]:  # pragma: no cover
        raise NotImplementedError

    # -- public API ---------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every gradient buffer to zero (backward accumulates into them)."""
        for g in self.grads.values():
            g[...] = 0

    def initial_state(self, batch: int) -> Any:
        """A zero state for `batch` rows: each field (1, B, H)."""
        shape = (1, V.positive_int(batch, "batch"), self.hidden_size)
        return self.State(*(np.zeros(shape, self.dtype) for _ in self.State._fields))

    def forward(self, x: Any, state: Any = None, training: bool = True) -> Tuple[np.ndarray, Any]:
        """Run the layer over a sequence.

        x: (T, B, I), or (B, T, I) with batch_first; any real array-like, cast to
        the layer dtype. state: a State (or a 2-tuple) of (1, B, H) arrays, or None
        for zeros. Returns y (T, B, H) (or (B, T, H)) and the final State.

        training=True stores the activations the backward needs; the returned y
        is then read-only because the backward reads it (copy it to modify it).
        training=False stores nothing and forbids backward until the next
        training forward."""
        self._tape = None
        xt = V.sequence(x, "x", self.dtype, self.input_size, self.batch_first)
        T, B, _ = xt.shape
        s0, o0 = self._state_in(state, B)
        p = self._checked_params()
        n_acts, n_work_train, n_work_infer, _ = self._sizes(T, B)
        y = np.empty((T, B, self.hidden_size), self.dtype)
        s_T = np.empty((1, B, self.hidden_size), self.dtype)
        o_T = np.empty((1, B, self.hidden_size), self.dtype)
        acts = np.empty(n_acts, self.dtype) if training else None
        work = np.empty(n_work_train if training else n_work_infer, self.dtype)
        self._kernel_forward(y, s_T, o_T, acts, work, xt, s0, o0, p, T, B)
        if training:
            self._tape = Tape(V.private_copy(xt, x), y, V.private_copy(s0, _field(state, 0)),
                              V.private_copy(o0, _field(state, 1)), acts, p)
            y = y.view()
            y.flags.writeable = False
        return self._out(y), self.State(s_T, o_T)

    def backward(self, dy: Any = None, dstate: Any = None) -> Tuple[np.ndarray, Any]:
        """Back-propagate through the last training forward.

        dy: dE/dy with the shape of y (None: zero). dstate: a State of (1, B, H)
        gradients with respect to the final state, entries may be None.
        Accumulates (+=) into `grads`; returns dx (shaped like x) and the State of
        gradients with respect to the initial state. Pairs with this thread's
        last training forward; may be called more than once (it accumulates)."""
        tape = self._tape
        if tape is None:
            raise ValueError("backward() needs a preceding forward(x, training=True); the last "
                             "forward was an inference call or there was none")
        T, B, _ = tape.x.shape
        H = self.hidden_size
        dyt = None if dy is None else V.sequence(dy, "dy", self.dtype, H, self.batch_first,
                                                 batch=B, steps=T)
        ds_T = do_T = None
        if dstate is not None:
            names = self.State._fields
            if len(dstate) != 2:
                raise ValueError(f"dstate must be a {type(self).__name__} state ({names[0]}, {names[1]})")
            ds_T, do_T = (None if d is None else V.state_part(d, f"dstate.{n}", self.dtype, (1, B, H))
                          for n, d in zip(names, dstate))
        dx = np.zeros((T, B, self.input_size), self.dtype)
        ds0 = np.zeros((1, B, H), self.dtype)
        do0 = np.zeros((1, B, H), self.dtype)
        with self._grad_lock:  # += into the shared grads
            grads = self._checked_grads()
            self._kernel_backward(dx, ds0, do0, dyt, ds_T, do_T, tape, grads, T, B)
        return self._out(dx), self.State(ds0, do0)

    # -- helpers --------------------------------------------------------------------
    def _out(self, seq: np.ndarray) -> np.ndarray:
        return seq.transpose(1, 0, 2) if self.batch_first else seq

    def _state_in(self, state: Any, B: int) -> Tuple[np.ndarray, np.ndarray]:
        shape = (1, B, self.hidden_size)
        if state is None:
            return np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)
        names = self.State._fields
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(f"state must be a {self.State.__name__} ({names[0]}, {names[1]}) or None, "
                            f"got {type(state).__name__}")
        return tuple(V.state_part(a, f"state.{n}", self.dtype, shape)  # type: ignore[return-value]
                     for n, a in zip(names, state))

    def _checked_params(self) -> Dict[str, np.ndarray]:
        return {k: V.parameter(self.params, k, self.dtype, shape)
                for k, shape in self._param_shapes().items()}

    def _checked_grads(self) -> Dict[str, np.ndarray]:
        grads = {k: V.parameter(self.grads, k, self.dtype, shape)
                 for k, shape in self._param_shapes().items()}
        for k, g in grads.items():
            if g is not self.grads[k] or not g.flags.writeable:
                raise ValueError(f"grads[{k!r}] must be a writeable C-contiguous array "
                                 "(backward accumulates into it in place)")
        return grads


def _field(state: Any, i: int) -> Any:
    return None if state is None else state[i]
