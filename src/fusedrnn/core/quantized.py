"""Inference in reduced precision: `layer.quantize("bf16")` or `layer.quantize("int8")`.

    q = lstm.quantize("int8")                  # an inference-only copy of a trained fr.LSTM
    y, state = q.forward(x, training=False)    # as lstm.forward(x, training=False)

The weight products of every step (W_x X[n], W_v v[n-1], W_qv v[n]; the RNN's W_x x[n] and
W_r r[n-1]; the GRU's W_x x[n], W_h* h[n-1] and, without linear_before_reset,
W_hn (r[n] ⊙ h[n-1])) run in bfloat16 or int8 on the CPU's fastest instructions for them; the states,
biases, peepholes, the sums and the outputs stay float32. The scheme (rounding, the int8
scales) is docs/equations.md §7, and `fusedrnn.reference` computes it in plain NumPy
(`precision=` of its cells).

A quantized layer stores its reduced weights as its parameters: bf16 as uint16 bit patterns,
int8 as int8 with one float32 scale per row (output unit) under "<name>_scale"; the other
parameters stay float32. They are read-only (the kernel packs them once), survive `fr.save` /
`fr.load` bit for bit, and take half (bf16) or about a quarter (int8) of the float32 bytes.

`q.stream(batch)` streams a quantized LSTM or RNN (fusedrnn.stream), `fusedrnn.torch.LSTM.
from_fusedrnn(q)` runs it as a torch module for inference, and `fr.onnx.export` writes an
int8 LSTM as ONNX Runtime's DynamicQuantizeLSTM."""
from __future__ import annotations

import re
import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .. import _kernel
from . import _threads
from ._layer import flat
from .gru import GRU
from .lstm import _PEEP_CODES, LSTM
from .rnn import RNN

__all__ = ["PRECISIONS", "QuantizedGRU", "QuantizedLSTM", "QuantizedRNN", "quantize",
           "reduce_weight", "assemble"]

PRECISIONS = ("bf16", "int8")
_STORAGE = {"bf16": np.dtype(np.uint16), "int8": np.dtype(np.int8)}
_REDUCED_CODES = {"bf16": 1, "int8": 2}  # fr_lstm_config.reduced
_KEY = re.compile(r"^(.*?)((?:_l\d+)?(?:_reverse)?)$")


def _split_key(key: str) -> Tuple[str, str]:
    """"W_x_scale_l1_reverse" -> ("W_x_scale", "_l1_reverse"): a cell's name and suffix."""
    m = _KEY.match(key)
    assert m is not None
    return m.group(1), m.group(2)


