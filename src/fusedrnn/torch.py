"""`fusedrnn.torch`: the fused C kernels as `torch.nn.Module`s.

    import torch, fusedrnn.torch as frt
    lstm = frt.LSTM(32, 64, peepholes="diagonal", proj_size=16, context=(1, 2),
                    num_layers=2, bidirectional=True, dtype=torch.float32, seed=0)
    out, (h, c) = lstm(x, (h0, c0), lengths=lengths)     # like torch.nn.LSTM
    out.sum().backward()                                  # fused C backward
    torch.optim.Adam(lstm.parameters()).step()

`LSTM`, `RNN` and `GRU` take the constructor options of `fusedrnn.LSTM` /
`fusedrnn.RNN` / `fusedrnn.GRU` (the augmented ones torch lacks included). Their weights are `nn.Parameter`s
named like the fusedrnn `params` keys ("W_x", "W_v", "b", "w_s", "W_qv",
"W_x_reverse", "W_x_l1", ...). The forward and backward are the PyTorch
operators `torch.ops.fusedrnn.forward` / `torch.ops.fusedrnn.backward`
(`torch.library.custom_op`, with fake implementations and an autograd formula),
so `torch.compile(module, fullgraph=True)`, `torch.export.export` and
`torch.jit.trace` record them as calls. They run the fused kernel zero-copy on
numpy views of the tensors (`tensor.numpy()`, `torch.from_numpy`).

Each forward that needs a gradient returns its activation tape as a tensor kept
in the autograd graph, so several forwards may precede their backwards, in any
order and from any thread. In-place changes of the weights between a forward
and its backward are detected like in torch (autograd's version counters).

CPU only, float32 or float64: tensors on another device (CUDA, MPS, meta, ...)
or of another dtype are refused with a ValueError that names the argument.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .interop import _torch_ops
from .core import _context
from .core import _validate as V
from .core._tracked import untrack
from .core.gru import GRU as _FrGRU
from .core.lstm import LSTM as _FrLSTM
from .core.quantized import QuantizedGRU as _FrQuantizedGRU
from .core.quantized import QuantizedLSTM as _FrQuantizedLSTM
from .core.quantized import QuantizedRNN as _FrQuantizedRNN
from .core.quantized import _Quantized
from .core.rnn import RNN as _FrRNN

__all__ = ["LSTM", "RNN", "GRU", "QuantizedLSTM", "QuantizedRNN", "QuantizedGRU"]

_NP_OF_TORCH: Dict[torch.dtype, "np.dtype[Any]"] = {torch.float32: np.dtype(np.float32),
                                                    torch.float64: np.dtype(np.float64)}

Tensor = torch.Tensor
_M = TypeVar("_M", bound="_FusedModule")


def _seed(seed: Optional[int]) -> int:
    """The layer's seed: the given one, or (None) one drawn from torch's generator so
    that the initialisation follows torch.manual_seed."""
    return int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed


def _np_dtype(dtype: Any) -> "np.dtype[Any]":
    """float32 / float64 from a numpy or a torch dtype (TypeError otherwise)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _NP_OF_TORCH:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        return _NP_OF_TORCH[dtype]
    return V.as_dtype(dtype)


def _check_tensor(t: Any, name: str, dtype: Optional[torch.dtype]) -> Tensor:
    """A CPU tensor of `dtype`, else ValueError naming the argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on device '{t.device}': fusedrnn's kernels run on the CPU "
                         f"only; move it there with .cpu() (and the module with .cpu())")
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if dtype is not None and t.dtype != dtype:
        short = {torch.float32: ".float()", torch.float64: ".double()"}
        hint = f"convert it with {name}{short[dtype]} (or .to({dtype}))"
        if t.dtype in short:  # the module may compute in the tensor's dtype instead
            hint += f", or the module with module{short[t.dtype]}"
        raise ValueError(f"{name} has dtype {t.dtype}, but the module computes in {dtype}; "
                         f"{hint}")
    return t


def _shape_differs(t: Tensor, shape: Tuple[Any, ...]) -> bool:
    """t's shape is not `shape`. Not checked while torch.jit.trace records (sizes
    are traced values then, and every comparison would warn): the operator checks
    the shapes of what it is given when it runs."""
    return not torch.jit.is_tracing() and tuple(t.shape) != tuple(shape)


def _as_numpy(t: Tensor) -> np.ndarray:
    """The numpy view of a CPU tensor's storage (no copy)."""
    a = t.detach()
    if a.is_conj() or a.is_neg():
        a = a.resolve_conj().resolve_neg()
    return a.numpy()


