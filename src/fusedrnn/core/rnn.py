"""`fr.RNN`: the canonical RNN of Sherstinsky (2020) §2-§4, docs/equations.md §1, on the fused C kernel."""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, cast

import numpy as np

from .. import _kernel
from . import _activations as _acts
from . import _threads
from . import _validate as V
from ._layer import CellTape, RecurrentLayer, flat


class RNNState(NamedTuple):
    """Canonical RNN state, each field (layers * directions, B, H): the state s
    and the readout r = G(s) (PyTorch's h; G = tanh by default)."""

    s: np.ndarray
    r: np.ndarray


class RNN(RecurrentLayer):
    """The canonical RNN (docs/equations.md §1), stacked and bidirectional (§4):

        s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + θ_s,   r[n] = G(clip(s[n], -c, c))

    With state_feedback=False (default) W_s = 0 and the network equals
    `torch.nn.RNN(nonlinearity="tanh")` (activation="relu": nonlinearity="relu").
    activation: G, the warping function (default "tanh"): a name or a tuple
    (name, alpha[, beta]) of ONNX's activations ("sigmoid", "tanh", "relu",
    ("hard_sigmoid", a, b), ("affine", a, b), ("leaky_relu", a),
    ("thresholded_relu", a), ("scaled_tanh", a, b), ("elu", a), "softsign",
    "softplus"; docs/equations.md §9), or a list of two, one per direction, when
    bidirectional. accumulation_clip: c, G sees s[n] clipped to [-c, c] (ONNX's
    clip; the state s keeps the unclipped value); None (default): no clip. `params`, per cell (suffix "",
    "_reverse", "_l1", ...):
        "W_x" (H, I_l), "W_r" (H, H), "theta_s" (H,) (PyTorch's bias_ih + bias_hh),
        "W_s" (H, H) only with state_feedback=True.
    The output sequence is r[n] (directions concatenated); the state is
    RNNState(s, r). Options num_layers, bidirectional, dropout, dtype,
    batch_first, reverse, seed and forward's lengths are as for `fr.LSTM`.
    """

    State = RNNState
    _CONFIG = RecurrentLayer._CONFIG | {"state_feedback", "activation", "accumulation_clip"}
    _STATE_HINT = ("s is the state and r = G(s) the readout (torch's h); torch.nn.RNN's h0 is "
                   "fr.RNN.State(s=np.zeros_like(h0), r=h0) (without state_feedback, "
                   "s[-1] is only the state reported for rows of length 0)")

    def __init__(self, input_size: int, hidden_size: int, state_feedback: bool = False, *,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 dtype: Any = np.float32, batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, activation: Any = "tanh",
                 accumulation_clip: Optional[float] = None) -> None:
        self.state_feedback = V.flag(state_feedback, "state_feedback")
        self.activation, G = _acts.layer_option(activation, 2 if bidirectional is True else 1,
                                                "activation")
        self._warps = tuple(None if f == _acts.TANH else _acts.kernel(f) for f in G)
        self.accumulation_clip = V.optional_positive(accumulation_clip, "accumulation_clip")
        super().__init__(input_size, hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         batch_first=batch_first, reverse=reverse, seed=seed)

    def __repr__(self) -> str:
        return (f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"state_feedback={self.state_feedback}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype.name}, "
                f"batch_first={self.batch_first}"
                + (", reverse=True" if self.reverse else "")
                + (f", activation={self.activation!r}" if self.activation != "tanh" else "")
                + (f", accumulation_clip={self.accumulation_clip!r}"
                   if self.accumulation_clip is not None else "") + ")")

    def _cell_param_shapes(self, in_size: int) -> Dict[str, Tuple[int, ...]]:
        H = self.hidden_size
        shapes: Dict[str, Tuple[int, ...]] = {"W_x": (H, in_size), "W_r": (H, H), "theta_s": (H,)}
        if self.state_feedback:
            shapes["W_s"] = (H, H)
        return shapes

    def _cell_config(self, T: int, B: int, in_size: int, lengths: Optional[np.ndarray],
                     reverse: bool) -> "_kernel.RNNConfig":
        return _kernel.RNNConfig(T, B, in_size, self.hidden_size, self.state_feedback, reverse,
                                 lengths, _threads.kernel_threads(),
                                 activation=self._warps[1 if self.bidirectional and reverse else 0],
                                 accumulation_clip=self.accumulation_clip or 0.0)

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        _kernel.rnn_forward(cfg, r_seq=flat(y), s_T=flat(s_T), r_T=flat(o_T), acts=acts,
                            work=work, x=flat(x), s0=flat(s0), r0=flat(o0), W_x=flat(p["W_x"]),
                            W_r=flat(p["W_r"]), theta_s=flat(p["theta_s"]),
                            W_s=flat(p.get("W_s")), packed=packed)

    _PACKED = ("W_x", "W_r", "W_s")

    def _pack_weights(self, cfg: Any, p: Dict[str, np.ndarray]) -> Any:
        return _kernel.RNNPackedWeights(cfg, W_x=flat(p["W_x"]), W_r=flat(p["W_r"]),
                                        W_s=flat(p.get("W_s")))

    def _kernel_backward(self, cfg: Any, tape: CellTape, g: Dict[str, np.ndarray], work: np.ndarray,
                         dx: np.ndarray, ds0: np.ndarray, do0: np.ndarray, dy: Optional[np.ndarray],
                         ds_T: Optional[np.ndarray], do_T: Optional[np.ndarray]) -> None:
        p = tape.params
        _kernel.rnn_backward(cfg, dW_x=flat(g["W_x"]), dW_r=flat(g["W_r"]),
                             dtheta_s=flat(g["theta_s"]), dW_s=flat(g.get("W_s")), dx=flat(dx),
                             ds0=flat(ds0), dr0=flat(do0), work=work, dr_seq=flat(dy),
                             ds_T=flat(ds_T), dr_T=flat(do_T), acts=tape.acts, x=flat(tape.x),
                             r_seq=flat(tape.y), s0=flat(tape.s0), r0=flat(tape.o0),
                             W_x=flat(p["W_x"]), W_r=flat(p["W_r"]), W_s=flat(p.get("W_s")))

    @classmethod
    def from_torch(cls, module: Any) -> "RNN":
        """An RNN with the exact weights of a `torch.nn.RNN(nonlinearity='tanh')`
        (any num_layers, bidirectional, bias): W_x = weight_ih_l{k}, W_r =
        weight_hh_l{k}, theta_s = bias_ih_l{k} + bias_hh_l{k}."""
        from ..interop._torch import rnn_from_torch
        return cast("RNN", rnn_from_torch(cls, module))

    def to_torch(self) -> Any:
        """A `torch.nn.RNN` computing the same function (state_feedback must be off)."""
        from ..interop._torch import rnn_to_torch
        return rnn_to_torch(self)

    @classmethod
    def from_keras(cls, layer: Any) -> "RNN":
        """A batch_first RNN with the exact weights of a built Keras 3
        `keras.layers.SimpleRNN` (activation="tanh"), or of a
        `keras.layers.Bidirectional` of one: W_x = kernel.T, W_r =
        recurrent_kernel.T, theta_s = bias; go_backwards -> reverse=True (see
        `fr.LSTM.from_keras` for what is refused and the output order)."""
        from ..interop._keras import rnn_from_keras
        return cast("RNN", rnn_from_keras(cls, layer))

    def to_keras(self, *, return_sequences: bool = True, return_state: bool = True,
                 name: Optional[str] = None) -> Any:
        """A built Keras 3 `keras.layers.SimpleRNN` (or a `keras.layers.Bidirectional`
        of two) with this RNN's weights (one layer, state_feedback off)."""
        from ..interop._keras import rnn_to_keras
        return rnn_to_keras(self, return_sequences, return_state, name)
