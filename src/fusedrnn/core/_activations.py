"""The warping functions (activations) a recurrent cell can use: names, parameters,
and how a user spells one.

An activation is given as its name, e.g. ``"tanh"``, or as a tuple of its name and
its parameters, e.g. ``("leaky_relu", 0.1)`` or ``("hard_sigmoid", 0.2, 0.5)``
(alpha, then beta). Names are ONNX's, in any case, with or without underscores:
``"HardSigmoid"``, ``"hardsigmoid"`` and ``"hard_sigmoid"`` are one function. A
parameter left out takes its default. Where a layer has two directions, a list of
two activations gives one per direction (forward first).

The equations are in docs/equations.md §9 (and §1, §2).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, List, NamedTuple, Optional, Tuple


class Activation(NamedTuple):
    """One warping function with its parameters (alpha, beta; 0.0 where unused)."""
    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def __repr__(self) -> str:
        params = [p for p, used in zip((self.alpha, self.beta), USES[self.name]) if used]
        return repr(self.name) if not params else repr((self.name, *params))


# ONNX's name of each function, and whether it takes alpha and beta
ONNX_NAMES = {
    "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "hardsigmoid": "HardSigmoid",
    "affine": "Affine", "leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu",
    "scaledtanh": "ScaledTanh", "elu": "Elu", "softsign": "Softsign", "softplus": "Softplus",
}
USES = {  # (takes alpha, takes beta)
    "sigmoid": (False, False), "tanh": (False, False), "relu": (False, False),
    "hardsigmoid": (True, True), "affine": (True, True), "leakyrelu": (True, False),
    "thresholdedrelu": (True, False), "scaledtanh": (True, True), "elu": (True, False),
    "softsign": (False, False), "softplus": (False, False),
}
# the defaults of the ONNX operators of the same names (Affine, ScaledTanh: identity scaling)
DEFAULTS = {"hardsigmoid": (0.2, 0.5), "affine": (1.0, 0.0), "leakyrelu": (0.01, 0.0),
            "thresholdedrelu": (1.0, 0.0), "scaledtanh": (1.0, 1.0), "elu": (1.0, 0.0)}

# defaults that ONNX Runtime does not share (it takes 0 for a parameter not given)
UNSETTLED = frozenset({"affine", "scaledtanh", "thresholdedrelu"})

SIGMOID = Activation("sigmoid")
TANH = Activation("tanh")


def _key(name: str) -> str:
    return name.replace("_", "").lower()


def names() -> List[str]:
    """The activation names (lower case)."""
    return list(ONNX_NAMES)


def parse(spec: Any, what: str = "activation") -> Activation:
    """An `Activation` from a name or a (name, alpha[, beta]) tuple (or an Activation);
    ValueError/TypeError naming `what` otherwise."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        name, params = spec, ()
    elif isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        name, params = spec[0], spec[1:]
    else:
        raise TypeError(f"{what} must be an activation name such as 'tanh' or a tuple "
                        f"(name, alpha[, beta]), got {spec!r}")
    key = _key(name)
    if key not in ONNX_NAMES:
        raise ValueError(f"{what}: unknown activation {name!r}; choose one of "
                         f"{', '.join(ONNX_NAMES.values())}")
    takes = sum(USES[key])
    if len(params) > takes:
        raise ValueError(f"{what}: {ONNX_NAMES[key]} takes "
                         f"{['no parameters', 'alpha', 'alpha and beta'][takes]}, got {spec!r}")
    values = list(DEFAULTS.get(key, (0.0, 0.0)))
    for i, p in enumerate(params):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(float(p)):
            raise ValueError(f"{what}: {'alpha' if i == 0 else 'beta'} of {ONNX_NAMES[key]} must "
                             f"be a finite number, got {p!r}")
        values[i] = float(p)
    return Activation(key, values[0], values[1])


