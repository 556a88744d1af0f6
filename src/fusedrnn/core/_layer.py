"""What the LSTM and the canonical RNN share: a network of kernel cells
(`num_layers` x directions), its parameters and gradients, state handling,
variable lengths, dropout between layers, input conversion, and the
forward/backward bookkeeping around the C kernel calls. The math lives in
csrc/ and, for reading, in reference.py.

A cell is one layer in one direction. Its parameters are stored under the
base name plus a suffix: "" for layer 0 forward, "_reverse" for layer 0
reverse, "_l1", "_l1_reverse" for layer 1, ... (PyTorch's scheme)."""
from __future__ import annotations

import threading
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from . import _threads
from .. import _kernel, _tuning
from ._scratch import ALIGN, ScratchPool, aligned_empty
from ._tracked import VERSION, is_tracked, track_all
from . import _validate as V

# Far beyond any trained stack; bounds the per-layer Python bookkeeping.
MAX_LAYERS = 1024
# A flat tape (`forward_with_tape`) starts with these integers, then B lengths.
# Each integer n is stored as the two values n // 2**20 and n % 2**20, exact in
# float32 and float64 for every n < 2**44.
TAPE_HEADER = ("format", "steps", "batch", "has_lengths", "has_masks", "input_size",
               "hidden_size", "output_size", "num_layers", "num_directions")
TAPE_FORMAT = 0x46524E01
_SPLIT = 2**20
# An inference call of at most this many rows (steps x batch) on the micro-kernel keeps its
# cells' packed weights for the next call (the pack costs about one pass over the weights,
# the call T x B of them: a few per cent of a call at T B = 100, nothing measurable beyond).
PACKED_MAX_ROWS = 4096
# Kernel configurations kept per layer (one per call size seen, the oldest dropped).
MAX_CONFIGS = 16


