"""`fr.Sequential`: a stack of recurrent layers (LSTM, RNN) and per-step layers
(Linear), forward and backward, with one `params` / `grads` view over all parts."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._layer import ReadOnlyConfig

__all__ = ["Sequential", "is_recurrent"]


def is_recurrent(layer: Any) -> bool:
    """A recurrent layer carries a state: forward(x, state, training) -> (y, state)."""
    return hasattr(layer, "initial_state") and hasattr(layer, "State")


class Sequential(ReadOnlyConfig):
    """Layers applied in order; the output sequence of one is the input of the next.

        model = fr.Sequential(fr.LSTM(I, H, seed=0), fr.Linear(H, C, seed=1))
        y, states = model.forward(x)            # x (T, B, I) -> y (T, B, C)
        dx, dstates = model.backward(dy)        # accumulates into every layer's grads

    States are lists with one entry per layer: the layer's state for recurrent
    layers (e.g. LSTMState(s, v), each (1, B, H)), None for the others.

    `params` / `grads`: dicts over all layers with keys "<index>.<name>"
    ("0.W_x", "1.W"); the values are the layers' own arrays (not copies), so an
    optimiser updating `model.params` in place updates the layers.

    All recurrent layers must agree on batch_first (the per-step layers work in
    either layout); `batch_first` is read-only."""

    _CONFIG = frozenset({"batch_first"})

    def __init__(self, *layers: Any) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "forward") and hasattr(layer, "backward")
                    and hasattr(layer, "params") and hasattr(layer, "grads")):
                raise TypeError(f"layer {i} ({type(layer).__name__}) needs forward, backward, "
                                "params and grads")
        firsts = {bool(getattr(l, "batch_first", False)) for l in layers if is_recurrent(l)}
        if len(firsts) > 1:
            raise ValueError("the recurrent layers of a Sequential must agree on batch_first")
        self.layers: List[Any] = list(layers)
        self.batch_first = firsts.pop() if firsts else False
        self._end_configuration()

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {l!r}" for i, l in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)

    def __getitem__(self, i: int) -> Any:
        return self.layers[i]

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].dtype

    @property
    def params(self) -> Dict[str, np.ndarray]:
        """Every layer's parameters under "<index>.<name>" (the layers' own arrays)."""
        return {f"{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.params.items()}

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """Every layer's gradient buffers under "<index>.<name>" (the layers' own arrays)."""
        return {f"{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.grads.items()}

    def stream(self, batch: int, state: Optional[Sequence[Any]] = None,
               *, weights: str = "live") -> Any:
        """A stream running the layers (LSTM, RNN, Linear) one frame at a time
        (inference): `stream.step(frame)` (B, I) -> (B, F_out). The delays of
        look-ahead layers add up (`stream.delay`). state: None or a list of
        per-layer states. weights: "live" (follow the layers' params) or
        "snapshot" (copies taken now). See `fusedrnn.stream`."""
        from ..stream import SequentialStream
        return SequentialStream(self, batch, state, weights)

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def quantize(self, precision: str) -> "Sequential":
        """An inference-only copy with every recurrent layer quantized to `precision`
        ("bf16" or "int8", see `fr.LSTM.quantize`); Linear layers stay float32 (shared)."""
        from .quantized import quantize
        return quantize(self, precision)

    def initial_state(self, batch: int) -> List[Any]:
        """Zero states: a list with a state per recurrent layer, None elsewhere."""
        return [l.initial_state(batch) if is_recurrent(l) else None for l in self.layers]

    def _per_layer(self, states: Optional[Sequence[Any]], what: str) -> List[Any]:
        if states is None:
            return [None] * len(self.layers)
        if not isinstance(states, (list, tuple)) or len(states) != len(self.layers) \
                or hasattr(states, "_fields"):
            raise ValueError(f"{what} must be None or a list with one entry per layer "
                             f"({len(self.layers)}), None for non-recurrent layers")
        for i, (l, st) in enumerate(zip(self.layers, states)):
            if st is not None and not is_recurrent(l):
                raise ValueError(f"{what}[{i}] must be None: layer {i} "
                                 f"({type(l).__name__}) has no state")
        return list(states)

    def __call__(self, x: Any, state: Optional[Sequence[Any]] = None, training: bool = True,
                 lengths: Any = None, x_future: Any = None) -> Tuple[np.ndarray, List[Any]]:
        """model(x, ...) is model.forward(x, ...), as with torch modules."""
        return self.forward(x, state, training=training, lengths=lengths, x_future=x_future)

    def forward(self, x: Any, state: Optional[Sequence[Any]] = None, training: bool = True,
                lengths: Any = None, x_future: Any = None) -> Tuple[np.ndarray, List[Any]]:
        """x: (T, B, I) (or (B, T, I) with batch_first). state: None (zeros) or a
        list of per-layer states. lengths: None or B valid lengths, passed to every
        recurrent layer (their outputs past a row's length are zero; mask those
        steps in the loss). x_future: the look-ahead frames of a first LSTM layer
        with a context window (see `LSTM`). Returns y (T, B, F_out) and the list
        of final states (None for non-recurrent layers). training=True keeps what
        every layer's backward needs."""
        states_in = self._per_layer(state, "state")
        states_out: List[Any] = []
        kw = {} if lengths is None else {"lengths": lengths}
        if x_future is not None and not is_recurrent(self.layers[0]):
            raise ValueError("x_future is for a first layer with a look-ahead context window")
        h = x
        for i, (layer, st) in enumerate(zip(self.layers, states_in)):
            if is_recurrent(layer):
                extra = {"x_future": x_future} if i == 0 and x_future is not None else {}
                h, st_out = layer.forward(h, state=st, training=training, **kw, **extra)
            else:
                h, st_out = layer.forward(h, training=training), None
            states_out.append(st_out)
        return h, states_out

    def backward(self, dy: Any, dstate: Optional[Sequence[Any]] = None
                 ) -> Tuple[np.ndarray, List[Any]]:
        """Back-propagate through the last training forward.

        dy: dE/dy with the shape of y. dstate: None or a list of per-layer
        gradients with respect to the final states (None entries: zero).
        Accumulates into every layer's grads; returns dE/dx and the list of
        gradients with respect to the initial states (None for non-recurrent layers)."""
        dstates_in = self._per_layer(dstate, "dstate")
        dstates_out: List[Any] = [None] * len(self.layers)
        d = dy
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if is_recurrent(layer):
                d, dstates_out[i] = layer.backward(d, dstates_in[i])
            else:
                d = layer.backward(d)
        return d, dstates_out
