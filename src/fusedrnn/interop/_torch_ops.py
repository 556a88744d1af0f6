"""The fused kernels as PyTorch operators: `torch.ops.fusedrnn.forward` and
`torch.ops.fusedrnn.backward` (`torch.library.custom_op`), each with a fake
implementation (output shapes without running the kernel) and the forward with
its autograd formula. `torch.compile`, `torch.export` and `torch.jit.trace` then
record a call of the operator instead of running through it, and the operators
run the fusedrnn layer's flat tape interface (`forward_with_tape`,
`backward_with_tape`) on zero-copy numpy views of the tensors.

The operators take tensors, a JSON string of the network's options and a bool:

    forward(config, x (T, B, I), s0 (L*D, B, H)?, o0 (L*D, B, R)?, x_past (L_past, B, I)?,
            x_future (L_future, B, I)?, lengths (B,) int64?, dropout_seed (1,) int64?,
            weights [...], keep_tape) -> y (T, B, D*R), s_T, o_T, tape (N,)
    backward(config, tape, dy (T, B, D*R), ds_T?, do_T?, weights [...])
            -> dx (T, B, I), ds0, do0, dx_past (L_past, B, I), dweights [...]

Sequences are time-major. The tape (the layer's `tape_size(T, B)` elements) holds
every activation the backward needs, the lengths and the dropout masks; it is
empty when keep_tape is False and no dropout is drawn (an inference call).
`weights` are in the order of the layer's `params`. An exported program needs
`import fusedrnn.torch` (which registers the operators) before it is loaded."""
from __future__ import annotations

import functools
import json
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..core.gru import GRU
from ..core.lstm import LSTM
from ..core.rnn import RNN

_CELLS = {"LSTM": LSTM, "RNN": RNN, "GRU": GRU}
_NP_DTYPE = {torch.float32: "float32", torch.float64: "float64"}


def config_string(cell: str, options: Dict[str, Any]) -> str:
    """The operators' `config`: the constructor options of a fusedrnn `cell`
    ("LSTM", "RNN" or "GRU") without dtype, batch_first and seed, as canonical JSON."""
    return json.dumps({"cell": cell, **options}, sort_keys=True)


@functools.lru_cache(maxsize=64)
def layer_of(config: str, dtype: str) -> Any:
    """The time-major fusedrnn layer of a `config` and dtype name, made once and
    shared: the operators use only its configuration and its tape interface
    (which keeps nothing in the layer), never its own parameters."""
    options = json.loads(config)
    cls = _CELLS[options.pop("cell")]
    if "context" in options:
        options["context"] = tuple(options["context"])
    for k in ("gate_activation", "cell_activation", "output_activation", "activation"):
        if isinstance(options.get(k), list):  # JSON lists back to the tuples they were
            options[k] = tuple(tuple(a) if isinstance(a, list) else a for a in options[k])
    with warnings.catch_warnings():  # the module warned about its options already
        warnings.simplefilter("ignore")
        return cls(**options, dtype=dtype, seed=0)


def _layer(config: str, t: Tensor) -> Any:
    if t.dtype not in _NP_DTYPE:
        raise ValueError(f"fusedrnn's operators compute in float32 or float64, got {t.dtype}")
    return layer_of(config, _NP_DTYPE[t.dtype])


def _np(t: Optional[Tensor]) -> Optional[np.ndarray]:
    """The numpy view of a CPU tensor's storage (no copy), None stays None."""
    if t is None:
        return None
    a = t.detach()
    if a.is_conj() or a.is_neg():
        a = a.resolve_conj().resolve_neg()
    return a.numpy()


def _tensor(a: np.ndarray) -> Tensor:
    """A tensor on the memory of a fresh numpy result (copied if read-only)."""
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")
    return torch.from_numpy(a)


def _params(layer: Any, weights: Sequence[Tensor]) -> Dict[str, np.ndarray]:
    names = list(layer.params)
    if len(weights) != len(names):
        raise ValueError(f"weights must hold the {len(names)} parameters {names}, "
                         f"got {len(weights)} tensors")
    return {n: _np(w) for n, w in zip(names, weights)}  # type: ignore[misc]


def _state(layer: Any, s: Optional[Tensor], o: Optional[Tensor],
           x_past: Optional[Tensor] = None) -> Any:
    """The layer's State of channels s and o (a GRU reads o only), then x_past if
    the State has that field."""
    if s is None and o is None:
        return None
    given = {"s": s, "o": o}
    if any(given[c] is None for c in layer._STATE_CHANNELS):
        raise ValueError(f"the state channels {layer._STATE_CHANNELS} must be given together "
                         "(or none)")
    rest = (_np(x_past),) if len(layer.State._fields) > len(layer._STATE_CHANNELS) else ()
    return layer._make_state(_np(s), _np(o), *rest)


