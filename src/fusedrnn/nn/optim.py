"""Optimisers that update the layers' `params` in place from their `grads`.

    opt = fr.optim.Adam(model, lr=1e-3)            # a model with .params and .grads
    opt = fr.optim.SGD([(lstm.params, lstm.grads), (head.params, head.grads)], lr=0.1)
    model.zero_grad(); model.backward(dy); fr.clip_grad_norm(model, 1.0); opt.step()

The update rules are PyTorch's (torch.optim.SGD / Adam with the same
hyper-parameters give the same numbers). The kernels read the parameter
arrays on every call, so an in-place update is all a layer needs."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Tuple, Union

import numpy as np

from ..core import _validate as V
from ..core._tracked import is_tracked

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm", "param_groups"]

ParamsGrads = Tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]


def _pairs(source: Any) -> List[Tuple[str, ParamsGrads]]:
    """(prefix, (params, grads)) for a model, a (params, grads) pair, or a list of either."""
    if hasattr(source, "params") and hasattr(source, "grads"):
        return [("", (source.params, source.grads))]
    if (isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Mapping)
            and isinstance(source[1], Mapping)):
        return [("", source)]
    if isinstance(source, (list, tuple)):
        out = []
        for i, item in enumerate(source):
            for prefix, pg in _pairs(item):
                out.append((f"{i}.{prefix}", pg))
        return out
    raise TypeError("expected a model with .params and .grads, a (params, grads) pair of dicts, "
                    f"or a list of them; got {type(source).__name__}")


def param_groups(source: Any) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Flatten `source` into (key, parameter, gradient) triples with unique keys.

    A single model or pair keeps its own keys ("W_x", or "0.W_x" for a
    Sequential); the items of a list get their index as prefix ("1.W")."""
    triples: List[Tuple[str, np.ndarray, np.ndarray]] = []
    seen: Dict[int, str] = {}
    for prefix, (params, grads) in _pairs(source):
        for name, p in params.items():
            key = prefix + name
            if id(p) in seen:
                raise ValueError(f"parameter {key!r} is the array {seen[id(p)]!r} again: it "
                                 "would be updated twice per step")
            seen[id(p)] = key
            if name not in grads:
                raise KeyError(f"grads has no entry for parameter {key!r}")
            g = grads[name]
            if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
                raise TypeError(f"parameter and gradient {key!r} must be numpy arrays")
            if p.shape != g.shape:
                raise ValueError(f"gradient {key!r} has shape {g.shape}, parameter {p.shape}")
            if p.dtype.kind != "f":
                raise TypeError(f"parameter {key!r} must be floating point, got {p.dtype}")
            if g.dtype.kind != "f":
                raise TypeError(f"gradient {key!r} must be floating point, got {g.dtype}")
            if not p.flags.writeable and not is_tracked(p):
                raise ValueError(f"parameter {key!r} is read-only; optimisers update in place")
            triples.append((key, p, g))
    if not triples:
        raise ValueError("no parameters to optimise")
    return triples


