"""`fr.LSTM`: the Vanilla LSTM of Sherstinsky (2020) §5 and its augmented
extensions (§6; docs/equations.md §2-§4), on the fused C kernel."""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, cast

import numpy as np

from . import _activations as _acts
from . import _context, _threads
from .. import _kernel
from . import _validate as V
from ._layer import CellTape, RecurrentLayer, Tape, flat, suffix

GATES = ("cu", "cs", "du", "cr")  # control update, control state, data update, control readout
PEEPHOLE_GATES = ("cu", "cs", "cr")
_PEEP_CODES = {None: 0, False: 0, "none": 0, True: 1, "diagonal": 1, "full": 2}


class LSTMState(NamedTuple):
    """LSTM state. s: cell states (L*D, B, H) (PyTorch's c); v: the outputs fed
    back (L*D, B, R) (PyTorch's h; q = W_qv v with a projection); x_past: the
    last L_past input frames (L_past, B, I) for a context window, else None."""

    s: np.ndarray
    v: np.ndarray
    x_past: Optional[np.ndarray] = None


def _peephole_mode(peepholes: Any) -> str:
    try:
        code = _PEEP_CODES[peepholes]
    except (KeyError, TypeError):
        raise ValueError("peepholes must be 'diagonal' (or True), 'full', or None (or False), "
                         f"got {peepholes!r}") from None
    return ("none", "diagonal", "full")[code]