class _FusedModule(nn.Module):
    """What `LSTM`, `RNN` and `GRU` share: parameters, checks, the operator call."""

    _fr_class: Any = None

    def __init__(self, fr_layer: Any, copy_weights: bool = False) -> None:
        super().__init__()
        self._config = self._config_of(fr_layer)
        self.input_size: int = fr_layer.input_size
        self.hidden_size: int = fr_layer.hidden_size
        self.num_layers: int = fr_layer.num_layers
        self.bidirectional: bool = fr_layer.bidirectional
        self.dropout: float = fr_layer.dropout
        self.batch_first: bool = fr_layer.batch_first
        self._names: Tuple[str, ...] = tuple(fr_layer.params)
        self._shapes = {n: fr_layer.params[n].shape for n in self._names}
        for name in self._names:
            p = fr_layer.params[name]   # shared: torch's writes cannot be tracked
            self.register_parameter(name, nn.Parameter(torch.from_numpy(
                np.array(p, copy=True) if copy_weights else untrack(p))))
        # the operators' configuration (time-major: the module transposes batch_first)
        self._op_config = _torch_ops.config_string(self._fr_class.__name__, self._config)

    # -- configuration --------------------------------------------------------------------
    # the cell's own constructor options (read from the layer's attributes of these names)
    _OPTIONS: Tuple[str, ...] = ()
    # the options every stack has, with their defaults (extra_repr shows the others)
    _STACK_OPTIONS = (("num_layers", 1), ("bidirectional", False), ("dropout", 0.0),
                      ("reverse", False))

    @classmethod
    def _config_of(cls, layer: Any) -> Dict[str, Any]:
        """The layer's constructor options without dtype, batch_first and seed."""
        return dict(input_size=layer.input_size, hidden_size=layer.hidden_size,
                    **{k: getattr(layer, k) for k in cls._OPTIONS},
                    **{k: getattr(layer, k) for k, _ in cls._STACK_OPTIONS})

    def _repr_tail(self) -> str:
        """extra_repr's end: the stack options that differ from their defaults."""
        s = "".join(f", {k}={self._config[k]!r}" for k, default in self._STACK_OPTIONS
                    if self._config[k] != default)
        return s + (", batch_first=True" if self.batch_first else "")

    # -- fusedrnn layers ---------------------------------------------------------------
    def _new_layer(self, dtype: "np.dtype[Any]") -> Any:
        """A fresh fusedrnn layer of this module's configuration (its own weights)."""
        with warnings.catch_warnings():  # the constructor warned about the options already
            warnings.simplefilter("ignore")
            return self._fr_class(**self._config, dtype=dtype, batch_first=self.batch_first,
                                  seed=0)

    def _weights(self, check: bool = True) -> Tuple[List[Tensor], torch.dtype]:
        ws = [getattr(self, n) for n in self._names]
        dtype = ws[0].dtype
        if check:
            for n, w in zip(self._names, ws):
                _check_tensor(w, f"parameter {n!r}", None)
                if w.dtype not in _NP_OF_TORCH or w.dtype != dtype:
                    raise ValueError(f"parameter {n!r} has dtype {w.dtype}: every parameter must "
                                     f"be float32, or every one float64 (the first is {dtype})")
                if _shape_differs(w, self._shapes[n]):
                    raise ValueError(f"parameter {n!r} must have shape {self._shapes[n]}, "
                                     f"got {tuple(w.shape)}")
        return ws, dtype

    @property
    def fr_layer(self) -> Any:
        """A fusedrnn layer computing this module's function whose `params` ARE numpy
        views of the Parameters' storage (no copy: writes go to the module)."""
        ws, dtype = self._weights()
        layer = self._new_layer(_NP_OF_TORCH[dtype])
        for n, w in zip(self._names, ws):
            layer.params[n] = _as_numpy(w)
        return layer

    def to_fusedrnn(self) -> Any:
        """An independent fusedrnn layer (a copy of the weights)."""
        ws, dtype = self._weights()
        layer = self._new_layer(_NP_OF_TORCH[dtype])
        for n, w in zip(self._names, ws):
            layer.params[n][...] = _as_numpy(w)
        return layer

    @classmethod
    def from_fusedrnn(cls: Type[_M], layer: Any) -> _M:
        """A module with a copy of the configuration and weights of a fusedrnn layer."""
        if not isinstance(layer, cls._fr_class):
            raise TypeError(f"expected a fusedrnn.{cls._fr_class.__name__}, got {type(layer).__name__}")
        if isinstance(layer, _Quantized):  # an inference-only module around it
            return _quantized_module(layer)  # type: ignore[return-value]
        module = cls.__new__(cls)
        _FusedModule.__init__(module, layer, copy_weights=True)
        return module

    def quantize(self, precision: str) -> Any:
        """An inference-only module with the weight products in `precision` ("bf16" or
        "int8"): `fusedrnn.torch.QuantizedLSTM` / `QuantizedRNN` / `QuantizedGRU` of a copy
        of this one's weights (see fusedrnn.LSTM.quantize)."""
        from .core.quantized import quantize
        return _quantized_module(quantize(self.to_fusedrnn(), precision))

    @property
    def reverse(self) -> bool:
        """True: every layer reads each row's valid part backwards (see fusedrnn.LSTM)."""
        return bool(self._config["reverse"])

    def stream(self, batch: int, state: Any = None, *, weights: str = "live") -> Any:
        """A stream that runs this module one frame at a time (inference, CPU):
        `stream.step(frame)` with frame (B, I) returns (B, R), reading the
        Parameters in place (no copy; weights="snapshot": a copy taken now).
        state: LSTM (h0, c0) (+ x_past), RNN h0 or (h0, s0), GRU h0, or None for zeros.
        See `fusedrnn.stream`."""
        from .interop._stream_torch import TorchStream
        return TorchStream(self, batch, state, weights)

    def flatten_parameters(self) -> None:
        """No-op (torch.nn.RNNBase compatibility): the weights are always used in place."""

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)) from torch's generator (as torch.nn.LSTM)."""
        k = 1.0 / float(np.sqrt(self.hidden_size))
        with torch.no_grad():
            for w in self.parameters():
                w.uniform_(-k, k)

    # -- the call ------------------------------------------------------------------------
    def _run(self, x: Tensor, s0: Optional[Tensor], o0: Optional[Tensor], x_past: Optional[Tensor],
             lengths: Any, x_future: Optional[Tensor], unbatched: bool
             ) -> Tuple[Tensor, Tensor, Tensor]:
        ws, _ = self._weights()
        lens = self._lengths(lengths, x, unbatched)
        seed = None
        if self.training and self.dropout > 0 and self.num_layers > 1:
            seed = torch.randint(0, 2**62, (1,))  # masks follow torch's generator
        # the tape is kept when a gradient may be asked for; a trace records the
        # call with its tape (its check runs without grad, and must see the same call)
        keep_tape = torch.jit.is_tracing() or (torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in [x, s0, o0, x_past, *ws]))
        if self.batch_first:  # the operators are time-major
            x = x.transpose(0, 1)
            x_future = None if x_future is None else x_future.transpose(0, 1)
        y, s_T, o_T, _ = torch.ops.fusedrnn.forward(self._op_config, x, s0, o0, x_past, x_future,
                                                    lens, seed, ws, keep_tape)
        return (y.transpose(0, 1) if self.batch_first else y), s_T, o_T

    def _lengths(self, lengths: Any, x: Tensor, unbatched: bool) -> Optional[Tensor]:
        """lengths as an int64 tensor (B,). Values given as a list or an array are
        checked here; those of a tensor (and, while compiling or tracing, of a list:
        then a constant of the graph) by the operator (they are data)."""
        if lengths is None:
            return None
        if not isinstance(lengths, torch.Tensor) and (torch.compiler.is_compiling()
                                                      or torch.jit.is_tracing()):
            lengths = torch.as_tensor(lengths)  # a constant of the recorded graph
        if isinstance(lengths, torch.Tensor):
            t = _check_tensor(lengths, "lengths", None)
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise ValueError(f"lengths must hold integers, got dtype {t.dtype}")
            t = t.detach()
            if unbatched:
                t = t.reshape(1)
            return t.to(torch.int64).contiguous()
        arr = np.asarray(lengths)
        if unbatched:
            arr = arr.reshape(1)
        T, B = x.shape[1 - self._batch_dim()], x.shape[self._batch_dim()]
        return torch.from_numpy(np.array(V.lengths(arr, B, T)))

    def _batch_dim(self) -> int:
        return 0 if self.batch_first else 1

    def _prepare_input(self, input: Any, dtype: torch.dtype, lengths: Any
                       ) -> Tuple[Tensor, Any, Optional[PackedSequence], bool]:
        """(x as 3-D in the module's layout, the lengths (a PackedSequence's own), the
        PackedSequence or None, unbatched)."""
        if isinstance(input, PackedSequence):
            if torch.compiler.is_compiling() or torch.compiler.is_exporting():
                raise ValueError("a PackedSequence input cannot be compiled or exported (unpacking "
                                 "it depends on its batch sizes, which are data): pass the padded "
                                 "tensor and lengths= instead")
            _check_tensor(input.data, "input", dtype)
            x, lens = pad_packed_sequence(input, batch_first=self.batch_first)
            if lengths is not None:
                raise ValueError("lengths must not be given with a PackedSequence input (it has them)")
            return x, lens, input, False
        x = _check_tensor(input, "input", dtype)
        if x.dim() not in (2, 3):
            raise ValueError(f"input must be 3-D ({'(B, T, I)' if self.batch_first else '(T, B, I)'}) "
                             f"or 2-D unbatched (T, I), got shape {tuple(x.shape)}")
        if x.dim() == 2:
            return x.unsqueeze(self._batch_dim()), lengths, None, True
        return x, lengths, None, False

    def _state_part(self, hx_part: Any, name: str, dtype: torch.dtype, width: int, B: int,
                    unbatched: bool) -> Tensor:
        t = _check_tensor(hx_part, name, dtype)
        LD = self.num_layers * (2 if self.bidirectional else 1)
        if unbatched:
            if _shape_differs(t, (LD, width)):
                raise ValueError(f"{name} must have shape ({LD}, {width}) for unbatched input "
                                 f"(layers * directions, hidden), got {tuple(t.shape)}")
            return t.unsqueeze(1)
        if _shape_differs(t, (LD, B, width)):
            raise ValueError(f"{name} must have shape ({LD}, {B}, {width}) (layers * directions, "
                             f"batch, hidden), got {tuple(t.shape)}")
        return t

    def _output(self, y: Tensor, packed: Optional[PackedSequence], lens: Optional[Tensor],
                unbatched: bool) -> Any:
        """y in the caller's form: squeezed when unbatched, packed like the input
        (same batch_sizes, sorted_indices and unsorted_indices) for a PackedSequence."""
        if packed is not None and lens is not None:
            idx = packed.sorted_indices
            ordered = y if idx is None else y.index_select(self._batch_dim(), idx)
            olens = lens if idx is None else lens.index_select(0, idx.cpu())
            p = pack_padded_sequence(ordered, olens, batch_first=self.batch_first,
                                     enforce_sorted=True)
            return PackedSequence(p.data, packed.batch_sizes, packed.sorted_indices,
                                  packed.unsorted_indices)
        return y.squeeze(self._batch_dim()) if unbatched else y

    @staticmethod
    def _squeeze(t: Tensor, unbatched: bool) -> Tensor:
        return t.squeeze(1) if unbatched else t


