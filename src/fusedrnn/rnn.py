"""`fr.RNN`: the canonical RNN of Sherstinsky (2020) §2-§4, spec §1, on the fused C kernel."""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from . import _kernel
from ._layer import RecurrentLayer, Tape, flat


class RNNState(NamedTuple):
    """Canonical RNN state, each field (layers * directions, B, H): the state s
    and the readout r = tanh(s) (PyTorch's h)."""

    s: np.ndarray
    r: np.ndarray


class RNN(RecurrentLayer):
    """The canonical RNN (spec §1):

        s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + θ_s,   r[n] = tanh(s[n])

    With state_feedback=False (default) W_s = 0 and the layer equals
    `torch.nn.RNN(nonlinearity="tanh")`. `params`:
        "W_x" (H, I), "W_r" (H, H), "theta_s" (H,) (PyTorch's bias_ih + bias_hh),
        "W_s" (H, H) only with state_feedback=True.
    The output sequence is r[n]; the state is RNNState(s, r).
    """

    State = RNNState

    def __init__(self, input_size: int, hidden_size: int, state_feedback: bool = False, *,
                 dtype: Any = np.float32, batch_first: bool = False,
                 seed: Optional[int] = None) -> None:
        if not isinstance(state_feedback, (bool, np.bool_)):
            raise TypeError(f"state_feedback must be a bool, got {state_feedback!r}")
        self.state_feedback = bool(state_feedback)
        super().__init__(input_size, hidden_size, dtype=dtype, batch_first=batch_first, seed=seed)

    def __repr__(self) -> str:
        return (f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"state_feedback={self.state_feedback}, dtype={self.dtype.name}, "
                f"batch_first={self.batch_first})")

    def _param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        shapes: Dict[str, Tuple[int, ...]] = {"W_x": (H, I), "W_r": (H, H), "theta_s": (H,)}
        if self.state_feedback:
            shapes["W_s"] = (H, H)
        return shapes

    def _sizes(self, T: int, B: int) -> Tuple[int, int, int, int]:
        return _kernel.rnn_sizes(T, B, self.input_size, self.hidden_size, int(self.state_feedback))

    def _kernel_forward(self, y, s_T, o_T, acts, work, x, s0, o0, p, T, B) -> None:
        _kernel.rnn_forward(flat(y), flat(s_T), flat(o_T), flat(acts), flat(work), flat(x),
                            flat(s0), flat(o0), flat(p["W_x"]), flat(p["W_r"]),
                            flat(p["theta_s"]), flat(p.get("W_s")), T, B, self.input_size,
                            self.hidden_size, int(self.state_feedback))

    def _kernel_backward(self, dx, ds0, do0, dy, ds_T, do_T, tape: Tape, grads, T, B) -> None:
        _, _, _, n_work = self._sizes(T, B)
        work = np.empty(n_work, self.dtype)
        p = tape.params
        _kernel.rnn_backward(flat(dx), flat(ds0), flat(do0), flat(grads["W_x"]),
                             flat(grads["W_r"]), flat(grads["theta_s"]), flat(grads.get("W_s")),
                             work, flat(dy), flat(ds_T), flat(do_T), tape.acts, flat(tape.x),
                             flat(tape.y), flat(tape.s0), flat(tape.o0), flat(p["W_x"]),
                             flat(p["W_r"]), flat(p.get("W_s")), T, B, self.input_size,
                             self.hidden_size, int(self.state_feedback))

    @property
    def paper_params(self) -> Dict[str, np.ndarray]:
        """`params` under the paper's names (already the storage: W_x, W_r, theta_s, W_s)."""
        return dict(self.params)

    @property
    def paper_grads(self) -> Dict[str, np.ndarray]:
        return dict(self.grads)

    @classmethod
    def from_torch(cls, module: Any) -> "RNN":
        """An RNN with the exact weights of a one-layer, unidirectional
        `torch.nn.RNN(nonlinearity='tanh')`: W_x = weight_ih_l0, W_r = weight_hh_l0,
        theta_s = bias_ih_l0 + bias_hh_l0."""
        from ._torch import rnn_from_torch
        return rnn_from_torch(cls, module)

    def to_torch(self) -> Any:
        """A `torch.nn.RNN` computing the same function (state_feedback must be off)."""
        from ._torch import rnn_to_torch
        return rnn_to_torch(self)