class LSTM(RecurrentLayer):
    """LSTM network: the Vanilla LSTM with peepholes (docs/equations.md §2) and the paper's
    augmented LSTM (§3), stacked and bidirectional (§4).

    For each step n of each layer and direction (σ = sigmoid, ⊙ element-wise):
        a_cu = W_xcu X[n] + W_scu s[n-1] + W_vcu v[n-1] + b_cu     (input gate)
        a_cs = W_xcs X[n] + W_scs s[n-1] + W_vcs v[n-1] + b_cs     (forget gate)
        a_du = W_xdu X[n]                + W_vdu v[n-1] + b_du     (cell candidate)
        s[n] = σ(a_cs) ⊙ s[n-1] + σ(a_cu) ⊙ tanh(a_du)
        a_cr = W_xcr X[n] + W_scr s[n]   + W_vcr v[n-1] + b_cr     (output gate)
        v[n] = σ(a_cr) ⊙ tanh(s[n]),     q[n] = W_qv v[n] with a projection

    Options (each combines with every other):
        peepholes: "diagonal"/True (default: W_s* = diag(w_s*)), "full" (d_s x d_s
            matrices, the paper's general form), None/False (then equal to torch.nn.LSTM).
        proj_size: P < H, recurrent projection (§3b): q[n] = W_qv v[n] is the output
            and replaces v[n-1] in the accumulations (torch's proj_size). R = P, else H.
        context: (L_past, L_future), external input context window (§3a): layer 0
            sees X[n] = [x[n-L_past], ..., x[n+L_future]], zero outside the sequence.
            Streaming: the state carries the last L_past frames (state.x_past), and a
            caller passes the next L_future frames as forward(..., x_future=...); then
            chunked calls equal one call. Without x_future the sequence ends there.
            A call with state=None is a whole sequence, and a window wider than it
            (L_past >= T or L_future >= T) raises ValueError; a stream starts from
            state=layer.initial_state(B) and may use chunks of any length.
        coupled_gates: g_cs = 1 - g_cu (§3c, ONNX input_forget); the cs weights are unused.
        cell_clip: c, s[n] clipped to [-c, c] after each update (TensorFlow's cell_clip).
        accumulation_clip: c, every a_* clipped to [-c, c] before warping (ONNX's clip).
        gate_activation: G_c, the warping function of the three gates (default
            "sigmoid"; ONNX's f); cell_activation: G_d of the data update u (default
            "tanh"; ONNX's g); output_activation: G_d of the readout, v[n] = g_cr ⊙
            G_d(s[n]) (default "tanh"; ONNX's h). Each is a name or a tuple (name,
            alpha[, beta]) of ONNX's activations: "sigmoid", "tanh", "relu",
            ("hard_sigmoid", a, b), ("affine", a, b), ("leaky_relu", a),
            ("thresholded_relu", a), ("scaled_tanh", a, b), ("elu", a), "softsign",
            "softplus" (docs/equations.md §9); bidirectional layers take a list of two
            for one per direction (forward first).
        num_layers, bidirectional, dropout (between layers, training only, seeded).
        reverse: every layer reads each row's valid part backwards, from its last
            valid step to step 0 (one direction only: Keras' go_backwards, ONNX's
            direction="reverse"); outputs stay at their time index, the final state
            is the one after step 0. Not with bidirectional or streaming context.
        dtype (float32/float64), batch_first, seed (initialisation and dropout).

    `params` holds the real storage; per cell (suffix "", "_reverse", "_l1", ...):
        "W_x" (4H, K*I_l) = [W_xcu; W_xcs; W_xdu; W_xcr], K = L_past + 1 + L_future for
              layer 0 (column block k multiplies x[n + k - L_past]), I_l = D*R above
        "W_v" (4H, R)     = [W_vcu; W_vcs; W_vdu; W_vcr]  (W_q* with projection)
        "b"   (4H,)       = [b_cu; b_cs; b_du; b_cr]       (PyTorch's bias_ih + bias_hh)
        "w_s" (3, H)      = [w_scu; w_scs; w_scr]          diagonal peepholes
        "W_s" (3, H, H)   = [W_scu; W_scs; W_scr]          full peepholes
        "W_qv" (P, H)                                     projection
    Gate order (cu, cs, du, cr) = PyTorch's (i, f, g, o). `paper_params` gives
    per-gate views under the paper's names. Update `params` in place.
    """

    State = LSTMState
    _CONFIG = RecurrentLayer._CONFIG | {"peepholes", "proj_size", "coupled_gates", "cell_clip",
                                         "accumulation_clip", "gate_activation", "cell_activation",
                                         "output_activation"}
    _STATE_HINT = ("s is the cell state (torch's c) and v the output fed back (torch's h), while "
                   "torch.nn.LSTM and fusedrnn.torch order their state (h, c); torch's (h0, c0) "
                   "is fr.LSTM.State(s=c0, v=h0)")

    def __init__(self, input_size: int, hidden_size: int, peepholes: Any = True, *,
                 proj_size: int = 0, context: Tuple[int, int] = (0, 0),
                 coupled_gates: bool = False, cell_clip: Optional[float] = None,
                 accumulation_clip: Optional[float] = None, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, dtype: Any = np.float32,
                 batch_first: bool = False, reverse: bool = False,
                 seed: Optional[int] = None, gate_activation: Any = "sigmoid",
                 cell_activation: Any = "tanh", output_activation: Any = "tanh") -> None:
        self.peepholes = _peephole_mode(peepholes)
        H = V.positive_int(hidden_size, "hidden_size")
        if not V.is_int(proj_size):
            raise TypeError(f"proj_size must be an int, got {proj_size!r}")
        if not 0 <= proj_size < H:
            raise ValueError(f"proj_size must satisfy 0 <= proj_size < hidden_size = {H} "
                             f"(the projection reduces d_q below d_s), got {proj_size}")
        self.proj_size = int(proj_size)
        try:
            L_past, L_future = context
        except (TypeError, ValueError):
            raise TypeError(f"context must be a pair (L_past, L_future), got {context!r}") from None
        for name, val in (("context[0] (L_past)", L_past), ("context[1] (L_future)", L_future)):
            if not V.is_int(val) or val < 0:
                raise ValueError(f"{name} must be an int >= 0, got {val!r}")
        self.context = (int(L_past), int(L_future))
        self.coupled_gates = V.flag(coupled_gates, "coupled_gates")
        self.cell_clip = V.optional_positive(cell_clip, "cell_clip")
        self.accumulation_clip = V.optional_positive(accumulation_clip, "accumulation_clip")
        D = 2 if bidirectional is True else 1
        self.gate_activation, g = _acts.layer_option(gate_activation, D, "gate_activation")
        self.cell_activation, c = _acts.layer_option(cell_activation, D, "cell_activation")
        self.output_activation, o = _acts.layer_option(output_activation, D, "output_activation")
        # per direction: None for the default (sigmoid, tanh, tanh), else the kernel's triples
        self._warps = tuple(None if (g[d], c[d], o[d]) == (_acts.SIGMOID, _acts.TANH, _acts.TANH)
                            else (_acts.kernel(g[d]), _acts.kernel(c[d]), _acts.kernel(o[d]))
                            for d in range(D))
        super().__init__(input_size, hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         batch_first=batch_first, reverse=reverse, seed=seed)

    def __repr__(self) -> str:
        opts = [f"peepholes={self.peepholes!r}"]
        for name, default in (("proj_size", 0), ("context", (0, 0)), ("coupled_gates", False),
                              ("cell_clip", None), ("accumulation_clip", None), ("num_layers", 1),
                              ("bidirectional", False), ("dropout", 0.0), ("batch_first", False),
                              ("reverse", False), ("gate_activation", "sigmoid"),
                              ("cell_activation", "tanh"), ("output_activation", "tanh")):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)!r}")
        return (f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"{', '.join(opts)}, dtype={self.dtype.name})")

    def stream(self, batch: int, state: Optional[LSTMState] = None,
               *, weights: str = "live") -> Any:
        """A stream that runs this LSTM one frame at a time (inference):
        `stream.step(frame)` with frame (B, I) returns the output (B, R). With a
        look-ahead (context=(L_past, L_future > 0)) the output of frame n comes
        with frame n + L_future (`stream.delay`), and `stream.flush()` ends the
        sequence. state: an LSTMState like forward's, or None for zeros. The
        outputs equal one `forward` over the whole sequence. weights: "live"
        follows `params` (changes are used from the next step on), "snapshot"
        uses a copy taken now. See `fusedrnn.stream` for reset and step_many."""
        from ..stream import Stream
        return Stream(self, batch, state, weights)

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _cell_param_shapes(self, in_size: int) -> Dict[str, Tuple[int, ...]]:
        H, R = self.hidden_size, self.output_size
        shapes: Dict[str, Tuple[int, ...]] = {"W_x": (4 * H, in_size), "W_v": (4 * H, R),
                                              "b": (4 * H,)}
        if self.peepholes == "diagonal":
            shapes["w_s"] = (3, H)
        elif self.peepholes == "full":
            shapes["W_s"] = (3, H, H)
        if self.proj_size:
            shapes["W_qv"] = (self.proj_size, H)
        return shapes

    # -- kernel calls -----------------------------------------------------------------
    def _cell_config(self, T: int, B: int, in_size: int, lengths: Optional[np.ndarray],
                     reverse: bool) -> "_kernel.LSTMConfig":
        return _kernel.LSTMConfig(T, B, in_size, self.hidden_size, self.proj_size,
                                  _PEEP_CODES[self.peepholes], self.coupled_gates, reverse,
                                  self.cell_clip or 0.0, self.accumulation_clip or 0.0, lengths,
                                  _threads.kernel_threads(),
                                  warps=self._warps[1 if self.bidirectional and reverse else 0])

    def _kernel_forward(self, cfg: Any, y: np.ndarray, s_T: np.ndarray, o_T: np.ndarray,
                        acts: Optional[np.ndarray], work: np.ndarray, x: np.ndarray,
                        s0: np.ndarray, o0: np.ndarray, p: Dict[str, np.ndarray],
                        packed: Any = None) -> None:
        _kernel.lstm_forward(cfg, y_seq=flat(y), s_T=flat(s_T), y_T=flat(o_T), acts=acts,
                             work=work, x=flat(x), s0=flat(s0), y0=flat(o0), W_x=flat(p["W_x"]),
                             W_v=flat(p["W_v"]), b=flat(p["b"]),
                             W_s=flat(p.get("w_s", p.get("W_s"))), W_qv=flat(p.get("W_qv")),
                             packed=packed)

    _PACKED = ("W_x", "W_v", "W_qv")

    def _packed_names(self) -> Tuple[str, ...]:
        # full peepholes put a GEMM between the row passes: never on the micro-kernel
        return () if self.peepholes == "full" else self._PACKED

    def _pack_weights(self, cfg: Any, p: Dict[str, np.ndarray]) -> Any:
        return _kernel.PackedWeights(cfg, W_x=flat(p["W_x"]), W_v=flat(p["W_v"]),
                                     W_qv=flat(p.get("W_qv")))

    def _kernel_backward(self, cfg: Any, tape: CellTape, g: Dict[str, np.ndarray], work: np.ndarray,
                         dx: np.ndarray, ds0: np.ndarray, do0: np.ndarray, dy: Optional[np.ndarray],
                         ds_T: Optional[np.ndarray], do_T: Optional[np.ndarray]) -> None:
        p = tape.params
        _kernel.lstm_backward(cfg, dW_x=flat(g["W_x"]), dW_v=flat(g["W_v"]), db=flat(g["b"]),
                              dW_s=flat(g.get("w_s", g.get("W_s"))), dW_qv=flat(g.get("W_qv")),
                              dx=flat(dx), ds0=flat(ds0), dy0=flat(do0), work=work,
                              dy_seq=flat(dy), ds_T=flat(ds_T), dy_T=flat(do_T), acts=tape.acts,
                              x=flat(tape.x), y_seq=flat(tape.y), s0=flat(tape.s0),
                              y0=flat(tape.o0), W_x=flat(p["W_x"]), W_v=flat(p["W_v"]),
                              W_s=flat(p.get("w_s", p.get("W_s"))), W_qv=flat(p.get("W_qv")))

    # -- context windows (_context.py): layer 0 reads X[n] = [x[n-L_past], ..., x[n+L_future]] --
    def _first_input_size(self) -> int:
        L_past, L_future = self.context
        return (L_past + 1 + L_future) * self.input_size

    def _first_input(self, xt: np.ndarray, x_past: Optional[np.ndarray],
                     x_future: Optional[np.ndarray], lengths: Optional[np.ndarray]) -> np.ndarray:
        if self.context == (0, 0):
            return xt
        return _context.unfold(xt, x_past, x_future, *self.context, lengths)

    def _state_in(self, state: Any, B: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        s0, o0, _ = super()._state_in(state, B)
        L_past = self.context[0]
        x_past = None
        if state is not None and len(state) > 2 and state[2] is not None:
            if L_past == 0:
                raise ValueError("state.x_past is only for LSTMs with context=(L_past > 0, .)")
            if self.bidirectional or self.reverse:
                raise ValueError("streaming context (state.x_past) needs a unidirectional LSTM "
                                 "that reads forwards (not bidirectional, not reverse)")
            x_past = V.private_copy(V.state_part(state[2], "state.x_past", self.dtype,
                                                 (L_past, B, self.input_size)), state[2])
        return s0, o0, x_past

    def _future_in(self, x_future: Any, B: int, has_state: bool, T: int) -> Optional[np.ndarray]:
        L_past, L_future = self.context
        if x_future is None:
            if not has_state and (L_past >= T or L_future >= T):
                raise ValueError(f"the context window {self.context} is wider than the sequence "
                                 f"(T = {T}); for streaming pass the neighbouring frames in "
                                 "state.x_past and x_future")
            return None
        if L_future == 0:
            raise ValueError("x_future is only for LSTMs with a look-ahead, context=(., L_future > 0)")
        if self.bidirectional or self.reverse:
            raise ValueError("x_future (streaming look-ahead) needs a unidirectional LSTM "
                             "that reads forwards (not bidirectional, not reverse)")
        return V.sequence(x_future, "x_future", self.dtype, self.input_size, self.batch_first,
                          batch=B, steps=L_future)

    def _state_out(self, s_T: np.ndarray, o_T: np.ndarray, x_past: Optional[np.ndarray],
                   xt: np.ndarray) -> LSTMState:
        return LSTMState(s_T, o_T, _context.next_past(x_past, xt, self.context[0]))

    def _backward_input(self, dinp: np.ndarray, tape: Tape, ds0: np.ndarray,
                        do0: np.ndarray) -> Tuple[np.ndarray, LSTMState]:
        if self.context == (0, 0):
            return self._out(dinp), LSTMState(ds0, do0)
        dx, dx_past, _ = _context.fold(dinp, self.input_size, *self.context, tape.lengths)
        return self._out(dx), LSTMState(ds0, do0, dx_past if self.context[0] else None)

    # -- the paper's names ---------------------------------------------------------
    def _paper_views(self, store: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Under the paper's names: W_xcu (H, I), W_vcu (H, R), b_cu (H,), w_scu (H,)
        or W_scu (H, H), W_qv (P, H) ..., with the cell suffix."""
        views = self._gate_views(store, {"W_x": "W_x", "W_v": "W_v", "b": "b_"}, GATES)
        for l in range(self.num_layers):
            for d in range(self.num_directions):
                sfx = suffix(l, d)
                for i, gate in enumerate(PEEPHOLE_GATES):
                    if self.peepholes == "diagonal":
                        views[f"w_s{gate}{sfx}"] = store["w_s" + sfx][i]
                    elif self.peepholes == "full":
                        views[f"W_s{gate}{sfx}"] = store["W_s" + sfx][i]
                if self.proj_size:
                    views[f"W_qv{sfx}"] = store["W_qv" + sfx]
        return views


    # -- PyTorch interop -------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: Any) -> "LSTM":
        """An LSTM with the exact weights of a `torch.nn.LSTM` (any num_layers,
        bidirectional, proj_size, bias): W_x = weight_ih_l{k}, W_v = weight_hh_l{k},
        W_qv = weight_hr_l{k}, b = bias_ih_l{k} + bias_hh_l{k}; dtype and batch_first
        are taken from it. torch's dropout probability is carried over."""
        from ..interop._torch import lstm_from_torch
        return cast("LSTM", lstm_from_torch(cls, module))

    def to_torch(self) -> Any:
        """A `torch.nn.LSTM` computing the same function (only for what PyTorch
        has: no peepholes, context windows, coupled gates or clips)."""
        from ..interop._torch import lstm_to_torch
        return lstm_to_torch(self)

    # -- Keras interop ----------------------------------------------------------------
    @classmethod
    def from_keras(cls, layer: Any) -> "LSTM":
        """A batch_first LSTM with the exact weights of a built Keras 3
        `keras.layers.LSTM`, or of a `keras.layers.Bidirectional` of one:
        W_x = kernel.T, W_v = recurrent_kernel.T, b = bias (gate order (i, f, c, o)
        in both), go_backwards -> reverse=True, no peepholes. Refuses by name what
        this LSTM cannot compute (activations other than Keras' tanh, sigmoid, relu,
        hard_sigmoid, linear, elu, softsign, softplus, dropout,
        recurrent_dropout, merge modes other than "concat", float16). A
        go_backwards layer's returned sequence is Keras' reversed: y = y_keras[:, ::-1]."""
        from ..interop._keras import lstm_from_keras
        return cast("LSTM", lstm_from_keras(cls, layer))

    def to_keras(self, *, return_sequences: bool = True, return_state: bool = True,
                 name: Optional[str] = None) -> Any:
        """A built Keras 3 `keras.layers.LSTM` (a `keras.layers.Bidirectional` of two
        when bidirectional; go_backwards=True when reverse) with this LSTM's
        weights, zero_output_for_mask=True. Only for one layer with what Keras
        has: no peepholes, projection, context windows, coupled gates or clips."""
        from ..interop._keras import lstm_to_keras
        return lstm_to_keras(self, return_sequences, return_state, name)
