"""`fr.Linear`: an affine read-out y = W x + b applied at every time step.

It is the paper's output layer on top of a recurrent layer (the readout of v[n]
or r[n] into the target space), in NumPy, with the same conventions as the
recurrent layers: `params` / `grads` dicts with the same keys and shapes,
`backward` accumulates (+=) into `grads`, `zero_grad()` clears them."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from . import _validate as V
from ._layer import ReadOnlyConfig
from ._tracked import track_all


class Linear(ReadOnlyConfig):
    """Affine map over the last axis: y[..., :] = x[..., :] W^T + b.

    Works on any leading shape: (T, B, F_in) -> (T, B, F_out), (B, T, F_in) ->
    (B, T, F_out) or (N, F_in) -> (N, F_out).

    `params` (the real storage, updated in place by the optimisers):
        "W" (out_features, in_features), "b" (out_features,).
    Initialisation as PyTorch's nn.Linear: both ~ U(-1/sqrt(in), 1/sqrt(in)).

    Args:
        in_features, out_features: sizes of the last axis of x and y.
        bias: include b (default True).
        dtype: np.float32 or np.float64; inputs are cast to it.
        seed: seed of the initialisation.
    The configuration (in_features, out_features, bias, dtype) is read-only.
    """

    _CONFIG = frozenset({"in_features", "out_features", "bias", "dtype"})

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: Any = np.float32, seed: Optional[int] = None) -> None:
        self.in_features = V.positive_int(in_features, "in_features")
        self.out_features = V.positive_int(out_features, "out_features")
        self.bias = V.flag(bias, "bias")
        self.dtype = V.as_dtype(dtype)
        rng = np.random.default_rng(V.seed(seed))
        k = 1.0 / np.sqrt(self.in_features)
        self.params: Dict[str, np.ndarray] = {
            "W": rng.uniform(-k, k, size=(self.out_features, self.in_features)).astype(self.dtype)}
        if self.bias:
            self.params["b"] = rng.uniform(-k, k, size=(self.out_features,)).astype(self.dtype)
        self.grads: Dict[str, np.ndarray] = {n: np.zeros_like(p) for n, p in self.params.items()}
        track_all(self.params)  # writes counted (streams), raw writes refused
        self._x: Optional[np.ndarray] = None  # input of the last training forward
        self._end_configuration()

    def __repr__(self) -> str:
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias}, dtype={self.dtype.name})")

    def stream(self, batch: int, state: None = None, *, weights: str = "live") -> Any:
        """A stream applying this layer to one frame (B, in_features) at a time, for a
        streamed `Sequential` (see `fusedrnn.stream`). weights: "live" reads `params`
        each step, "snapshot" a copy taken now."""
        from ..stream import LinearStream
        return LinearStream(self, batch, state, weights)

    def zero_grad(self) -> None:
        """Set every gradient buffer to zero (backward accumulates into them)."""
        for g in self.grads.values():
            g[...] = 0

    def _checked(self, store: Dict[str, np.ndarray], name: str) -> Dict[str, np.ndarray]:
        """The entries of `params` or `grads` (name), checked against the layer's shapes."""
        shapes = {"W": (self.out_features, self.in_features)}
        if self.bias:
            shapes["b"] = (self.out_features,)
        return {k: V.parameter(store, k, self.dtype, shp, store=name) for k, shp in shapes.items()}

    def __call__(self, x: Any, training: bool = True) -> np.ndarray:
        """layer(x) is layer.forward(x), as with torch modules."""
        return self.forward(x, training=training)

    def forward(self, x: Any, training: bool = True) -> np.ndarray:
        """y = x W^T + b. x: (..., in_features), cast to the layer dtype.
        Returns y (..., out_features). training=True keeps x for `backward`."""
        xa = V.as_real_array(x, "x", self.dtype)
        if xa.ndim < 1 or xa.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {xa.shape}")
        p = self._checked(self.params, "params")
        y = xa @ p["W"].T
        if self.bias:
            y += p["b"]
        # keep a private copy when x is the caller's writeable array (they may modify it)
        if training and isinstance(x, np.ndarray) and x.flags.writeable \
                and np.may_share_memory(xa, x):
            xa = xa.copy()
        self._x = xa if training else None
        return y

    def backward(self, dy: Any) -> np.ndarray:
        """dy = dE/dy (..., out_features) of the last training forward.
        Accumulates dE/dW = Σ dy^T x and dE/db = Σ dy into `grads`; returns
        dE/dx (..., in_features)."""
        x = self._x
        if x is None:
            raise ValueError("backward() needs a preceding forward(x, training=True)")
        d = V.as_real_array(dy, "dy", self.dtype)
        if d.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(f"dy must have shape {x.shape[:-1] + (self.out_features,)}, "
                             f"got {d.shape}")
        p = self._checked(self.params, "params")
        g = {k: self.grads[k] for k in self._checked(self.grads, "grads")}
        for k, a in g.items():
            if not a.flags.writeable:
                raise ValueError(f"grads[{k!r}] must be a writeable array (backward "
                                 "accumulates into it in place)")
        d2 = d.reshape(-1, self.out_features)
        g["W"] += d2.T @ x.reshape(-1, self.in_features)
        if self.bias:
            g["b"] += d2.sum(axis=0)
        return d @ p["W"]