class LSTM(_FusedModule):
    """`fusedrnn.LSTM` as a `torch.nn.Module` (see `fusedrnn.LSTM` for the options).

        out, (h, c) = lstm(x, (h0, c0), lengths=None)

    x: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence;
    h0 (L*D, B, R) with R = proj_size or hidden_size, c0 (L*D, B, H), as torch.nn.LSTM
    (h is the paper's v, c its s). lengths: B integers (padding steps give output 0
    and hold the state, as packed sequences do). With a context window, a stream of
    chunks passes hx = (h0, c0, x_past) with x_past (L_past, B, I) the previous
    frames (zeros at the start) and x_future= the next L_future frames; the returned
    state is then (h, c, x_past') with x_past' the last L_past frames seen.

    Parameters (per cell suffix "", "_reverse", "_l1", ...): W_x (4H, K*I), W_v (4H, R),
    b (4H,), w_s (3, H) or W_s (3, H, H), W_qv (P, H), gate order (i, f, g, o)."""

    _fr_class = _FrLSTM

    def __init__(self, input_size: int, hidden_size: int, peepholes: Any = "diagonal", *,
                 proj_size: int = 0, context: Tuple[int, int] = (0, 0),
                 coupled_gates: bool = False, cell_clip: Optional[float] = None,
                 accumulation_clip: Optional[float] = None, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, dtype: Any = np.float32,
                 batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, gate_activation: Any = "sigmoid",
                 cell_activation: Any = "tanh", output_activation: Any = "tanh") -> None:
        layer = _FrLSTM(input_size, hidden_size, peepholes, proj_size=proj_size, context=context,
                        coupled_gates=coupled_gates, cell_clip=cell_clip,
                        accumulation_clip=accumulation_clip, num_layers=num_layers,
                        bidirectional=bidirectional, dropout=dropout, dtype=_np_dtype(dtype),
                        batch_first=batch_first, reverse=reverse, seed=_seed(seed),
                        gate_activation=gate_activation, cell_activation=cell_activation,
                        output_activation=output_activation)
        super().__init__(layer)

    _OPTIONS = ("peepholes", "proj_size", "context", "coupled_gates", "cell_clip",
                "accumulation_clip", "gate_activation", "cell_activation", "output_activation")

    @classmethod
    def _config_of(cls, layer: Any) -> Dict[str, Any]:
        config = super()._config_of(layer)
        config.update(peepholes=None if layer.peepholes == "none" else layer.peepholes,
                      context=tuple(layer.context))
        return config

    @property
    def peepholes(self) -> Optional[str]:
        return self._config["peepholes"]  # type: ignore[no-any-return]

    @property
    def proj_size(self) -> int:
        return int(self._config["proj_size"])

    @property
    def context(self) -> Tuple[int, int]:
        return self._config["context"]  # type: ignore[no-any-return]

    @property
    def coupled_gates(self) -> bool:
        return bool(self._config["coupled_gates"])

    @property
    def cell_clip(self) -> Optional[float]:
        return self._config["cell_clip"]  # type: ignore[no-any-return]

    @property
    def accumulation_clip(self) -> Optional[float]:
        return self._config["accumulation_clip"]  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        c = self._config
        s = f"{self.input_size}, {self.hidden_size}, peepholes={c['peepholes']!r}"
        for k, default in (("proj_size", 0), ("context", (0, 0)), ("coupled_gates", False),
                           ("cell_clip", None), ("accumulation_clip", None)):
            if c[k] != default:
                s += f", {k}={c[k]!r}"
        return s + self._repr_tail()

    def forward(self, input: Any, hx: Optional[Sequence[Tensor]] = None, *, lengths: Any = None,
                x_future: Optional[Tensor] = None) -> Tuple[Any, Tuple[Tensor, ...]]:
        _, dtype = self._weights()
        x, lengths, packed, unbatched = self._prepare_input(input, dtype, lengths)
        B = x.shape[self._batch_dim()]
        H, R = self.hidden_size, self.proj_size or self.hidden_size
        s0 = o0 = x_past = None
        streaming = False
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) not in (2, 3):
                raise ValueError("hx must be a tuple (h0, c0), or (h0, c0, x_past) for a stream "
                                 "with a context window")
            o0 = self._state_part(hx[0], "h0", dtype, R, B, unbatched)
            s0 = self._state_part(hx[1], "c0", dtype, H, B, unbatched)
            if len(hx) == 3:
                streaming = True
                L_past = self.context[0]
                if L_past == 0:
                    raise ValueError("hx has an x_past entry, but this LSTM has no past context "
                                     "window (context[0] == 0)")
                x_past = _check_tensor(hx[2], "x_past", dtype)
                if unbatched:
                    x_past = x_past.unsqueeze(1)
                if _shape_differs(x_past, (L_past, B, self.input_size)):
                    raise ValueError(f"x_past must have shape ({L_past}, {B}, {self.input_size}) "
                                     f"(L_past, batch, input_size), time-major; got "
                                     f"{tuple(x_past.shape)}")
        if x_future is not None:
            _check_tensor(x_future, "x_future", dtype)
            if torch.is_grad_enabled() and x_future.requires_grad:
                raise ValueError("x_future requires grad, but no gradient is propagated to the "
                                 "look-ahead frames: pass x_future.detach()")
            if unbatched:
                x_future = x_future.unsqueeze(self._batch_dim())
        y, s_T, o_T = self._run(x, s0, o0, x_past, lengths, x_future, unbatched)
        h, c = self._squeeze(o_T, unbatched), self._squeeze(s_T, unbatched)
        state: Tuple[Tensor, ...] = (h, c)
        if streaming and x_past is not None:
            xt = x.transpose(0, 1) if self.batch_first else x  # time-major
            past = _context.last_frames(x_past, xt, self.context[0], torch.cat)
            state = (h, c, self._squeeze(past, unbatched))
        return self._output(y, packed, lengths, unbatched), state

    @classmethod
    def from_torch(cls, module: Any) -> "LSTM":
        """From a torch.nn.LSTM (exact weights; see fusedrnn.LSTM.from_torch)."""
        return cls.from_fusedrnn(_FrLSTM.from_torch(module))

    def to_torch(self) -> Any:
        """A torch.nn.LSTM with the same function (refused for options torch lacks)."""
        return self.to_fusedrnn().to_torch()