def check_precision(precision: Any) -> str:
    """'bf16' or 'int8', else ValueError naming what is supported."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be 'bf16' or 'int8' (inference in bfloat16 or int8 "
                         f"weight products), got {precision!r}")
    return precision


def reduce_weight(W: np.ndarray, precision: str) -> Dict[str, np.ndarray]:
    """A float weight (N, K) in reduced precision: {"": bf16 bits (N, K) uint16} or
    {"": int8 (N, K), "_scale": (N,) float32} (docs/equations.md §7)."""
    W = np.ascontiguousarray(W, dtype=np.float32)
    if not np.all(np.isfinite(W)):
        raise ValueError("cannot quantize weights that are not finite (NaN or inf)")
    N, K = W.shape
    if check_precision(precision) == "bf16":
        bits = np.empty(N * K, np.uint16)
        _kernel.bf16_round(W.reshape(-1), bits)
        return {"": bits.reshape(N, K)}
    q = np.empty((N, K), np.int8)
    s = np.empty(N, np.float32)
    _kernel.s8_quantize(W, q, s)
    return {"": q, "_scale": s}


class _Quantized:
    """What the quantized LSTM, RNN and GRU share. A subclass names the reduced weights of a
    cell (`_REDUCED`) and its float class (`_FLOAT`)."""

    _REDUCED: Tuple[str, ...] = ()
    _FLOAT: type = object
    _PACKED: Tuple[str, ...] = ()  # the reduced panels are kept by `_packed_cell`
    precision: str

    def _setup_precision(self, precision: Any, dtype: Any) -> None:
        object.__setattr__(self, "precision", check_precision(precision))
        if np.dtype(dtype) != np.float32:
            raise TypeError(f"a {precision} layer computes in float32: dtype must be float32, "
                            f"got {np.dtype(dtype)}")

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # type: ignore[misc]
        del state["_packed"], state["_pack_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        for p in self.params.values():
            p.flags.writeable = False
        self._packed = {}
        self._pack_lock = threading.Lock()

    def _packed_cell(self, p: Dict[str, np.ndarray], make: Any) -> Any:
        """The kernel's packed panels of one cell's reduced weights, made on first use
        (the parameters are read-only, so they stay valid)."""
        key = id(p["W_x"])
        with self._pack_lock:
            hit = self._packed.get(key)
            if hit is None or hit[0] is not p["W_x"]:
                hit = (p["W_x"], make())
                self._packed[key] = hit
        return hit[1]

    def _finish_params(self) -> None:
        """Replace the float parameters the base constructor drew by zeros of the stored
        dtypes (the values come from `quantize` or a checkpoint), read-only."""
        dtypes = self._param_dtypes()
        self.params = {k: np.zeros(shape, dtypes[k]) for k, shape in self._param_shapes().items()}
        for p in self.params.values():
            p.flags.writeable = False
        self.grads = {}
        self._packed: Dict[int, Any] = {}
        self._pack_lock = threading.Lock()

    # -- parameters ---------------------------------------------------------------------
    def _cell_param_shapes(self, in_size: int) -> Dict[str, Tuple[int, ...]]:
        shapes = dict(super()._cell_param_shapes(in_size))  # type: ignore[misc]
        if self.precision == "int8":
            for name in self._REDUCED:
                if name in shapes:
                    shapes[name + "_scale"] = (shapes[name][0],)
        return shapes

    def _param_dtypes_for(self, keys: Any) -> Dict[str, np.dtype]:
        """The stored dtype of each parameter key: the reduced weights' (uint16 or int8),
        else float32 (biases, peepholes, scales)."""
        reduced = _STORAGE[self.precision]
        return {k: reduced if _split_key(k)[0] in self._REDUCED else np.dtype(np.float32)
                for k in keys}

    def _param_dtypes(self) -> Dict[str, np.dtype]:
        return self._param_dtypes_for(self._param_shapes())  # type: ignore[attr-defined]

    def _fixed_layout(self) -> Any:
        """(key, shape, dtype) of every parameter, computed once (the configuration is
        read-only)."""
        return self._fixed_once("layout", lambda: [  # type: ignore[attr-defined]
            (k, shape, self._param_dtypes()[k]) for k, shape in self._param_shapes().items()])

    def _checked_params(self, store: Optional[Dict[str, np.ndarray]] = None
                        ) -> Dict[str, np.ndarray]:
        if store is not None and store is not self.params:
            raise ValueError(f"a {self.precision} layer runs on its own parameters only")
        params = self.params
        for k, shape, dtype in self._fixed_layout():
            a = params.get(k)
            # read-only: the kernel packs the weights once, so they must not change
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype \
                    or a.flags.writeable or not a.flags.c_contiguous:
                raise ValueError(f"params[{k!r}] must be the layer's read-only {dtype}"
                                 f"{shape} array; a quantized layer's parameters cannot be "
                                 "replaced or changed (quantize the float layer again instead)")
        return params

    @property
    def nbytes(self) -> int:
        """Bytes of the parameters as stored (scales included)."""
        return int(sum(p.nbytes for p in self.params.values()))

    # -- what a quantized layer does not do ---------------------------------------------------
    def _inference_only(self, what: str) -> ValueError:
        return ValueError(f"{type(self).__name__} ({self.precision}) is for inference only: "
                          f"{what}; train the float layer and quantize it again")

    def forward(self, x: Any, state: Any = None, training: bool = False, lengths: Any = None,
                x_future: Any = None) -> Tuple[np.ndarray, Any]:
        """As the float layer's forward(x, state, training=False, lengths, x_future), with the
        weight products in reduced precision. training=True raises ValueError."""
        if training:
            raise self._inference_only("forward(x, training=True) is not available (no "
                                       "activations are kept, there is no backward)")
        return super().forward(x, state, training=False, lengths=lengths,  # type: ignore[misc]
                               x_future=x_future)

    def __call__(self, x: Any, state: Any = None, training: bool = False, lengths: Any = None,
                 x_future: Any = None) -> Tuple[np.ndarray, Any]:
        return self.forward(x, state, training=training, lengths=lengths, x_future=x_future)

    def backward(self, dy: Any = None, dstate: Any = None) -> Any:
        raise self._inference_only("backward() is not available")

    def zero_grad(self) -> None:
        raise self._inference_only("it has no gradients")

    def forward_with_tape(self, *args: Any, **kwargs: Any) -> Any:
        raise self._inference_only("forward_with_tape (a training forward) is not available")

    def backward_with_tape(self, *args: Any, **kwargs: Any) -> Any:
        raise self._inference_only("backward_with_tape is not available")

    def tape_layout(self, *args: Any, **kwargs: Any) -> Any:
        raise self._inference_only("it keeps no tape")

    def tape_size(self, *args: Any, **kwargs: Any) -> Any:
        raise self._inference_only("it keeps no tape")

    def quantize(self, precision: str) -> Any:
        raise ValueError(f"this layer is already quantized ({self.precision}); quantize the "
                         "float layer instead")

    def to_torch(self) -> Any:
        raise ValueError(f"a {self.precision} layer has no torch.nn equivalent of the same "
                         "precision; convert the float layer, or run this one as a torch module "
                         "for inference with fusedrnn.torch.LSTM.from_fusedrnn(layer)")

    def to_keras(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"a {self.precision} layer has no Keras equivalent; convert the "
                         "float layer")

    @property
    def paper_params(self) -> Dict[str, np.ndarray]:
        """The parameters (read-only): the reduced weights as stored, see `params`."""
        return dict(self.params)

    @property
    def paper_grads(self) -> Dict[str, np.ndarray]:
        raise self._inference_only("it has no gradients")

    def dequantized(self) -> Any:
        """The float32 layer whose weights are the reduced ones' values (bf16 exactly,
        int8 as q * scale): what the reduced products approximate."""
        cfg = _config(self)
        cfg.pop("precision")
        layer = self._FLOAT(**cfg)
        dtypes = self._param_dtypes()
        for k, p in layer.params.items():
            a = self.params[k]
            if dtypes[k] == _STORAGE["bf16"]:
                p[...] = (a.astype(np.uint32) << 16).view(np.float32)
            elif dtypes[k] == _STORAGE["int8"]:
                p[...] = a.astype(np.float32) * self.params[_with_suffix(k, "_scale")][:, None]
            else:
                p[...] = a
        return layer


def _config(layer: Any) -> Dict[str, Any]:
    """The constructor arguments of a layer (as a checkpoint stores them)."""
    from ..nn.checkpoint import _from_json, model_config
    return {k: _from_json(v) for k, v in model_config(layer)["config"].items()}


class QuantizedLSTM(_Quantized, LSTM):
    """An inference-only `fr.LSTM` with its weight products in bfloat16 or int8 (made by
    `LSTM.quantize`). Every option of the float layer (peepholes, projection, context
    windows, coupled gates, clips, stacks, bidirectional, reverse, lengths) computes as
    there, except that W_x X[n], W_v v[n-1] (W_q* q[n-1]) and W_qv v[n] are reduced
    (docs/equations.md §7); full peepholes stay float32.

    `params`: "W_x", "W_v", "W_qv" (+ suffixes) as uint16 bf16 bits or int8 (with
    "W_x_scale" (4H,), "W_v_scale" (4H,), "W_qv_scale" (P,) float32), the rest float32."""

    _REDUCED = ("W_x", "W_v", "W_qv")
    _FLOAT = LSTM
    _CONFIG = LSTM._CONFIG | {"precision"}

    def __init__(self, input_size: int, hidden_size: int, peepholes: Any = True, *,
                 precision: str, proj_size: int = 0, context: Tuple[int, int] = (0, 0),
                 coupled_gates: bool = False, cell_clip: Optional[float] = None,
                 accumulation_clip: Optional[float] = None, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, dtype: Any = np.float32,
                 batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, gate_activation: Any = "sigmoid",
                 cell_activation: Any = "tanh", output_activation: Any = "tanh") -> None:
        self._setup_precision(precision, dtype)
        super().__init__(input_size, hidden_size, peepholes, proj_size=proj_size,
                         context=context, coupled_gates=coupled_gates, cell_clip=cell_clip,
                         accumulation_clip=accumulation_clip, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         batch_first=batch_first, reverse=reverse, seed=seed,
                         gate_activation=gate_activation, cell_activation=cell_activation,
                         output_activation=output_activation)
        self._finish_params()

    def __repr__(self) -> str:
        return "Quantized" + super().__repr__()[:-1] + f", precision={self.precision!r})"

    def _cell_config(self, T: int, B: int, in_size: int, lengths: Optional[np.ndarray],
                     reverse: bool) -> "_kernel.LSTMConfig":
        return _kernel.LSTMConfig(T, B, in_size, self.hidden_size, self.proj_size,
                                  _PEEP_CODES[self.peepholes], self.coupled_gates, reverse,
                                  self.cell_clip or 0.0, self.accumulation_clip or 0.0, lengths,
                                  _threads.kernel_threads(), _REDUCED_CODES[self.precision],
                                  warps=self._warps[1 if self.bidirectional and reverse else 0])

    def _qpacked(self, cfg: Any, p: Dict[str, np.ndarray]) -> "_kernel.QPackedWeights":
        """One cell's reduced weights `p` packed for the kernel (made once per cell)."""
        return self._packed_cell(p, lambda: _kernel.QPackedWeights(
            cfg, W_x=p["W_x"], W_v=p["W_v"], W_qv=p.get("W_qv"), W_x_scale=p.get("W_x_scale"),
            W_v_scale=p.get("W_v_scale"), W_qv_scale=p.get("W_qv_scale")))

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        packed = self._qpacked(cfg, p)
        _kernel.lstm_forward_reduced(cfg, packed, y_seq=flat(y), s_T=flat(s_T), y_T=flat(o_T),
                                     work=work, x=flat(x), s0=flat(s0), y0=flat(o0),
                                     b=flat(p["b"]), W_s=flat(p.get("w_s", p.get("W_s"))))