def _channels(layer: Any, state: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The arrays of channels s and o of a State of (L*D, B, .) arrays; a channel
    the State lacks (a GRU's s) is zeros."""
    B = state[0].shape[1]
    LD = layer.num_layers * layer.num_directions
    s, o = (np.zeros(shp, layer.dtype) if a is None else a
            for _, a, shp in layer._channels(state, LD, B))
    return s, o


@torch.library.custom_op("fusedrnn::forward", mutates_args=(), device_types="cpu")
def forward(config: str, x: Tensor, s0: Optional[Tensor], o0: Optional[Tensor],
            x_past: Optional[Tensor], x_future: Optional[Tensor], lengths: Optional[Tensor],
            dropout_seed: Optional[Tensor], weights: List[Tensor],
            keep_tape: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    layer = _layer(config, x)
    T, B = int(x.shape[0]), int(x.shape[1])
    seed = None if dropout_seed is None else int(dropout_seed.reshape(-1)[0].item())
    taped = keep_tape or seed is not None
    tape = torch.empty(layer.tape_size(T, B, dropout=seed is not None) if taped else 0,
                       dtype=x.dtype)
    y, st = layer.forward_with_tape(_np(x), tape.numpy() if taped else None,
                                    _state(layer, s0, o0, x_past), lengths=_np(lengths),
                                    x_future=_np(x_future), params=_params(layer, weights),
                                    dropout_seed=seed)
    s_T, o_T = _channels(layer, st)
    return _tensor(y), _tensor(s_T), _tensor(o_T), tape


@forward.register_fake
def _forward_fake(config: str, x: Tensor, s0: Optional[Tensor], o0: Optional[Tensor],
                  x_past: Optional[Tensor], x_future: Optional[Tensor],
                  lengths: Optional[Tensor], dropout_seed: Optional[Tensor],
                  weights: List[Tensor], keep_tape: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    layer = _layer(config, x)
    T, B = x.shape[0], x.shape[1]
    D, H, R = layer.num_directions, layer.hidden_size, layer.output_size
    LD = layer.num_layers * D
    n: Any = 0
    if keep_tape or dropout_seed is not None:
        if isinstance(T, int) and isinstance(B, int):
            n = layer.tape_size(T, B, dropout=dropout_seed is not None)
        else:  # symbolic sizes: the kernel's activation store is sized at run time
            n = torch.library.get_ctx().new_dynamic_size()
    return (x.new_empty((T, B, D * R)), x.new_empty((LD, B, H)), x.new_empty((LD, B, R)),
            x.new_empty((n,)))


@torch.library.custom_op("fusedrnn::backward", mutates_args=(), device_types="cpu")
def backward(config: str, tape: Tensor, dy: Tensor, ds_T: Optional[Tensor],
             do_T: Optional[Tensor], weights: List[Tensor]
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, List[Tensor]]:
    layer = _layer(config, tape)
    params = _params(layer, weights)
    grads = {n: np.zeros(p.shape, p.dtype) for n, p in params.items()}
    dstate = None if ds_T is None and do_T is None else layer._make_state(_np(ds_T), _np(do_T))
    dx, dst = layer.backward_with_tape(_np(tape), _np(dy), dstate, params=params, grads=grads)
    T, B = dx.shape[:2]
    n_channels = len(layer._STATE_CHANNELS)
    dx_past = dst[n_channels] if len(dst) > n_channels else None
    ds0, do0 = _channels(layer, dst)
    if dx_past is None:
        dx_past = np.zeros((_past_frames(layer), B, layer.input_size), layer.dtype)
    return (_tensor(dx), _tensor(ds0), _tensor(do0), _tensor(dx_past),
            [torch.from_numpy(grads[n]) for n in params])


def _past_frames(layer: Any) -> int:
    return int(getattr(layer, "context", (0, 0))[0])


@backward.register_fake
def _backward_fake(config: str, tape: Tensor, dy: Tensor, ds_T: Optional[Tensor],
                   do_T: Optional[Tensor], weights: List[Tensor]
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor, List[Tensor]]:
    layer = _layer(config, tape)
    T, B = dy.shape[0], dy.shape[1]
    LD = layer.num_layers * layer.num_directions
    I, H, R = layer.input_size, layer.hidden_size, layer.output_size
    return (dy.new_empty((T, B, I)), dy.new_empty((LD, B, H)), dy.new_empty((LD, B, R)),
            dy.new_empty((_past_frames(layer), B, I)), [w.new_empty(w.shape) for w in weights])


def _setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, ...]) -> None:
    config, x, s0, o0, x_past, _, _, dropout_seed, weights, keep_tape = inputs
    ctx.config = config
    ctx.given = (s0 is not None, o0 is not None, x_past is not None)
    ctx.taped = bool(keep_tape) or dropout_seed is not None
    ctx.y_shape = output[0].shape
    ctx.save_for_backward(output[3], *weights)  # weights: the version check of autograd


def _backward_formula(ctx: Any, dy: Optional[Tensor], ds: Optional[Tensor],
                      do: Optional[Tensor], _dtape: Any) -> Tuple[Any, ...]:
    if not ctx.taped:
        raise RuntimeError("fusedrnn: this forward ran without a tape (it was recorded with no "
                           "input requiring grad, e.g. traced or exported under torch.no_grad()), "
                           "so it cannot be differentiated: record it with gradients enabled")
    tape, *weights = ctx.saved_tensors
    if dy is None:
        dy = tape.new_zeros(ctx.y_shape)
    dx, ds0, do0, dx_past, dweights = torch.ops.fusedrnn.backward(ctx.config, tape, dy, ds, do,
                                                                  weights)
    has_s0, has_o0, has_past = ctx.given
    return (None, dx, ds0 if has_s0 else None, do0 if has_o0 else None,
            dx_past if has_past else None, None, None, None, list(dweights), None)


forward.register_autograd(_backward_formula, setup_context=_setup_context)