def per_direction(spec: Any, directions: int, what: str) -> Tuple[Activation, ...]:
    """One Activation per direction: `spec` for all of them, or a list/tuple of
    `directions` specs (forward first)."""
    if isinstance(spec, (list, tuple)) and not (spec and isinstance(spec[0], str)
                                                and all(not isinstance(p, (str, tuple, list))
                                                        for p in spec[1:])):
        specs = list(spec)
        if len(specs) != directions:
            raise ValueError(f"{what} must be one activation or a list of {directions} (one per "
                             f"direction), got {len(specs)}: {spec!r}")
        return tuple(parse(s, f"{what}[{d}]") for d, s in enumerate(specs))
    one = parse(spec, what)
    return (one,) * directions


def is_default(acts: Tuple[Activation, ...], default: Activation) -> bool:
    return all(a == default for a in acts)


# the kernel's FR_ACT_* codes (csrc/fusedrnn.h), in ONNX_NAMES order from 1 (0: the default)
KINDS = {name: i + 1 for i, name in enumerate(ONNX_NAMES)}


def kernel(a: Activation) -> Tuple[int, float, float]:
    """The kernel's (kind, alpha, beta) of an Activation."""
    return KINDS[a.name], a.alpha, a.beta


def spec(a: Activation) -> Any:
    """The plain spelling of an Activation that `parse` reads back: its name, or
    (name, alpha[, beta]) with the parameters it takes."""
    params = tuple(p for p, used in zip((a.alpha, a.beta), USES[a.name]) if used)
    return (a.name,) + params if params else a.name


def layer_option(spec_: Any, directions: int, what: str) -> Tuple[Any, Tuple[Activation, ...]]:
    """A layer's activation option: (the value the layer keeps, one Activation per
    direction). The value kept is `spec`'s plain spelling, one for all directions
    or a tuple of one per direction where they differ."""
    acts = per_direction(spec_, directions, what)
    if all(a == acts[0] for a in acts):
        return spec(acts[0]), acts
    return tuple(spec(a) for a in acts), acts


def onnx_attributes(per_cell: List[Tuple[Activation, ...]]) -> Tuple[List[str], List[float],
                                                                     List[float]]:
    """ONNX's activations / activation_alpha / activation_beta for a node whose
    functions, in ONNX's order, are `per_cell` flattened; alpha and beta are
    listed for the functions that take them, in order (as ONNX Runtime reads them)."""
    names_, alphas, betas = [], [], []
    for acts in per_cell:
        for a in acts:
            names_.append(ONNX_NAMES[a.name])
            if USES[a.name][0]:
                alphas.append(a.alpha)
            if USES[a.name][1]:
                betas.append(a.beta)
    return names_, alphas, betas


def from_onnx(names_: List[str], alphas: Optional[List[float]], betas: Optional[List[float]],
              where: str) -> List[Activation]:
    """The Activations of an ONNX node's activations attribute, alpha and beta taken
    in order by the functions that use them (ONNX Runtime's reading). A function
    beyond the lists takes its default where ONNX and ONNX Runtime agree on it
    (LeakyRelu, HardSigmoid, Elu); Affine, ScaledTanh and ThresholdedRelu need their
    values written (ONNX Runtime takes 0 where the ONNX operators default to 1):
    ValueError naming the node otherwise."""
    al, be = list(alphas or []), list(betas or [])
    out = []
    for n in names_:
        key = _key(n)
        if key not in ONNX_NAMES:
            raise ValueError(f"{where}: unknown activation {n!r} in activations; ONNX defines "
                             f"{', '.join(ONNX_NAMES.values())}")
        a, b = DEFAULTS.get(key, (0.0, 0.0))
        for i, (used, values) in enumerate(zip(USES[key], (al, be))):
            if not used:
                continue
            if not values and key in UNSETTLED:
                raise ValueError(f"{where}: activations: {ONNX_NAMES[key]} has no "
                                 f"activation_{'alpha' if i == 0 else 'beta'} value left; its "
                                 "default differs between ONNX (1) and ONNX Runtime (0), so "
                                 "write it out")
            if values:
                if i == 0:
                    a = float(values.pop(0))
                else:
                    b = float(values.pop(0))
        out.append(Activation(key, a, b))
    if al or be:
        raise ValueError(f"{where}: activation_alpha / activation_beta hold more values than "
                         f"the activations {list(names_)} take")
    return out