class QuantizedRNN(_Quantized, RNN):
    """An inference-only `fr.RNN` with W_x x[n] and W_r r[n-1] in bfloat16 or int8 (made by
    `RNN.quantize`); the state feedback W_s s[n-1] stays float32 (docs/equations.md §7).

    `params`: "W_x", "W_r" (+ suffixes) as uint16 bf16 bits or int8 (with "W_x_scale",
    "W_r_scale" (H,) float32), "theta_s" and "W_s" float32."""

    _REDUCED = ("W_x", "W_r")
    _FLOAT = RNN
    _CONFIG = RNN._CONFIG | {"precision"}

    def __init__(self, input_size: int, hidden_size: int, state_feedback: bool = False, *,
                 precision: str, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, dtype: Any = np.float32, batch_first: bool = False,
                 reverse: bool = False, seed: Optional[int] = None, activation: Any = "tanh",
                 accumulation_clip: Optional[float] = None) -> None:
        self._setup_precision(precision, dtype)
        super().__init__(input_size, hidden_size, state_feedback, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         batch_first=batch_first, reverse=reverse, seed=seed,
                         activation=activation, accumulation_clip=accumulation_clip)
        self._finish_params()

    def __repr__(self) -> str:
        return "Quantized" + super().__repr__()[:-1] + f", precision={self.precision!r})"

    def _cell_config(self, T: int, B: int, in_size: int, lengths: Optional[np.ndarray],
                     reverse: bool) -> "_kernel.RNNConfig":
        return _kernel.RNNConfig(T, B, in_size, self.hidden_size, self.state_feedback, reverse,
                                 lengths, _threads.kernel_threads(),
                                 activation=self._warps[1 if self.bidirectional and reverse else 0],
                                 accumulation_clip=self.accumulation_clip or 0.0,
                                 reduced=_REDUCED_CODES[self.precision])

    def _qpacked(self, cfg: Any, p: Dict[str, np.ndarray]) -> "_kernel.RNNQPackedWeights":
        """One cell's reduced weights `p` packed for the kernel (made once per cell)."""
        return self._packed_cell(p, lambda: _kernel.RNNQPackedWeights(
            cfg, W_x=p["W_x"], W_r=p["W_r"], W_x_scale=p.get("W_x_scale"),
            W_r_scale=p.get("W_r_scale")))

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        packed = self._qpacked(cfg, p)
        _kernel.rnn_forward_reduced(cfg, packed, r_seq=flat(y), s_T=flat(s_T), r_T=flat(o_T),
                                    work=work, x=flat(x), s0=flat(s0), r0=flat(o0),
                                    theta_s=flat(p["theta_s"]), W_s=flat(p.get("W_s")))