class RNN(_FusedModule):
    """`fusedrnn.RNN` (the canonical RNN) as a `torch.nn.Module`.

        out, h = rnn(x, h0, lengths=None)                  # like torch.nn.RNN (tanh)
        out, (h, s) = rnn(x, (h0, s0))                     # with the paper's state s

    h is the readout r = G(s) (torch's h), s the state; activation (G, default
    "tanh"; "relu" is torch.nn.RNN(nonlinearity="relu")) and accumulation_clip
    are as for `fusedrnn.RNN`. With state_feedback=True
    (W_s s[n-1] feeds back) the state s is needed: hx is then None or (h0, s0), and
    the result state is always (h, s). Without it, a tensor h0 sets r[-1] (s[-1] = 0
    is then only the state reported for rows of length 0). Parameters per cell:
    W_x (H, I), W_r (H, H), theta_s (H,), W_s (H, H)."""

    _fr_class = _FrRNN

    def __init__(self, input_size: int, hidden_size: int, state_feedback: bool = False, *,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 dtype: Any = np.float32, batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, activation: Any = "tanh",
                 accumulation_clip: Optional[float] = None) -> None:
        layer = _FrRNN(input_size, hidden_size, state_feedback, num_layers=num_layers,
                       bidirectional=bidirectional, dropout=dropout, dtype=_np_dtype(dtype),
                       batch_first=batch_first, reverse=reverse, seed=_seed(seed),
                       activation=activation, accumulation_clip=accumulation_clip)
        super().__init__(layer)

    _OPTIONS = ("state_feedback", "activation", "accumulation_clip")

    @property
    def state_feedback(self) -> bool:
        return bool(self._config["state_feedback"])

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.state_feedback:
            s += ", state_feedback=True"
        for k, default in (("activation", "tanh"), ("accumulation_clip", None)):
            if self._config[k] != default:
                s += f", {k}={self._config[k]!r}"
        return s + self._repr_tail()

    def forward(self, input: Any, hx: Union[None, Tensor, Sequence[Tensor]] = None, *,
                lengths: Any = None) -> Tuple[Any, Union[Tensor, Tuple[Tensor, Tensor]]]:
        _, dtype = self._weights()
        x, lengths, packed, unbatched = self._prepare_input(input, dtype, lengths)
        B = x.shape[self._batch_dim()]
        H = self.hidden_size
        r0 = s0 = None
        as_pair = self.state_feedback
        if isinstance(hx, torch.Tensor):
            if self.state_feedback:
                raise ValueError("with state_feedback=True the state s is needed: pass hx=(h0, s0)")
            r0 = self._state_part(hx, "h0", dtype, H, B, unbatched)
            s0 = torch.zeros_like(r0)
        elif hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("hx must be a tensor h0 or a tuple (h0, s0)")
            r0 = self._state_part(hx[0], "h0", dtype, H, B, unbatched)
            s0 = self._state_part(hx[1], "s0", dtype, H, B, unbatched)
            as_pair = True
        y, s_T, r_T = self._run(x, s0, r0, None, lengths, None, unbatched)
        h, s = self._squeeze(r_T, unbatched), self._squeeze(s_T, unbatched)
        return self._output(y, packed, lengths, unbatched), ((h, s) if as_pair else h)

    @classmethod
    def from_torch(cls, module: Any) -> "RNN":
        """From a torch.nn.RNN (nonlinearity 'tanh' or 'relu'; exact weights)."""
        return cls.from_fusedrnn(_FrRNN.from_torch(module))

    def to_torch(self) -> Any:
        """A torch.nn.RNN with the same function (state_feedback must be off)."""
        return self.to_fusedrnn().to_torch()