def flat(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A 1-D view of a C-contiguous array (what the bindings take), None stays None."""
    return None if a is None else a.reshape(-1)


def suffix(layer: int, direction: int) -> str:
    """Parameter-name suffix of a cell: "", "_reverse", "_l1", "_l1_reverse", ..."""
    return ("" if layer == 0 else f"_l{layer}") + ("_reverse" if direction else "")


def _into(region: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Copy a into a same-shaped region of a flat tape and return the region."""
    np.copyto(region, a)
    return region


def _encode(ints: List[int]) -> np.ndarray:
    n = np.asarray(ints, dtype=np.int64)
    return np.stack([n // _SPLIT, n % _SPLIT], axis=1).reshape(-1)


def _decode(vals: np.ndarray) -> Optional[np.ndarray]:
    """The integers of `_encode`, or None when vals cannot be such a header."""
    pairs = vals.reshape(-1, 2)
    if not (np.all(np.isfinite(pairs)) and np.all(pairs == np.floor(pairs)) and pairs.min() >= 0
            and pairs[:, 1].max() < _SPLIT and pairs[:, 0].max() < _SPLIT ** 2):
        return None
    return pairs[:, 0].astype(np.int64) * _SPLIT + pairs[:, 1].astype(np.int64)


class CellTape(NamedTuple):
    """What a training forward keeps of one cell for the backward."""

    x: np.ndarray       # (T, B, I_l) the cell's input, private
    y: np.ndarray       # (T, B, R) outputs = recurrent carry (padding holds the state)
    s0: np.ndarray      # (B, H) initial state
    o0: np.ndarray      # (B, R) initial output / feedback
    acts: np.ndarray    # the kernel's activation store
    params: Dict[str, np.ndarray]  # base name -> the weights the forward used
    config: Any         # the kernel configuration of the call


class Tape(NamedTuple):
    cells: List[CellTape]               # index layer * D + direction
    masks: List[Optional[np.ndarray]]   # dropout masks of layers 1.. (scaled), or None
    lengths: Optional[np.ndarray]
    input_size: int                     # I of the caller's x (before `_first_input`)


class ReadOnlyConfig:
    """Configuration attributes (the names in `_CONFIG`) are set once, by the
    constructor, and read-only afterwards: the parameters' shapes, the kernel
    setup and the checks made at construction follow from them. Copies, pickles
    and checkpoints carry them over."""

    _CONFIG: frozenset = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._CONFIG and self.__dict__.get("_configured", False):
            raise AttributeError(self._read_only_message(name))
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in self._CONFIG:
            raise AttributeError(self._read_only_message(name))
        object.__delattr__(self, name)

    def _read_only_message(self, name: str) -> str:
        cls = type(self).__name__
        return (f"{cls}.{name} is read-only: it is part of the layer's configuration, fixed at "
                f"construction (the parameters and the checks follow from it); build a new "
                f"layer instead, e.g. fr.{cls}(..., {name}=...), and copy the parameters over "
                "where their shapes still fit")

    def _end_configuration(self) -> None:
        """Called last by the constructor: from now on the configuration is read-only."""
        object.__setattr__(self, "_configured", True)

    def _set_config(self, **values: Any) -> None:
        """Change configuration attributes of an already built object, without
        checks: for the package's own wrappers (e.g. a module's dropout on its
        private copy of a layer), never for users."""
        for name, value in values.items():
            if name not in self._CONFIG:
                raise AttributeError(f"{name!r} is not a configuration attribute")
            object.__setattr__(self, name, value)
        self.__dict__.pop("_fixed", None)  # what followed from the old configuration

    def _fixed_once(self, name: str, make: Any) -> Any:
        """make(), computed once and kept while the configuration is read-only (what
        follows from it alone: the parameters' names and shapes); computed afresh
        before the constructor has ended."""
        if not self.__dict__.get("_configured", False):
            return make()
        fixed = self.__dict__.get("_fixed")
        if fixed is None:
            fixed = {}
            object.__setattr__(self, "_fixed", fixed)
        if name not in fixed:
            fixed[name] = make()
        return fixed[name]


class RecurrentLayer(ReadOnlyConfig):
    """Base of `LSTM` and `RNN`: a stack of `num_layers` layers, each with one or
    two directions. Subclasses define `State`, `output_size`, `_cell_param_shapes`,
    `_cell_config`, `_kernel_forward` and `_kernel_backward`.

    Threads: one layer object may be shared by several threads. The activations
    of a training forward are kept per thread, so `backward` pairs with the same
    thread's last training forward, and the accumulation into `grads` is
    serialised by a per-layer lock. Calls on different layers run in parallel
    (the kernel releases the GIL)."""

    State: Any  # NamedTuple type: its channels (below), then what a cell adds (an LSTM's x_past)
    # Every cell carries two channels between steps and calls: s (B, H), the state,
    # and o (B, R), the output fed back. The State's leading fields are these
    # channels, in this order; a cell whose state is its output (the GRU) has ("o",)
    # and its s channel is never read.
    _STATE_CHANNELS: Tuple[str, ...] = ("s", "o")
    # The input context window (L_past, L_future): none, unless a cell has one (the LSTM).
    context: Tuple[int, int] = (0, 0)
    _CONFIG = frozenset({"input_size", "hidden_size", "num_layers", "bidirectional", "dropout",
                         "dtype", "batch_first", "reverse", "context", "State", "output_size",
                         "num_directions"})
    # How the State's fields map to torch's order (the error for a plain tuple says it).
    _STATE_HINT = ""
    # The weights of a cell the kernel packs for its micro-kernel, when the cell can take
    # them packed (`_pack_weights`); none: every call packs its own.
    _PACKED: Tuple[str, ...] = ()

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, dtype: Any = np.float32,
                 batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None) -> None:
        self.input_size = V.positive_int(input_size, "input_size")
        self.hidden_size = V.positive_int(hidden_size, "hidden_size")
        self.num_layers = V.positive_int(num_layers, "num_layers", MAX_LAYERS)
        self.bidirectional = V.flag(bidirectional, "bidirectional")
        V.flag(reverse, "reverse")
        if reverse and self.bidirectional:
            raise ValueError("reverse=True is for a unidirectional layer (a bidirectional one "
                             "already runs a reverse direction): pass one of them")
        self.reverse = bool(reverse)
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout acts between layers; with num_layers=1 it has no effect",
                          UserWarning, stacklevel=3)
        self.dropout = float(dropout)
        self.dtype = V.as_dtype(dtype)
        self.batch_first = bool(batch_first)
        rng = np.random.default_rng(V.seed(seed))
        # PyTorch's initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).
        k = 1.0 / np.sqrt(self.hidden_size)
        self.params: Dict[str, np.ndarray] = {
            name: rng.uniform(-k, k, size=shape).astype(self.dtype)
            for name, shape in self._param_shapes().items()
        }
        self.grads: Dict[str, np.ndarray] = {
            name: np.zeros_like(p) for name, p in self.params.items()
        }
        track_all(self.params)  # writes counted (streams), raw writes refused
        self._dropout_rng = np.random.default_rng(rng.integers(2**63))
        self._init_runtime()
        self._end_configuration()

    def stream(self, batch: int, state: Any = None, *, weights: str = "live") -> Any:
        """A stream that runs this layer one frame at a time (inference):
        `stream.step(frame)` with frame (B, I) returns the output (B, R). state: a
        State like forward's, or None for zeros. weights: "live" (follow `params`)
        or "snapshot" (a copy taken now). See `fusedrnn.stream`."""
        from ..stream import Stream
        return Stream(self, batch, state, weights)

    # -- to be provided by subclasses ---------------------------------------------
    @property
    def output_size(self) -> int:
        """R: width of one direction's output and recurrent feedback."""
        return self.hidden_size

    def _cell_param_shapes(self, in_size: int) -> Dict[str, Tuple[int, ...]]:
        raise NotImplementedError

    def _cell_config(self, T: int, B: int, in_size: int, lengths: Optional[np.ndarray],
                     reverse: bool) -> Any:
        """The kernel configuration of one cell's call (_kernel.LSTMConfig / RNNConfig)."""
        raise NotImplementedError

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        """One cell's kernel forward on the buffers `_cell_forward` allocated; packed: the
        cell's weights from `_pack_weights` (then the call packs nothing), or None."""
        raise NotImplementedError

    def _pack_weights(self, cfg: Any, p: Dict[str, np.ndarray]) -> Any:
        """The kernel's packed forward weights of one cell (names `_PACKED`) for cfg."""
        raise NotImplementedError

    def _packed_names(self) -> Tuple[str, ...]:
        """The names of `_PACKED` this layer's cells have; () when they take no packed
        weights (the options keep them off the micro-kernel)."""
        return self._PACKED

    def _kernel_backward(self, cfg: Any, tape: CellTape, g: Dict[str, np.ndarray], work: np.ndarray,
                         dx: np.ndarray, ds0: np.ndarray, do0: np.ndarray, dy: Optional[np.ndarray],
                         ds_T: Optional[np.ndarray], do_T: Optional[np.ndarray]) -> None:
        """One cell's kernel backward, accumulating into g, dx, ds0, do0."""
        raise NotImplementedError

    # -- one cell ---------------------------------------------------------------------
    def _cell_forward(self, p: Dict[str, np.ndarray], x: np.ndarray, s0: np.ndarray,
                      o0: np.ndarray, lengths: Optional[np.ndarray], reverse: bool,
                      training: bool, y: Optional[np.ndarray] = None,
                      acts: Optional[np.ndarray] = None, held: Any = None,
                      s_T: Optional[np.ndarray] = None, o_T: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[CellTape]]:
        """Run one cell over x (T, B, I_l): outputs (T, B, R), final s (B, H) and
        output (B, R), and the tape a training forward keeps. y (T, B, R) and acts
        (the activation store) may be given (regions of a flat tape). held: (cell
        index, the `params` arrays p's packed weights come from) for an inference
        call that may use the kept packed weights, else None. s_T (B, H), o_T (B, R):
        C-contiguous arrays to write the final state into (default: new ones)."""
        T, B, I_l = x.shape
        cfg, (n_acts, n_train, n_infer, _) = self._config_of(T, B, I_l, lengths, reverse)
        packed = None if held is None else self._kept_pack(held[0], held[1], cfg, p)
        if y is None:
            y = aligned_empty(T * B * self.output_size, self.dtype).reshape(T, B, self.output_size)
        if s_T is None:
            s_T = np.empty((B, self.hidden_size), self.dtype)
        if o_T is None:
            o_T = np.empty((B, self.output_size), self.dtype)
        if acts is None and training:
            acts = aligned_empty(n_acts, self.dtype)
        if acts is not None and acts.shape != (n_acts,):
            raise RuntimeError(f"internal: the tape's activation region has {acts.shape} "
                               f"elements, the kernel needs {n_acts}")
        work = self._scratch.take(n_train if training else n_infer)
        try:
            self._kernel_forward(cfg, y, s_T, o_T, acts, work, x, s0, o0, p, packed)
        finally:
            self._scratch.give(work)
        tape = CellTape(x, y, s0, o0, acts, p, cfg) if acts is not None else None
        return y, s_T, o_T, tape

    def _config_of(self, T: int, B: int, I_l: int, lengths: Optional[np.ndarray],
                   reverse: bool) -> Tuple[Any, Tuple[int, int, int, int]]:
        """`_cell_config(...)` and its `sizes()`; without lengths kept for the next calls
        of these sizes (a config is read-only; its thread cap is part of the key)."""
        if lengths is not None:
            cfg = self._cell_config(T, B, I_l, lengths, reverse)
            return cfg, cfg.sizes()
        key = (T, B, I_l, reverse, _threads.kernel_threads())
        hit = self._configs.get(key)
        if hit is None:
            cfg = self._cell_config(T, B, I_l, None, reverse)
            hit = (cfg, cfg.sizes())
            if len(self._configs) >= MAX_CONFIGS:
                self._configs.clear()
            self._configs[key] = hit
        return hit

    def _kept_pack(self, i: int, held: Tuple[np.ndarray, ...], cfg: Any,
                   p: Dict[str, np.ndarray]) -> Any:
        """Cell i's packed weights, kept from an earlier call while the tracking proves
        its arrays unchanged: the same objects in `params` (`held`), every one
        write-tracked, and no tracked write since the pack (`VERSION`); packed again
        otherwise. None (the call packs for itself) while a tracked write is under way
        or when an array is not tracked. Several threads may pack at once: each
        stores a complete entry, any of them valid."""
        version = int(VERSION[0])
        hit = self._packs.get(i)
        tracked = all(is_tracked(a) for a in held)
        if (hit is not None and tracked and hit[0] == version and len(hit[1]) == len(held)
                and all(a is b for a, b in zip(hit[1], held))):
            return hit[2]
        if not tracked or version % 2:  # an untracked array, or a write in progress
            self._packs.pop(i, None)
            return None
        packed = self._pack_weights(cfg, p)
        self._packs[i] = (version, held, packed)
        return packed

    def _cell_backward(self, tape: CellTape, g: Dict[str, np.ndarray], dx: np.ndarray,
                       ds0: np.ndarray, do0: np.ndarray, dy: Optional[np.ndarray],
                       ds_T: Optional[np.ndarray], do_T: Optional[np.ndarray]) -> None:
        work = self._scratch.take(tape.config.sizes()[3])
        try:
            self._kernel_backward(tape.config, tape, g, work, dx, ds0, do0, dy, ds_T, do_T)
        finally:
            self._scratch.give(work)

    # -- structure ------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _cell_input_size(self, layer: int) -> int:
        if layer > 0:
            return self.num_directions * self.output_size
        return self._first_input_size()

    def _param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        shapes: Dict[str, Tuple[int, ...]] = {}
        for l in range(self.num_layers):
            for d in range(self.num_directions):
                for name, shape in self._cell_param_shapes(self._cell_input_size(l)).items():
                    shapes[name + suffix(l, d)] = shape
        return shapes

    def _init_runtime(self) -> None:
        self._local = threading.local()  # .tape: this thread's last training forward
        self._grad_lock = _threads.lock()
        self._scratch = ScratchPool(self.dtype)  # kernel workspaces kept between calls
        # cell index -> (VERSION, the params arrays, their packed weights) of the last pack
        self._packs: Dict[int, Tuple[int, Tuple[np.ndarray, ...], Any]] = {}
        self._configs: Dict[Tuple[Any, ...], Any] = {}  # _config_of's

    def __getstate__(self) -> dict:
        # copies and pickles carry configuration and parameters, not activations
        state = self.__dict__.copy()
        for k in ("_local", "_grad_lock", "_scratch", "_packs", "_configs"):
            del state[k]
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

    # -- public API ---------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every gradient buffer to zero (backward accumulates into them);
        serialised with the accumulation of a concurrent backward."""
        with self._grad_lock:
            for g in self.grads.values():
                g[...] = 0

    def initial_state(self, batch: int) -> Any:
        """A zero state for `batch` rows: s (L*D, B, H), the output (L*D, B, R)."""
        B = V.positive_int(batch, "batch")
        LD = self.num_layers * self.num_directions
        return self._make_state(np.zeros((LD, B, self.hidden_size), self.dtype),
                                np.zeros((LD, B, self.output_size), self.dtype))

    def quantize(self, precision: str) -> Any:
        """An inference-only copy of this layer with its weight products in reduced
        precision: "bf16" (bfloat16 weights and activations, float32 sums) or "int8"
        (int8 weights with a scale per output unit, activations quantized per row at
        every step, exact integer sums). Call it as forward(x, state, training=False,
        lengths=...); see `fusedrnn.quantized` and docs/equations.md §7."""
        from .quantized import quantize
        return quantize(self, precision)

    def __call__(self, x: Any, state: Any = None, training: bool = True, lengths: Any = None,
                 x_future: Any = None) -> Tuple[np.ndarray, Any]:
        """layer(x, ...) is layer.forward(x, ...), as with torch modules."""
        return self.forward(x, state, training=training, lengths=lengths, x_future=x_future)

    def forward(self, x: Any, state: Any = None, training: bool = True, lengths: Any = None,
                x_future: Any = None) -> Tuple[np.ndarray, Any]:
        """Run the network over a sequence.

        x: (T, B, I), or (B, T, I) with batch_first; any real array-like, cast to
        the layer dtype. state: a State (`layer.State`, e.g. fr.LSTMState(s=c0,
        v=h0)) of (L*D, B, H) and (L*D, B, R) arrays (and the context frames, LSTM
        only), or None for zeros; a plain tuple is refused (TypeError), since
        torch orders the LSTM state (h, c). lengths: None or B
        integers in [0, T]: steps at or after a row's length are padding (output
        0, state held, no gradient). x_future: see `LSTM` (context windows).
        Returns y (T, B, D*R) (or (B, T, D*R)) and the final State; with lengths
        the final state of each row is the one at its own last step.

        training=True stores the activations the backward needs; the returned y
        is then read-only when it is the kernel's own buffer (copy it to modify
        it). training=False stores nothing and forbids backward until the next
        training forward.

        Memory: an inference call (training=False) of up to 4096 rows (steps x
        batch) that runs on the packed micro-kernel keeps its weights packed for
        the next such call, one extra copy of each cell's W_x and recurrent weights
        (the LSTM's W_v, W_qv; the GRU's W_h) held by the layer, about as many bytes
        as those weights. It is made again whenever a parameter may have changed (a
        write into `params`, a new array stored there, an optimiser step, loaded
        values); a parameter array the layer cannot track (e.g. a plain array stored
        with `params[k] = w`) is packed in every call, as before."""
        local = self._local  # this thread's tape (`_tape`)
        local.tape = None
        y, st, tape = self._forward(x, state, lengths, x_future, None, training,
                                    self._dropout_rng if training else None, None)
        local.tape = tape
        return y, st

    def _forward(self, x: Any, state: Any, lengths: Any, x_future: Any,
                 params: Optional[Dict[str, np.ndarray]], training: bool,
                 rng: Optional[np.random.Generator], flat_tape: Optional[np.ndarray]
                 ) -> Tuple[np.ndarray, Any, Optional[Tape]]:
        """The forward of `forward` and `forward_with_tape`: params None for
        `self.params`, rng the dropout masks' generator (None: no dropout),
        flat_tape the caller's tape buffer (None: a training forward allocates
        its own). Returns y, the final State and the Tape of a training forward."""
        xt = V.sequence(x, "x", self.dtype, self.input_size, self.batch_first)
        T, B, _ = xt.shape
        lens = V.lengths(lengths, B, T)
        s0_all, o0_all, carried = self._state_in(state, B)
        xf = self._future_in(x_future, B, state is not None, T)
        # an inference call on the micro-kernel keeps the packed weights of `params`
        names = ()
        if not training and params is None and T * B <= PACKED_MAX_ROWS:
            names = self._packed_names()
            if names and _kernel.packs_weights(T, B):
                params = dict(self.params)  # one snapshot: the checks and the pack see it
            else:
                names = ()
        p = self._checked_params(params)
        buf = None
        if flat_tape is not None:
            buf = self._tape_views(flat_tape, T, B, rng is not None)
            self._start_tape(flat_tape, buf, T, B, lens, rng is not None)
            s0_all, o0_all = _into(buf["s0"], s0_all), _into(buf["o0"], o0_all)
        inp = self._first_input(xt, carried, xf, lens)
        if buf is not None:
            inp = _into(buf["x"], inp)
        elif inp is xt and training:
            inp = V.private_copy(xt, x)
        valid = None if lens is None else (np.arange(T)[:, None] < lens[None, :])[:, :, None]
        LD = self.num_layers * self.num_directions
        s_T = np.empty((LD, B, self.hidden_size), self.dtype)
        o_T = np.empty((LD, B, self.output_size), self.dtype)
        cells: List[CellTape] = []
        masks: List[Optional[np.ndarray]] = []
        out = inp
        for l in range(self.num_layers):
            if l > 0:
                mask = self._dropout_mask(out.shape, rng) if rng is not None and self.dropout > 0 else None
                if buf is not None:
                    mask = None if mask is None else _into(buf["mask" + suffix(l, 0)], mask)
                    inp = _into(buf["x" + suffix(l, 0)], out)
                    if mask is not None:
                        inp *= mask
                else:
                    inp = out if mask is None else out * mask
                masks.append(mask)
            def run_forward(d: int, l: int = l, inp: np.ndarray = inp):
                i = l * self.num_directions + d
                sfx = suffix(l, d)
                held = None
                if names:
                    held = (i, tuple(params[n + sfx] for n in names if n + sfx in params))
                return self._cell_forward(self._cell_dict(p, l, d), inp, s0_all[i], o0_all[i],
                                          lens, bool(d) or self.reverse, training,
                                          None if buf is None else buf["y" + sfx],
                                          None if buf is None else buf["acts" + sfx], held,
                                          s_T[i], o_T[i])

            results = self._each_direction(run_forward, B)
            cells.extend(r[3] for r in results if r[3] is not None)  # s_T, o_T written in place
            outs = [r[0] for r in results]
            out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
            if valid is not None:
                out = np.where(valid, out, 0).astype(self.dtype, copy=False)
        tape = None
        if training:
            tape = Tape(cells, masks, lens, self.input_size)
            if out is cells[-1].y and buf is not None:
                out = out.copy()  # y never shares memory with the caller's tape
            elif out is cells[-1].y:
                out = out.view()
                out.flags.writeable = False
        return self._out(out), self._state_out(s_T, o_T, carried, xt), tape

    def backward(self, dy: Any = None, dstate: Any = None) -> Tuple[np.ndarray, Any]:
        """Back-propagate through this thread's last training forward.

        dy: dE/dy with the shape of y (None: zero; entries at padded steps are
        ignored). dstate: a State of gradients with respect to the final state,
        entries may be None. Accumulates (+=) into `grads`; returns dx (shaped
        like x) and the State of gradients with respect to the initial state (for
        context windows its x_past field holds dE/d(state.x_past)). May be called
        more than once (it accumulates)."""
        tape = self._tape
        if tape is None:
            raise ValueError("backward() needs a preceding forward(x, training=True); the last "
                             "forward was an inference call or there was none")
        return self._backward(tape, dy, dstate, None)

    def _backward(self, tape: Tape, dy: Any, dstate: Any,
                  grads_out: Optional[Dict[str, np.ndarray]]) -> Tuple[np.ndarray, Any]:
        """The backward of `backward` and `backward_with_tape` through `tape`,
        accumulating into grads_out (None: `self.grads`)."""
        T, B = tape.cells[0].x.shape[:2]
        H, R, D = self.hidden_size, self.output_size, self.num_directions
        LD = self.num_layers * D
        dout = None if dy is None else V.sequence(dy, "dy", self.dtype, D * R, self.batch_first,
                                                 batch=B, steps=T)
        ds_T = do_T = None
        if dstate is not None:
            self._check_state_type(dstate, "dstate")
            ds_T, do_T = (None if d is None else V.state_part(d, f"dstate.{n}", self.dtype, shp)
                          for n, d, shp in self._channels(dstate, LD, B))
        ds0 = np.zeros((LD, B, H), self.dtype)
        do0 = np.zeros((LD, B, R), self.dtype)
        with self._grad_lock:  # += into the shared grads
            grads = self._checked_grads(grads_out)
            for l in reversed(range(self.num_layers)):
                def run_backward(d: int, l: int = l, dout: Optional[np.ndarray] = dout) -> np.ndarray:
                    i = l * D + d
                    dinp_d = np.zeros((T, B, self._cell_input_size(l)), self.dtype)
                    dy_ld = None if dout is None else np.ascontiguousarray(dout[:, :, d * R:(d + 1) * R])
                    self._cell_backward(tape.cells[i], self._cell_dict(grads, l, d), dinp_d,
                                        ds0[i], do0[i], dy_ld,
                                        None if ds_T is None else ds_T[i],
                                        None if do_T is None else do_T[i])
                    return dinp_d

                dinps = self._each_direction(run_backward, B)  # one dE/d(input) per direction
                dinp = dinps[0] if D == 1 else dinps[0] + dinps[1]
                if l > 0:
                    mask = tape.masks[l - 1]
                    dout = dinp if mask is None else dinp * mask
        return self._backward_input(dinp, tape, ds0, do0)

    # -- flat tape: the activations of a training forward in a caller's buffer --------
    def tape_layout(self, steps: int, batch: int, *, dropout: bool = False
                    ) -> Dict[str, Tuple[int, Tuple[int, ...]]]:
        """The regions of the flat tape of a training forward over `steps` steps
        and `batch` rows, name -> (offset, shape) in elements of the layer dtype:
        "header" (the sizes, the lengths), "s0" (L*D, B, H) and "o0" (L*D, B, R)
        the initial state, per layer "x", "x_l1", ... (T, B, I_l) the cell inputs
        and, with dropout between layers, "mask_l1", ... (T, B, D*R), per cell
        "y", "y_reverse", "y_l1", ... (T, B, R) the outputs and "acts", ... the
        kernel's activation store. Regions start on 64-byte offsets."""
        return self._tape_regions(V.positive_int(steps, "steps"),
                                  V.positive_int(batch, "batch"), dropout)[0]

    def tape_size(self, steps: int, batch: int, *, dropout: bool = False) -> int:
        """Elements (of the layer dtype) of the flat tape `forward_with_tape`
        fills for `steps` steps and `batch` rows (dropout: masks between layers
        are drawn, see `forward_with_tape`)."""
        return self._tape_regions(V.positive_int(steps, "steps"),
                                  V.positive_int(batch, "batch"), dropout)[1]

    def forward_with_tape(self, x: Any, tape: Optional[np.ndarray], state: Any = None, *,
                          lengths: Any = None, x_future: Any = None,
                          params: Optional[Dict[str, np.ndarray]] = None,
                          dropout_seed: Optional[int] = None) -> Tuple[np.ndarray, Any]:
        """A training forward that writes what the backward needs into the
        caller's buffer `tape` (1-D, C-contiguous, the layer dtype, exactly
        `tape_size(T, B, dropout=dropout_seed is not None)` elements) and keeps
        nothing in the layer: any number of such forwards may be in flight, on
        any threads, each paired with `backward_with_tape(tape)`.

        x, state, lengths, x_future: as for `forward` (x is copied into the tape,
        lengths into its header). params: the weights to use, a dict with the
        names and shapes of `params` (default: `params` itself; read again by the
        backward, so keep them unchanged in between). dropout_seed: None for no
        dropout, or an int >= 0: masks between layers at rate `dropout` from
        `numpy.random.default_rng(dropout_seed)`. tape=None runs an inference
        forward (nothing stored, no dropout). Returns y and the final State as
        `forward` does; y never shares memory with the tape."""
        rng = None
        if dropout_seed is not None:
            if not V.is_int(dropout_seed):
                raise TypeError(f"dropout_seed must be None or an int >= 0, got {dropout_seed!r}")
            if dropout_seed < 0:
                raise ValueError(f"dropout_seed must be None or an int >= 0, got {dropout_seed}")
            rng = np.random.default_rng(int(dropout_seed))
        if tape is None:
            y, st, _ = self._forward(x, state, lengths, x_future, params, False, None, None)
        else:
            y, st, _ = self._forward(x, state, lengths, x_future, params, True, rng,
                                     self._flat_tape(tape))
        return y, st

    def backward_with_tape(self, tape: np.ndarray, dy: Any = None, dstate: Any = None, *,
                           params: Optional[Dict[str, np.ndarray]] = None,
                           grads: Optional[Dict[str, np.ndarray]] = None
                           ) -> Tuple[np.ndarray, Any]:
        """Back-propagate through the forward that filled `tape`
        (`forward_with_tape`); the tape holds the sizes, lengths and dropout
        masks of that call and is only read.

        dy, dstate: as for `backward`. params: the weights the forward used
        (default `params`). grads: a dict of writeable C-contiguous arrays with
        the names and shapes of `params` to accumulate (+=) into (default
        `grads`). Returns dx and the State of gradients with respect to the
        initial state, as `backward`."""
        flat_tape = self._flat_tape(tape)
        n_head = 2 * len(TAPE_HEADER)
        ints = _decode(flat_tape[:n_head]) if flat_tape.shape[0] >= n_head else None
        if ints is None or ints[0] != TAPE_FORMAT:
            raise ValueError("tape was not filled by forward_with_tape (its header is not a tape's)")
        head = dict(zip(TAPE_HEADER, (int(i) for i in ints)))
        ours = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    output_size=self.output_size, num_layers=self.num_layers,
                    num_directions=self.num_directions)
        if any(head[k] != v for k, v in ours.items()) or min(head["steps"], head["batch"]) < 1:
            raise ValueError("tape was filled by a layer of another configuration: "
                             f"{ {k: head[k] for k in ours} }, this layer has {ours}")
        T, B = head["steps"], head["batch"]
        buf = self._tape_views(flat_tape, T, B, bool(head["has_masks"]))
        lens = None
        if head["has_lengths"]:
            lens = _decode(buf["header"][n_head:])
            if lens is None or lens.min() < 0 or lens.max() > T:
                raise ValueError("tape has a damaged header (lengths outside [0, T])")
        p = self._checked_params(params)
        D = self.num_directions
        cells = []
        for l in range(self.num_layers):
            x_l = buf["x" + suffix(l, 0)]
            for d in range(D):
                i, sfx = l * D + d, suffix(l, d)
                cfg = self._cell_config(T, B, x_l.shape[2], lens, bool(d) or self.reverse)
                cells.append(CellTape(x_l, buf["y" + sfx], buf["s0"][i], buf["o0"][i],
                                      buf["acts" + sfx], self._cell_dict(p, l, d), cfg))
        masks = [buf.get("mask" + suffix(l, 0)) for l in range(1, self.num_layers)]
        return self._backward(Tape(cells, masks, lens, self.input_size), dy, dstate, grads)

    def _tape_regions(self, T: int, B: int, dropout: bool
                      ) -> Tuple[Dict[str, Tuple[int, Tuple[int, ...]]], int]:
        """(the layout of `tape_layout`, the total size)."""
        H, R, D, L = self.hidden_size, self.output_size, self.num_directions, self.num_layers
        shapes: List[Tuple[str, Tuple[int, ...]]] = [
            ("header", (2 * (len(TAPE_HEADER) + B),)),
            ("s0", (L * D, B, H)), ("o0", (L * D, B, R))]
        for l in range(L):
            I_l = self._cell_input_size(l)
            shapes.append(("x" + suffix(l, 0), (T, B, I_l)))
            if l > 0 and dropout and self.dropout > 0:
                shapes.append(("mask" + suffix(l, 0), (T, B, D * R)))
            for d in range(D):
                n_acts = self._cell_config(T, B, I_l, None, bool(d) or self.reverse).sizes()[0]
                shapes += [("y" + suffix(l, d), (T, B, R)), ("acts" + suffix(l, d), (n_acts,))]
        align = ALIGN // self.dtype.itemsize
        layout: Dict[str, Tuple[int, Tuple[int, ...]]] = {}
        offset = 0
        for name, shape in shapes:
            layout[name] = (offset, shape)
            offset += -(-int(np.prod(shape, dtype=np.int64)) // align) * align
        return layout, offset

    def _flat_tape(self, tape: Any) -> np.ndarray:
        if not isinstance(tape, np.ndarray):
            raise TypeError(f"tape must be a 1-D numpy array of dtype {self.dtype}, "
                            f"got {type(tape).__name__}")
        if tape.dtype != self.dtype or tape.ndim != 1 or not tape.flags.c_contiguous:
            raise ValueError(f"tape must be a 1-D C-contiguous array of dtype {self.dtype}, "
                             f"got dtype {tape.dtype}, shape {tape.shape}")
        return tape

    def _tape_views(self, tape: np.ndarray, T: int, B: int, dropout: bool) -> Dict[str, np.ndarray]:
        """The regions of a flat tape as views (ValueError if its size is not the layout's)."""
        layout, total = self._tape_regions(T, B, dropout)
        if tape.shape[0] != total:
            raise ValueError(f"tape must have tape_size({T}, {B}, dropout={bool(dropout)}) = "
                             f"{total} elements, got {tape.shape[0]}")
        return {name: tape[off:off + int(np.prod(shape, dtype=np.int64))].reshape(shape)
                for name, (off, shape) in layout.items()}

    def _start_tape(self, tape: np.ndarray, buf: Dict[str, np.ndarray], T: int, B: int,
                    lens: Optional[np.ndarray], dropout: bool) -> None:
        """Write the header and zero the alignment gaps between the regions (so
        that a tape is a function of the call's inputs, every element defined)."""
        if not tape.flags.writeable:
            raise ValueError("tape must be writeable (forward_with_tape fills it)")
        ints = [TAPE_FORMAT, T, B, int(lens is not None), int("mask_l1" in buf), self.input_size,
                self.hidden_size, self.output_size, self.num_layers, self.num_directions]
        buf["header"][...] = _encode(ints + ([0] * B if lens is None else lens.tolist()))
        layout, total = self._tape_regions(T, B, dropout)
        ends = [off + int(np.prod(shape, dtype=np.int64)) for off, shape in layout.values()]
        starts = [off for off, _ in layout.values()][1:] + [total]
        for end, start in zip(ends, starts):
            tape[end:start] = 0

    # -- helpers --------------------------------------------------------------------
    def _each_direction(self, run: Any, B: int) -> list:
        """run(d) for each direction: on two threads (the kernel releases the GIL)
        when the layer is bidirectional, the batch small and 2+ threads are allowed."""
        if self.num_directions == 2 and B <= _tuning.get("directions_max_batch"):
            ex = _threads.pool()
            if ex is not None:
                def run_alone(d: int) -> Any:
                    with _threads.one_kernel_thread():
                        return run(d)

                futures = [ex.submit(run_alone, d) for d in range(2)]
                return [f.result() for f in futures]
        return [run(d) for d in range(self.num_directions)]

    def _cell_dict(self, store: Dict[str, np.ndarray], l: int, d: int) -> Dict[str, np.ndarray]:
        """One cell's entries of `params` or `grads`, under their base names."""
        keys = self._fixed_once("cell_keys", lambda: [
            [(name, name + suffix(l, d)) for name in self._cell_param_shapes(self._cell_input_size(l))]
            for l in range(self.num_layers) for d in range(self.num_directions)])
        return {name: store[key] for name, key in keys[l * self.num_directions + d]}

    def _paper_views(self, store: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """`store` under the names of docs/equations.md (a cell whose storage names
        are those, the RNN's W_x, W_r, theta_s, W_s, keeps them; the gated cells give
        per-gate views)."""
        return dict(store)

    @property
    def paper_params(self) -> Dict[str, np.ndarray]:
        """Views of `params` under the names of docs/equations.md, with the cell
        suffix (writes go to the real storage): the LSTM's W_xcu (H, I), W_vcu (H, R),
        b_cu, w_scu / W_scu, W_qv, ...; the GRU's W_xr (H, I), W_hr (H, H), b_r, ...,
        b_hn; the RNN's W_x, W_r, theta_s, W_s."""
        return self._paper_views(self.params)

    @property
    def paper_grads(self) -> Dict[str, np.ndarray]:
        """Views of `grads` under the same names (see `paper_params`)."""
        return self._paper_views(self.grads)

    def _gate_views(self, store: Dict[str, np.ndarray], names: Dict[str, str],
                    gates: Tuple[str, ...]) -> Dict[str, np.ndarray]:
        """Each fused parameter `key` of every cell cut into one row block (H rows)
        per gate, named names[key] + gate + the cell's suffix (views of `store`)."""
        H = self.hidden_size
        views: Dict[str, np.ndarray] = {}
        for l in range(self.num_layers):
            for d in range(self.num_directions):
                sfx = suffix(l, d)
                for i, gate in enumerate(gates):
                    for key, name in names.items():
                        views[f"{name}{gate}{sfx}"] = store[key + sfx][i * H:(i + 1) * H]
        return views

    def _dropout_mask(self, shape: Tuple[int, ...],
                      rng: Optional[np.random.Generator] = None) -> np.ndarray:
        keep = 1.0 - self.dropout
        rng = self._dropout_rng if rng is None else rng
        return ((rng.random(shape) < keep) / keep).astype(self.dtype)

    # -- what a cell adds around the stack (the LSTM: context windows) ---------------
    def _first_input_size(self) -> int:
        """Features of layer 0's input as the kernel sees it."""
        return self.input_size

    def _first_input(self, xt: np.ndarray, carried: Any, x_future: Optional[np.ndarray],
                     lengths: Optional[np.ndarray]) -> np.ndarray:
        """Layer 0's input (T, B, _first_input_size()) from the checked sequence xt
        (T, B, I), what `_state_in` carried in and what `_future_in` returned."""
        return xt

    def _backward_input(self, dinp: np.ndarray, tape: Tape, ds0: np.ndarray, do0: np.ndarray):
        """dx and the State of gradients from dE/d(layer 0's input) and the channels'."""
        return self._out(dinp), self._make_state(ds0, do0)

    def _state_out(self, s_T: np.ndarray, o_T: np.ndarray, carried: Any, xt: np.ndarray) -> Any:
        """The final State of the channels s_T, o_T (and what the cell carries on)."""
        return self._make_state(s_T, o_T)

    def _make_state(self, s: Any, o: Any, *rest: Any) -> Any:
        """The State of channels s and o (see _STATE_CHANNELS), then `rest`."""
        channel = {"s": s, "o": o}
        return self.State(*(channel[c] for c in self._STATE_CHANNELS), *rest)

    def _channels(self, state: Any, LD: int, B: int) -> List[Tuple[Optional[str], Any, Tuple[int, ...]]]:
        """(field name, value, shape) of channels s and o in a State; the name is
        None for a channel the State has no field for (its value is then None)."""
        shapes = {"s": (LD, B, self.hidden_size), "o": (LD, B, self.output_size)}
        fields = dict(zip(self._STATE_CHANNELS, zip(self.State._fields, state)))
        return [(*fields.get(c, (None, None)), shapes[c]) for c in ("s", "o")]

    def _future_in(self, x_future: Any, B: int, has_state: bool, T: int) -> Optional[np.ndarray]:
        """The checked frames after the sequence (forward's x_future); a cell without
        a look-ahead refuses them."""
        if x_future is not None:
            raise ValueError(f"x_future is only for {type(self).__name__}s with a look-ahead context window")
        return None

    def _out(self, seq: np.ndarray) -> np.ndarray:
        return seq.transpose(1, 0, 2) if self.batch_first else seq

    def _state_in(self, state: Any, B: int) -> Tuple[np.ndarray, np.ndarray, Any]:
        """The checked channels s0, o0 of `state` (zeros for None) and what the cell
        carries in besides them (None here; an LSTM's x_past)."""
        LD = self.num_layers * self.num_directions
        if state is None:  # zeros for both channels
            return (np.zeros((LD, B, self.hidden_size), self.dtype),
                    np.zeros((LD, B, self.output_size), self.dtype), None)
        self._check_state_type(state, "state")
        parts = self._channels(state, LD, B)
        s0, o0 = (np.zeros(shp, self.dtype) if n is None
                  else V.private_copy(V.state_part(a, f"state.{n}", self.dtype, shp), a)
                  for n, a, shp in parts)
        return s0, o0, None

    def _check_state_type(self, state: Any, name: str) -> None:
        """A state (or state gradient) must be this layer's State NamedTuple: a
        plain tuple cannot tell torch's (h, c) from the fields' order."""
        if isinstance(state, self.State):
            return
        cls = self.State.__name__
        fields = ", ".join(self.State._fields)
        got = type(state).__name__
        if isinstance(state, (tuple, list)) and not hasattr(state, "_fields"):
            got = f"a plain {got}, which is ambiguous"
        raise V.StateTypeError(f"{name} must be None or an {cls} ({fields}), got {got}: "
                               f"{self._STATE_HINT}")

    def _checked_params(self, store: Optional[Dict[str, np.ndarray]] = None
                        ) -> Dict[str, np.ndarray]:
        store = self.params if store is None else store
        dtype = self.dtype
        return {k: V.parameter(store, k, dtype, shape)
                for k, shape in self._fixed_once("shapes", self._param_shapes).items()}

    def _checked_grads(self, store: Optional[Dict[str, np.ndarray]] = None
                       ) -> Dict[str, np.ndarray]:
        store = self.grads if store is None else store
        grads = {k: V.parameter(store, k, self.dtype, shape, store="grads")
                 for k, shape in self._fixed_once("shapes", self._param_shapes).items()}
        for k, g in grads.items():
            if g is not store[k] or not g.flags.writeable:
                raise ValueError(f"grads[{k!r}] must be a writeable C-contiguous array "
                                 "(backward accumulates into it in place)")
        return grads