class QuantizedGRU(_Quantized, GRU):
    """An inference-only `fr.GRU` with its weight products in bfloat16 or int8 (made by
    `GRU.quantize`): W_x x[n] and W_h* h[n-1] of the three gates, and without
    linear_before_reset W_hn (r[n] ⊙ h[n-1]), whose activation r[n] ⊙ h[n-1] is rounded or
    quantized per row at every step too (docs/equations.md §7); the biases, the gates and
    h stay float32. Both formulations, stacks, bidirectional, reverse and lengths compute
    as in the float layer.

    `params`: "W_x", "W_h" (+ suffixes) as uint16 bf16 bits or int8 (with "W_x_scale",
    "W_h_scale" (3H,) float32), "b" and "b_hn" float32."""

    _REDUCED = ("W_x", "W_h")
    _FLOAT = GRU
    _CONFIG = GRU._CONFIG | {"precision"}

    def __init__(self, input_size: int, hidden_size: int, *, precision: str,
                 dtype: Any = np.float32, **options: Any) -> None:
        """As fr.GRU(input_size, hidden_size, **options), float32 only, with `precision`."""
        self._setup_precision(precision, dtype)
        super().__init__(input_size, hidden_size, dtype=dtype, **options)
        self._finish_params()

    def __repr__(self) -> str:
        return "Quantized" + super().__repr__()[:-1] + f", precision={self.precision!r})"

    def config(self) -> Dict[str, Any]:
        """The constructor arguments (what a checkpoint stores): fr.GRU's and `precision`."""
        from ..nn.checkpoint import constructor_args
        return {**constructor_args(self, GRU), "precision": self.precision}

    def _reduced_code(self) -> int:
        return _REDUCED_CODES[self.precision]

    def _qpacked(self, cfg: Any, p: Dict[str, np.ndarray]) -> "_kernel.GRUQPackedWeights":
        """One cell's reduced weights `p` packed for the kernel (made once per cell)."""
        return self._packed_cell(p, lambda: _kernel.GRUQPackedWeights(
            cfg, W_x=p["W_x"], W_h=p["W_h"], W_x_scale=p.get("W_x_scale"),
            W_h_scale=p.get("W_h_scale")))

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        packed = self._qpacked(cfg, p)
        _kernel.gru_forward_reduced(cfg, packed, h_seq=flat(y), h_T=flat(o_T), work=work,
                                    x=flat(x), h0=flat(o0), b=flat(p["b"]),
                                    b_hn=flat(p.get("b_hn")))