class GRU(_FusedModule):
    """`fusedrnn.GRU` as a `torch.nn.Module` (see `fusedrnn.GRU` for the options).

        out, h = gru(x, h0, lengths=None)                  # like torch.nn.GRU

    x: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence;
    h0: (L*D, B, H) or None for zeros. lengths: B integers (padding steps give output
    0 and hold the state, as packed sequences do). linear_before_reset=True is
    torch.nn.GRU's formulation, False the original one (ONNX's default).
    gate_activation, cell_activation and accumulation_clip are as for
    `fusedrnn.GRU` (torch.nn.GRU has only sigmoid and tanh, without a clip).
    Parameters per cell: W_x (3H, I), W_h (3H, H), b (3H,), b_hn (H,)
    (linear_before_reset only), gate order (r, z, n)."""

    _fr_class = _FrGRU

    def __init__(self, input_size: int, hidden_size: int, *, linear_before_reset: bool = True,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 dtype: Any = np.float32, batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, gate_activation: Any = "sigmoid",
                 cell_activation: Any = "tanh",
                 accumulation_clip: Optional[float] = None) -> None:
        layer = _FrGRU(input_size, hidden_size, linear_before_reset=linear_before_reset,
                       num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                       dtype=_np_dtype(dtype), batch_first=batch_first, reverse=reverse,
                       seed=_seed(seed), gate_activation=gate_activation,
                       cell_activation=cell_activation, accumulation_clip=accumulation_clip)
        super().__init__(layer)

    _OPTIONS = ("linear_before_reset", "gate_activation", "cell_activation", "accumulation_clip")

    @property
    def linear_before_reset(self) -> bool:
        return bool(self._config["linear_before_reset"])

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.linear_before_reset:
            s += ", linear_before_reset=False"
        for k, default in (("gate_activation", "sigmoid"), ("cell_activation", "tanh"),
                           ("accumulation_clip", None)):
            if self._config[k] != default:
                s += f", {k}={self._config[k]!r}"
        return s + self._repr_tail()

    def forward(self, input: Any, hx: Optional[Tensor] = None, *,
                lengths: Any = None) -> Tuple[Any, Tensor]:
        _, dtype = self._weights()
        x, lengths, packed, unbatched = self._prepare_input(input, dtype, lengths)
        h0 = None
        if hx is not None:
            if not isinstance(hx, torch.Tensor):
                raise TypeError(f"hx must be None or a tensor h0 (layers * directions, batch, "
                                f"hidden), got {type(hx).__name__}")
            h0 = self._state_part(hx, "h0", dtype, self.hidden_size, x.shape[self._batch_dim()],
                                  unbatched)
        y, _, h_T = self._run(x, None, h0, None, lengths, None, unbatched)
        return self._output(y, packed, lengths, unbatched), self._squeeze(h_T, unbatched)

    @classmethod
    def from_torch(cls, module: Any) -> "GRU":
        """From a torch.nn.GRU (exact weights; see fusedrnn.GRU.from_torch)."""
        return cls.from_fusedrnn(_FrGRU.from_torch(module))

    def to_torch(self) -> Any:
        """A torch.nn.GRU with the same function (linear_before_reset must be True;
        refused for options torch lacks)."""
        return self.to_fusedrnn().to_torch()


