"""`fr.LSTM`: the Vanilla LSTM of Sherstinsky (2020) §5, spec §2, on the fused C kernel."""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from . import _kernel
from ._layer import RecurrentLayer, Tape, flat

GATES = ("cu", "cs", "du", "cr")  # control update, control state, data update, control readout
PEEPHOLE_GATES = ("cu", "cs", "cr")


class LSTMState(NamedTuple):
    """LSTM state, each field (layers * directions, B, H): the cell state s
    (PyTorch's c) and the output v (PyTorch's h)."""

    s: np.ndarray
    v: np.ndarray


def _peephole_flag(peepholes: Any) -> bool:
    if peepholes in (True, "diagonal"):
        return True
    if peepholes in (False, None):
        return False
    raise ValueError(f"peepholes must be True/'diagonal' or False/None, got {peepholes!r}")


class LSTM(RecurrentLayer):
    """Vanilla LSTM layer with optional diagonal peepholes (spec §2).

    Accumulations, warpings and state update for each step n:
        a_cu = W_xcu x[n] + w_scu ⊙ s[n-1] + W_vcu v[n-1] + b_cu   (input gate)
        a_cs = W_xcs x[n] + w_scs ⊙ s[n-1] + W_vcs v[n-1] + b_cs   (forget gate)
        a_du = W_xdu x[n]                  + W_vdu v[n-1] + b_du   (cell candidate)
        s[n] = σ(a_cs) ⊙ s[n-1] + σ(a_cu) ⊙ tanh(a_du)
        a_cr = W_xcr x[n] + w_scr ⊙ s[n]   + W_vcr v[n-1] + b_cr   (output gate)
        v[n] = σ(a_cr) ⊙ tanh(s[n])

    `params` holds the real storage, fused in gate order (cu, cs, du, cr) =
    PyTorch's (i, f, g, o):
        "W_x" (4H, I) = [W_xcu; W_xcs; W_xdu; W_xcr]
        "W_v" (4H, H) = [W_vcu; W_vcs; W_vdu; W_vcr]
        "b"   (4H,)   = [b_cu; b_cs; b_du; b_cr]   (PyTorch's bias_ih + bias_hh)
        "w_s" (3, H)  = [w_scu; w_scs; w_scr]      (only with peepholes)
    `paper_params` / `paper_grads` give per-gate views under the paper's names.
    Update `params` in place (optimisers do): the next forward reads them.

    Args:
        input_size: I (the paper's d_x). hidden_size: H (d_s).
        peepholes: True or "diagonal" (default) for diagonal peepholes, False/None for none.
        dtype: np.float32 or np.float64. batch_first: x is (B, T, I) instead of (T, B, I).
        seed: seed of the U(-1/sqrt(H), 1/sqrt(H)) initialisation.
    """

    State = LSTMState

    def __init__(self, input_size: int, hidden_size: int, peepholes: Any = True, *,
                 dtype: Any = np.float32, batch_first: bool = False,
                 seed: Optional[int] = None) -> None:
        self.peepholes = _peephole_flag(peepholes)
        super().__init__(input_size, hidden_size, dtype=dtype, batch_first=batch_first, seed=seed)

    def __repr__(self) -> str:
        return (f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"peepholes={self.peepholes}, dtype={self.dtype.name}, batch_first={self.batch_first})")

    def _param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        shapes: Dict[str, Tuple[int, ...]] = {"W_x": (4 * H, I), "W_v": (4 * H, H), "b": (4 * H,)}
        if self.peepholes:
            shapes["w_s"] = (3, H)
        return shapes

    def _config(self, T: int, B: int) -> "_kernel.LSTMConfig":
        return _kernel.LSTMConfig(T, B, self.input_size, self.hidden_size, 0, int(self.peepholes))

    def _sizes(self, T: int, B: int) -> Tuple[int, int, int, int]:
        return self._config(T, B).sizes()

    def _kernel_forward(self, y, s_T, o_T, acts, work, x, s0, o0, p, T, B) -> None:
        _kernel.lstm_forward(self._config(T, B), flat(y), flat(s_T), flat(o_T), flat(acts),
                             flat(work), flat(x), flat(s0), flat(o0), flat(p["W_x"]),
                             flat(p["W_v"]), flat(p["b"]), flat(p.get("w_s")), None)

    def _kernel_backward(self, dx, ds0, do0, dy, ds_T, do_T, tape: Tape, grads, T, B) -> None:
        _, _, _, n_work = self._sizes(T, B)
        work = np.empty(n_work, self.dtype)
        p = tape.params
        _kernel.lstm_backward(self._config(T, B), flat(dx), flat(ds0), flat(do0),
                              flat(grads["W_x"]), flat(grads["W_v"]), flat(grads["b"]),
                              flat(grads.get("w_s")), None, work, flat(dy), flat(ds_T),
                              flat(do_T), tape.acts, flat(tape.x), flat(tape.y), flat(tape.s0),
                              flat(tape.o0), flat(p["W_x"]), flat(p["W_v"]), flat(p.get("w_s")),
                              None)

    # -- the paper's names ---------------------------------------------------------
    def _paper_views(self, store: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        H = self.hidden_size
        views: Dict[str, np.ndarray] = {}
        for i, gate in enumerate(GATES):
            rows = slice(i * H, (i + 1) * H)
            views[f"W_x{gate}"] = store["W_x"][rows]
            views[f"W_v{gate}"] = store["W_v"][rows]
            views[f"b_{gate}"] = store["b"][rows]
        if self.peepholes:
            for i, gate in enumerate(PEEPHOLE_GATES):
                views[f"w_s{gate}"] = store["w_s"][i]
        return views

    @property
    def paper_params(self) -> Dict[str, np.ndarray]:
        """Views of `params` under the paper's names: W_xcu (H, I), W_vcu (H, H),
        b_cu (H,), w_scu (H,) ... for every gate (writes go to the real storage)."""
        return self._paper_views(self.params)

    @property
    def paper_grads(self) -> Dict[str, np.ndarray]:
        """Views of `grads` under the paper's names (see `paper_params`)."""
        return self._paper_views(self.grads)

    # -- PyTorch interop -------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: Any) -> "LSTM":
        """An LSTM with the exact weights of a one-layer, unidirectional
        `torch.nn.LSTM` (no projection): W_x = weight_ih_l0, W_v = weight_hh_l0,
        b = bias_ih_l0 + bias_hh_l0; dtype and batch_first are taken from it."""
        from ._torch import lstm_from_torch
        return lstm_from_torch(cls, module)

    def to_torch(self) -> Any:
        """A `torch.nn.LSTM` computing the same function (peepholes must be off:
        PyTorch has none). b goes to bias_ih_l0, bias_hh_l0 is zero."""
        from ._torch import lstm_to_torch
        return lstm_to_torch(self)