_QUANTIZED = {LSTM: QuantizedLSTM, RNN: QuantizedRNN, GRU: QuantizedGRU}


def quantize(model: Any, precision: str) -> Any:
    """An inference-only copy of `model` (fr.LSTM, fr.RNN, fr.GRU, or fr.Sequential of them
    and fr.Linear, whose Linear layers stay float32) with its weight products in
    `precision`."""
    from .linear import Linear
    from .sequential import Sequential
    check_precision(precision)
    if isinstance(model, Sequential):
        return Sequential(*(l if isinstance(l, Linear) else quantize(l, precision)
                            for l in model.layers))
    if isinstance(model, _Quantized):
        return model.quantize(precision)
    cls = _QUANTIZED.get(type(model))
    if cls is None:
        raise TypeError(f"quantize takes an fr.LSTM, an fr.RNN, an fr.GRU or an fr.Sequential "
                        f"of them and Linear layers, got {type(model).__name__}")
    params: Dict[str, np.ndarray] = {}
    for k, p in model.params.items():
        if _split_key(k)[0] in cls._REDUCED:
            params.update((_with_suffix(k, sfx), a)
                          for sfx, a in reduce_weight(p, precision).items())
        else:
            params[k] = p
    return assemble(model, precision, params)


def assemble(template: Any, precision: str, params: Dict[str, np.ndarray]) -> Any:
    """The quantized layer of `template`'s configuration (an fr.LSTM, fr.RNN or fr.GRU) whose
    stored parameters are `params` (every key of the quantized layer: the reduced
    weights as uint16 bf16 bits or int8, "<name>_scale" rows, the rest float32), copied
    and made read-only. ValueError naming a key that is missing or of another shape."""
    cls = _QUANTIZED[type(template)]
    cfg = _config(template)
    cfg["dtype"] = np.float32
    q = cls(**cfg, precision=precision)
    dtypes = q._param_dtypes()
    for key, dst in q.params.items():
        src = params.get(key)
        if src is None or np.shape(src) != dst.shape:
            raise ValueError(f"params[{key!r}] must be given with shape {dst.shape}, got "
                             f"{'nothing' if src is None else np.shape(src)}")
        dst.flags.writeable = True
        dst[...] = np.asarray(src).astype(dtypes[key], copy=False)
        dst.flags.writeable = False
    return q


def _with_suffix(key: str, sfx: str) -> str:
    """"W_x_l1_reverse" + "_scale" -> "W_x_scale_l1_reverse" (the cell suffix stays last)."""
    name, cell = _split_key(key)
    return name + sfx + cell