class _QuantizedModule:
    """What `QuantizedLSTM`, `QuantizedRNN` and `QuantizedGRU` share: the module runs a
    fusedrnn QuantizedLSTM / QuantizedRNN / QuantizedGRU (`quantized_layer`) for inference,
    through the float module's forward (the same arguments, states and outputs)."""

    _fr_quantized: Any = None

    def __init__(self, layer: Any) -> None:
        if not isinstance(layer, self._fr_quantized):
            raise TypeError(f"expected a fusedrnn.{self._fr_quantized.__name__} (made by "
                            f"fusedrnn.{self._fr_class.__name__}.quantize), got "  # type: ignore[attr-defined]
                            f"{type(layer).__name__}")
        nn.Module.__init__(self)  # type: ignore[arg-type]
        self._config = self._config_of(layer)  # type: ignore[attr-defined]
        self.input_size: int = layer.input_size
        self.hidden_size: int = layer.hidden_size
        self.num_layers: int = layer.num_layers
        self.bidirectional: bool = layer.bidirectional
        self.dropout: float = 0.0
        self.batch_first: bool = layer.batch_first
        self.precision: str = layer.precision
        self._names: Tuple[str, ...] = ()
        self.quantized_layer = layer  # read-only weights: shared safely
        self.eval()  # type: ignore[attr-defined]

    @classmethod
    def from_fusedrnn(cls, layer: Any) -> Any:
        """The module of a fusedrnn QuantizedLSTM / QuantizedRNN / QuantizedGRU (shared:
        its weights are read-only)."""
        return cls(layer)

    def _refuse(self, what: str) -> ValueError:
        return ValueError(f"fusedrnn.torch.{type(self).__name__} ({self.precision}) is for "
                          f"inference only: {what}")

    def _weights(self, check: bool = True) -> Tuple[List[Tensor], torch.dtype]:
        return [], torch.float32

    @property
    def fr_layer(self) -> Any:
        """The fusedrnn quantized layer this module runs."""
        return self.quantized_layer

    def to_fusedrnn(self) -> Any:
        """A copy of the fusedrnn quantized layer."""
        import copy
        return copy.deepcopy(self.quantized_layer)

    def quantize(self, precision: str) -> Any:
        raise self._refuse("it is quantized already; quantize the float module")

    def stream(self, batch: int, state: Any = None, *, weights: str = "live") -> Any:
        raise self._refuse("its streams are NumPy streams: use "
                           "module.quantized_layer.stream(batch)")

    def reset_parameters(self) -> None:
        raise self._refuse("its weights are fixed; quantize a float module again instead")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", precision={self.precision!r}"  # type: ignore[misc]

    def _run(self, x: Tensor, s0: Optional[Tensor], o0: Optional[Tensor], x_past: Optional[Tensor],
             lengths: Any, x_future: Optional[Tensor], unbatched: bool
             ) -> Tuple[Tensor, Tensor, Tensor]:
        if torch.compiler.is_compiling() or torch.compiler.is_exporting() or \
                torch.jit.is_tracing():
            raise self._refuse("it cannot be compiled, exported or traced (its forward is a "
                               "NumPy call, not a registered operator); call it eagerly, or "
                               "compile / export the float module")
        if self.training:  # type: ignore[attr-defined]
            raise self._refuse("it is in training mode; call module.eval() (train the float "
                               "module and quantize it again)")
        given = [t for t in (x, s0, o0, x_past, x_future) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in given):
            raise self._refuse("an input requires grad, but there is no backward; run it under "
                               "torch.no_grad() / torch.inference_mode(), or pass detached "
                               "tensors")
        layer = self.quantized_layer
        lens = self._lengths(lengths, x, unbatched)  # type: ignore[attr-defined]
        gru = isinstance(layer, _FrGRU)  # its state is h alone (the o channel)
        state = None
        if o0 is not None and (gru or s0 is not None):
            state = layer.State(*(_as_numpy(t) for t in ((o0,) if gru else (s0, o0))),
                                *(() if x_past is None else (_as_numpy(x_past),)))
        y, st = layer.forward(_as_numpy(x), state, training=False,
                              lengths=None if lens is None else lens.numpy(),
                              x_future=None if x_future is None else _as_numpy(x_future))
        if gru:
            return torch.from_numpy(y), None, torch.from_numpy(st.h)  # type: ignore[return-value]
        return torch.from_numpy(y), torch.from_numpy(st[0]), torch.from_numpy(st[1])