def clip_grad_norm(grads: Any, max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most `max_norm`.

    grads: a dict of arrays, a model with `.grads`, or a list of these. The
    norm is sqrt(Σ over every array of Σ g²), computed in float64 (an array
    reached twice, e.g. a layer listed twice, counts and is scaled once). When it
    exceeds max_norm, every gradient is multiplied by max_norm / (norm + 1e-6)
    (PyTorch's rule). Returns the norm before clipping (inf/nan when a
    gradient is not finite; then nothing is scaled)."""
    if not V.finite_number(max_norm, "max_norm") > 0:
        raise ValueError(f"max_norm must be a finite number > 0, got {max_norm!r}")
    arrays = list({id(g): g for g in _grad_arrays(grads)}.values())  # each array once
    total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in arrays)))
    if np.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        if not all(g.flags.writeable for g in arrays):
            raise ValueError("grads must be writeable arrays: clip_grad_norm scales them in place")
        for g in arrays:
            g *= g.dtype.type(scale)
    return total


def _grad_arrays(grads: Any) -> Iterable[np.ndarray]:
    if hasattr(grads, "grads") and not isinstance(grads, Mapping):
        grads = grads.grads
    if isinstance(grads, Mapping):
        for g in grads.values():
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                raise TypeError("gradients must be floating-point numpy arrays, got "
                                f"{getattr(g, 'dtype', type(g).__name__)}")
            yield g
    elif isinstance(grads, (list, tuple)):
        for item in grads:
            yield from _grad_arrays(item)
    else:
        raise TypeError("grads must be a dict of arrays, a model with .grads, or a list of them; "
                        f"got {type(grads).__name__}")


class Optimizer:
    """Base class: holds (key, parameter, gradient) triples and per-key state arrays.

    Subclasses define `defaults` (hyper-parameter names and values), `_state_names`
    (the per-parameter buffers) and `_update`."""

    _state_names: Tuple[str, ...] = ()

    def __init__(self, params: Any, **hyper: Any) -> None:
        self._source = params
        self.groups = param_groups(params)
        self.hyper: Dict[str, Any] = hyper
        self.step_count = 0
        self.state: Dict[str, Dict[str, np.ndarray]] = {
            name: {key: np.zeros(p.shape, p.dtype) for key, p, _ in self.groups}
            for name in self._state_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({len(self.groups)} arrays, {args})"

    @property
    def lr(self) -> float:
        """The learning rate (assign to change it, e.g. for a schedule)."""
        return float(self.hyper["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper["lr"] = _nonneg("lr", value)

    def zero_grad(self) -> None:
        """Set every gradient this optimiser sees to zero."""
        for _, _, g in self.groups:
            g[...] = 0

    def step(self) -> None:
        """One update of every parameter, in place, from its current gradient."""
        self._check_bound()
        self.step_count += 1
        for key, p, g in self.groups:
            self._update(key, p, g)

    def _check_bound(self) -> None:
        """Refuse to step when the model's params/grads dicts no longer hold the
        arrays this optimiser updates (an entry replaced by a new array would be
        silently left untrained, or trained from a stale gradient)."""
        live = {}
        for prefix, (params, grads) in _pairs(self._source):
            for name, p in params.items():
                live[prefix + name] = (p, grads.get(name))
        for key, p, g in self.groups:
            if key not in live:
                raise ValueError(f"parameter {key!r} was removed from the model after the "
                                 "optimiser was created; create the optimiser again")
            now_p, now_g = live[key]
            for what, now, held in (("parameter", now_p, p), ("gradient", now_g, g)):
                if now is not held:
                    raise ValueError(
                        f"the {what} array {key!r} was replaced after the optimiser was created: "
                        f"step() would update the old one. Assign in place (arr[...] = new) or "
                        "create the optimiser again")
        if len(live) != len(self.groups):
            extra = sorted(set(live) - {k for k, _, _ in self.groups})
            raise ValueError(f"parameters {extra} were added to the model after the optimiser "
                             "was created; create the optimiser again")

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """{"type", "hyper" (JSON-able), "step", "state": {buffer: {key: array copy}}}."""
        return {"type": type(self).__name__, "hyper": dict(self.hyper), "step": self.step_count,
                "state": {name: {k: a.copy() for k, a in bufs.items()}
                          for name, bufs in self.state.items()}}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore hyper-parameters, step count and buffers saved by `state_dict`.

        The buffers must match this optimiser's parameter keys and shapes exactly;
        they are copied into the existing arrays."""
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict must be a dict from state_dict(), got {type(sd).__name__}")
        if sd.get("type") != type(self).__name__:
            raise ValueError(f"state_dict is for {sd.get('type')!r}, not {type(self).__name__}")
        missing = [k for k in ("hyper", "step", "state") if k not in sd]
        if missing:
            raise ValueError(f"state_dict is missing {missing}")
        if not isinstance(sd["hyper"], Mapping):
            raise TypeError(f"state_dict['hyper'] must be a dict, got {type(sd['hyper']).__name__}")
        hyper = dict(sd["hyper"])
        if set(hyper) != set(self.hyper):
            raise ValueError(f"state_dict hyper-parameters {sorted(hyper)} do not match "
                             f"{sorted(self.hyper)}")
        step = sd["step"]
        if not V.is_int(step):
            raise TypeError(f"state_dict['step'] must be an int, got {step!r}")
        if step < 0:
            raise ValueError(f"state_dict['step'] must be >= 0, got {step}")
        state = sd["state"]
        if not isinstance(state, Mapping) or not all(isinstance(b, Mapping)
                                                     for b in state.values()):
            raise TypeError("state_dict['state'] must be a dict of dicts of arrays")
        if set(state) != set(self.state):
            raise ValueError(f"state_dict buffers {sorted(state)} do not match {sorted(self.state)}")
        checked: Dict[str, Dict[str, np.ndarray]] = {}
        for name, bufs in self.state.items():
            if set(state[name]) != set(bufs):
                raise ValueError(f"state_dict buffer {name!r} has keys {sorted(state[name])}, "
                                 f"the optimiser has {sorted(bufs)}")
            checked[name] = {}
            for k, a in bufs.items():
                src = np.asarray(state[name][k])
                if src.dtype.kind not in "biuf":
                    raise TypeError(f"state_dict {name}[{k!r}] must hold real numbers, got "
                                    f"dtype {src.dtype}")
                if src.shape != a.shape:
                    raise ValueError(f"state_dict {name}[{k!r}] has shape {src.shape}, "
                                     f"expected {a.shape}")
                checked[name][k] = src
        new_hyper = self._check_hyper(**hyper)  # before anything changes
        for name, bufs in self.state.items():
            for k, a in bufs.items():
                a[...] = checked[name][k]
        self.hyper = new_hyper
        self.step_count = int(step)

    def _check_hyper(self, **hyper: Any) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


def _nonneg(name: str, value: Any) -> float:
    """A finite number >= 0 (TypeError for what is not a real number)."""
    v = V.finite_number(value, name)
    if not v >= 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


class SGD(Optimizer):
    """Stochastic gradient descent with momentum μ, weight decay λ and Nesterov:

        g ← g + λ p
        b ← μ b + g                       (b = g at the first step)
        p ← p - lr (g + μ b)  if nesterov else  p - lr b      (b = g when μ = 0)

    params: a model with .params/.grads, a (params, grads) pair, or a list of them."""

    def __init__(self, params: Any, lr: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        hyper = self._check_hyper(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                  nesterov=nesterov)
        self._state_names = ("momentum_buffer",) if hyper["momentum"] > 0 else ()
        super().__init__(params, **hyper)

    def _check_hyper(self, **h: Any) -> Dict[str, Any]:
        V.flag(h["nesterov"], "nesterov")
        out = {"lr": _nonneg("lr", h["lr"]), "momentum": _nonneg("momentum", h["momentum"]),
               "weight_decay": _nonneg("weight_decay", h["weight_decay"]),
               "nesterov": bool(h["nesterov"])}
        if out["nesterov"] and out["momentum"] == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        return out

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        h = self.hyper
        t = p.dtype.type
        d = g + t(h["weight_decay"]) * p if h["weight_decay"] else g.copy()
        if h["momentum"]:
            b = self.state["momentum_buffer"][key]
            if self.step_count == 1:
                b[...] = d
            else:
                b *= t(h["momentum"])
                b += d
            if h["nesterov"]:
                d += t(h["momentum"]) * b
            else:
                d = b
        p -= t(h["lr"]) * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay λ added to the gradient (torch.optim.Adam):

        g ← g + λ p
        m ← β1 m + (1 - β1) g          v ← β2 v + (1 - β2) g²
        p ← p - lr m̂ / (sqrt(v̂) + eps),   m̂ = m / (1 - β1^t),  v̂ = v / (1 - β2^t)

    params: a model with .params/.grads, a (params, grads) pair, or a list of them."""

    _state_names = ("m", "v")

    def __init__(self, params: Any, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, **self._check_hyper(lr=lr, betas=betas, eps=eps,
                                                     weight_decay=weight_decay))

    def _check_hyper(self, **h: Any) -> Dict[str, Any]:
        raw = h["betas"]
        if isinstance(raw, np.ndarray) and raw.ndim == 1:
            raw = raw.tolist()
        if not isinstance(raw, (tuple, list)):
            raise TypeError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1), got {raw!r}")
        if len(raw) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1), got {raw!r}")
        betas = tuple(V.finite_number(b, f"betas[{i}]") for i, b in enumerate(raw))
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {raw!r}")
        eps = _nonneg("eps", h["eps"])
        return {"lr": _nonneg("lr", h["lr"]), "betas": list(betas), "eps": eps,
                "weight_decay": _nonneg("weight_decay", h["weight_decay"])}

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        h = self.hyper
        t = p.dtype.type
        b1, b2 = h["betas"]
        if h["weight_decay"]:
            g = g + t(h["weight_decay"]) * p
        m, v = self.state["m"][key], self.state["v"][key]
        m *= t(b1)
        m += t(1 - b1) * g
        v *= t(b2)
        v += t(1 - b2) * (g * g)
        bc1 = 1 - b1 ** self.step_count
        bc2 = 1 - b2 ** self.step_count
        # p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), as torch computes it
        denom = np.sqrt(v) / t(np.sqrt(bc2))
        denom += t(h["eps"])
        p -= t(h["lr"] / bc1) * m / denom
