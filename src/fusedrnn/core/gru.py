"""`fr.GRU`: the gated recurrent unit (Cho et al. 2014), docs/equations.md §8, in both
formulations, on the fused C kernel."""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, cast

import numpy as np

from .. import _kernel
from . import _activations as _acts
from . import _threads
from . import _validate as V
from ._layer import CellTape, RecurrentLayer, flat, suffix

GATES = ("r", "z", "n")  # reset, update, new (candidate): PyTorch's order


class GRUState(NamedTuple):
    """GRU state: h (layers * directions, B, H), the state, which is also the
    output fed back (PyTorch's h)."""

    h: np.ndarray


class GRU(RecurrentLayer):
    """The GRU (docs/equations.md §8), stacked and bidirectional (§4). For each
    step n of each layer and direction (σ = sigmoid, ⊙ element-wise):

        r[n] = σ(W_xr x[n] + W_hr h[n-1] + b_r)                   (reset gate)
        z[n] = σ(W_xz x[n] + W_hz h[n-1] + b_z)                   (update gate)
        linear_before_reset=True (default; torch.nn.GRU, Keras reset_after=True):
            u[n] = tanh(W_xn x[n] + b_n + r[n] ⊙ (W_hn h[n-1] + b_hn))
        linear_before_reset=False (Cho et al.'s original, ONNX's default):
            u[n] = tanh(W_xn x[n] + W_hn (r[n] ⊙ h[n-1]) + b_n)
        h[n] = (1 - z[n]) ⊙ u[n] + z[n] ⊙ h[n-1]

    gate_activation: the warping function of the r and z gates (σ above, default
    "sigmoid"; ONNX's f); cell_activation: that of the candidate u (tanh above,
    default "tanh"; ONNX's g). Each is a name or a tuple (name, alpha[, beta]) of
    ONNX's activations: "sigmoid", "tanh", "relu", ("hard_sigmoid", a, b),
    ("affine", a, b), ("leaky_relu", a), ("thresholded_relu", a), ("scaled_tanh",
    a, b), ("elu", a), "softsign", "softplus" (docs/equations.md §9); a
    bidirectional layer takes a list of two for one per direction (forward
    first). accumulation_clip: c, the accumulations of r, z and u are clipped to
    [-c, c] before warping (ONNX's clip); None (default): no clip.

    `params`, per cell (suffix "", "_reverse", "_l1", ...):
        "W_x" (3H, I_l) = [W_xr; W_xz; W_xn]   (PyTorch's weight_ih)
        "W_h" (3H, H)   = [W_hr; W_hz; W_hn]   (PyTorch's weight_hh)
        "b"   (3H,)     = [b_r; b_z; b_n]      (bias_ih, plus bias_hh in the r and z rows)
        "b_hn" (H,)     with linear_before_reset only (bias_hh in the n rows)
    The output sequence is h[n] (directions concatenated); the state is GRUState(h).
    Options num_layers, bidirectional, dropout, dtype, batch_first, reverse, seed and
    forward's lengths are as for `fr.LSTM`.
    """

    State = GRUState
    _STATE_CHANNELS = ("o",)  # h is the output fed back; there is no separate state
    _CONFIG = RecurrentLayer._CONFIG | {"linear_before_reset", "gate_activation",
                                         "cell_activation", "accumulation_clip"}
    _STATE_HINT = "h is the state and the output fed back, as torch.nn.GRU's h: fr.GRU.State(h=h0)"

    def __init__(self, input_size: int, hidden_size: int, *, linear_before_reset: bool = True,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 dtype: Any = np.float32, batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, gate_activation: Any = "sigmoid",
                 cell_activation: Any = "tanh",
                 accumulation_clip: Optional[float] = None) -> None:
        self.linear_before_reset = V.flag(linear_before_reset, "linear_before_reset")
        D = 2 if bidirectional is True else 1
        self.gate_activation, f = _acts.layer_option(gate_activation, D, "gate_activation")
        self.cell_activation, g = _acts.layer_option(cell_activation, D, "cell_activation")
        # per direction: None for the default (sigmoid, tanh), else the kernel's pairs
        self._warps = tuple(None if (f[d], g[d]) == (_acts.SIGMOID, _acts.TANH)
                            else (_acts.kernel(f[d]), _acts.kernel(g[d])) for d in range(D))
        self.accumulation_clip = V.optional_positive(accumulation_clip, "accumulation_clip")
        super().__init__(input_size, hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         batch_first=batch_first, reverse=reverse, seed=seed)

    def __repr__(self) -> str:
        opts = [f"linear_before_reset={self.linear_before_reset}"]
        for name, default in (("num_layers", 1), ("bidirectional", False), ("dropout", 0.0),
                              ("batch_first", False), ("reverse", False),
                              ("gate_activation", "sigmoid"), ("cell_activation", "tanh"),
                              ("accumulation_clip", None)):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)!r}")
        return (f"GRU(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"{', '.join(opts)}, dtype={self.dtype.name})")

    def _cell_param_shapes(self, in_size: int) -> Dict[str, Tuple[int, ...]]:
        H = self.hidden_size
        shapes: Dict[str, Tuple[int, ...]] = {"W_x": (3 * H, in_size), "W_h": (3 * H, H),
                                              "b": (3 * H,)}
        if self.linear_before_reset:
            shapes["b_hn"] = (H,)
        return shapes

    # -- kernel calls: h is the o channel (the s channel is not used) ---------------------
    def _cell_config(self, T: int, B: int, in_size: int, lengths: Optional[np.ndarray],
                     reverse: bool) -> "_kernel.GRUConfig":
        return _kernel.GRUConfig(T, B, in_size, self.hidden_size, self.linear_before_reset,
                                 reverse, lengths, _threads.kernel_threads(),
                                 reduced=self._reduced_code(),
                                 warps=self._warps[1 if self.bidirectional and reverse else 0],
                                 accumulation_clip=self.accumulation_clip or 0.0)

    def _reduced_code(self) -> int:
        """The kernel's reduced-precision code: 0 (float), fr.QuantizedGRU's 1 bf16, 2 int8."""
        return 0

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        _kernel.gru_forward(cfg, h_seq=flat(y), h_T=flat(o_T), acts=acts, work=work, x=flat(x),
                            h0=flat(o0), W_x=flat(p["W_x"]), W_h=flat(p["W_h"]), b=flat(p["b"]),
                            b_hn=flat(p.get("b_hn")), packed=packed)

    _PACKED = ("W_x", "W_h")

    def _pack_weights(self, cfg: Any, p: Dict[str, np.ndarray]) -> Any:
        return _kernel.GRUPackedWeights(cfg, W_x=flat(p["W_x"]), W_h=flat(p["W_h"]))

    def _kernel_backward(self, cfg: Any, tape: CellTape, g: Dict[str, np.ndarray], work: np.ndarray,
                         dx: np.ndarray, ds0: np.ndarray, do0: np.ndarray, dy: Optional[np.ndarray],
                         ds_T: Optional[np.ndarray], do_T: Optional[np.ndarray]) -> None:
        p = tape.params
        _kernel.gru_backward(cfg, dW_x=flat(g["W_x"]), dW_h=flat(g["W_h"]), db=flat(g["b"]),
                             db_hn=flat(g.get("b_hn")), dx=flat(dx), dh0=flat(do0), work=work,
                             dh_seq=flat(dy), dh_T=flat(do_T), acts=tape.acts, x=flat(tape.x),
                             h_seq=flat(tape.y), h0=flat(tape.o0), W_x=flat(p["W_x"]),
                             W_h=flat(p["W_h"]))

    # -- per-gate names ---------------------------------------------------------------------
    def _paper_views(self, store: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Per gate under the names of docs/equations.md §8: W_xr (H, I), W_hr (H, H),
        b_r (H,), ..., b_hn (H,), with the cell suffix."""
        views = self._gate_views(store, {"W_x": "W_x", "W_h": "W_h", "b": "b_"}, GATES)
        if self.linear_before_reset:
            views.update({k: v for k, v in store.items() if k.startswith("b_hn")})
        return views

    # -- PyTorch interop ----------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: Any) -> "GRU":
        """A GRU with the exact weights of a `torch.nn.GRU` (any num_layers,
        bidirectional, bias, batch_first, dtype): W_x = weight_ih_l{k}, W_h =
        weight_hh_l{k}, b = bias_ih_l{k} + [bias_hh_l{k} in the r, z rows, 0],
        b_hn = bias_hh_l{k} in the n rows; torch's dropout is carried over."""
        from ..interop._torch import gru_from_torch
        return cast("GRU", gru_from_torch(cls, module))

    def to_torch(self) -> Any:
        """A `torch.nn.GRU` computing the same function (linear_before_reset must be
        True: torch has only that formulation; and sigmoid, tanh without a clip)."""
        from ..interop._torch import gru_to_torch
        return gru_to_torch(self)

    # -- Keras interop ------------------------------------------------------------------------
    @classmethod
    def from_keras(cls, layer: Any) -> "GRU":
        """A batch_first GRU with the exact weights of a built Keras 3
        `keras.layers.GRU`, or of a `keras.layers.Bidirectional` of one:
        recurrent_activation -> gate_activation, activation -> cell_activation (the
        Keras names `fr.LSTM.from_keras` maps); reset_after=True (Keras' default)
        is linear_before_reset=True, reset_after=False is False; the gates are
        reordered from Keras' (z, r, h); go_backwards -> reverse=True (see
        `fr.LSTM.from_keras` for what is refused and the output order)."""
        from ..interop._keras import gru_from_keras
        return cast("GRU", gru_from_keras(cls, layer))

    def to_keras(self, *, return_sequences: bool = True, return_state: bool = True,
                 name: Optional[str] = None) -> Any:
        """A built Keras 3 `keras.layers.GRU` (or a `keras.layers.Bidirectional` of
        two) with this GRU's weights and reset_after=linear_before_reset (one layer)."""
        from ..interop._keras import gru_to_keras
        return gru_to_keras(self, return_sequences, return_state, name)