class QuantizedLSTM(_QuantizedModule, LSTM):
    """An inference-only `fusedrnn.torch.LSTM` with its weight products in bfloat16 or int8:
    the module of a `fusedrnn.QuantizedLSTM`, made by `fusedrnn.torch.LSTM.quantize(...)`,
    `fusedrnn.torch.LSTM.from_fusedrnn(fr_lstm.quantize(...))` or `QuantizedLSTM(q)`.

        q = frt.LSTM.from_fusedrnn(fr_lstm).quantize("int8")   # eval mode
        with torch.inference_mode():
            out, (h, c) = q(x, (h0, c0), lengths=lengths)       # as the float module

    Its forward is `q.quantized_layer.forward` (bit for bit) on numpy views of the
    tensors. It has no parameters and no backward: training mode, inputs that require
    grad (with grad enabled), torch.compile, torch.export and torch.jit.trace raise
    ValueError."""

    _fr_quantized = _FrQuantizedLSTM


class QuantizedRNN(_QuantizedModule, RNN):
    """An inference-only `fusedrnn.torch.RNN` with W_x x[n] and W_r r[n-1] in bfloat16 or
    int8: the module of a `fusedrnn.QuantizedRNN` (see `QuantizedLSTM`)."""

    _fr_quantized = _FrQuantizedRNN


class QuantizedGRU(_QuantizedModule, GRU):
    """An inference-only `fusedrnn.torch.GRU` with W_x x[n] and W_h* h[n-1] (and, with
    linear_before_reset=False, W_hn (r[n] * h[n-1])) in bfloat16 or int8: the module of a
    `fusedrnn.QuantizedGRU` (see `QuantizedLSTM`); `out, h = q(x, h0, lengths=...)`."""

    _fr_quantized = _FrQuantizedGRU


_QUANTIZED_MODULES: Dict[Any, Any] = {_FrLSTM: QuantizedLSTM, _FrRNN: QuantizedRNN,
                                      _FrGRU: QuantizedGRU}


def _quantized_module(q: Any) -> Any:
    """The inference-only module around a quantized fusedrnn layer."""
    cls = _QUANTIZED_MODULES.get(q._FLOAT)
    if cls is None:
        raise TypeError(f"fusedrnn.torch has no module for a {type(q).__name__}: run the "
                        f"fusedrnn layer itself (q.forward(x, training=False))")
    return cls(q)
