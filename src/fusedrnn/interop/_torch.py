"""Exact weight mapping between fusedrnn networks and torch.nn.LSTM / torch.nn.RNN /
torch.nn.GRU, for every setting PyTorch has (layers, directions, proj_size, biases).

torch is imported lazily: it is an optional dependency."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Tuple

import numpy as np

from ..core._layer import suffix


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError("this needs PyTorch: pip install torch") from exc
    return torch


def _np(t: Any) -> np.ndarray:
    out: np.ndarray = t.detach().cpu().numpy().copy()
    return out


def _check_module(module: Any, kind: str) -> None:
    torch = _torch()
    if not isinstance(module, getattr(torch.nn, kind)):
        raise TypeError(f"expected a torch.nn.{kind}, got {type(module).__name__}")
    dtype = module.weight_ih_l0.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"torch.nn.{kind} weights must be float32 or float64, got {dtype}")


def _cells(module: Any) -> Iterator[Tuple[str, str]]:
    """(torch suffix, fusedrnn suffix) of every layer and direction."""
    for l in range(module.num_layers):
        for d in range(2 if module.bidirectional else 1):
            yield f"_l{l}" + ("_reverse" if d else ""), suffix(l, d)


def _weight(module: Any, name: str, shape: Tuple[int, ...], ours: str) -> np.ndarray:
    """A copy of the module's parameter `name`, which must have `shape` (that of
    fusedrnn's `ours`): numpy would broadcast a wrong one, or fail without naming it."""
    w = getattr(module, name)
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"torch.nn.{type(module).__name__} parameter {name} must have shape "
                         f"{tuple(shape)} (fusedrnn's {ours}), got {tuple(w.shape)}")
    return _np(w)


def _copy_in(layer: Any, module: Any, names: Dict[str, str], hh_tail: str = "") -> Any:
    """Fill layer.params from the module: names maps our base name -> torch base name.
    The bias is bias_ih + bias_hh; with hh_tail (the GRU's "b_hn") the last H rows
    of bias_hh go to that parameter instead of into the sum."""
    for t_sfx, f_sfx in _cells(module):
        for ours, theirs in names.items():
            dst = layer.params[ours + f_sfx]
            dst[...] = _weight(module, theirs + t_sfx, dst.shape, ours + f_sfx)
        bias_key = "b" if "b" in layer.params else "theta_s"
        dst = layer.params[bias_key + f_sfx]
        tail = layer.params[hh_tail + f_sfx] if hh_tail else dst[:0]
        if module.bias:
            b_hh = _weight(module, "bias_hh" + t_sfx, dst.shape, bias_key + f_sfx)
            dst[...] = _weight(module, "bias_ih" + t_sfx, dst.shape, bias_key + f_sfx)
            dst[:dst.shape[0] - tail.shape[0]] += b_hh[:dst.shape[0] - tail.shape[0]]
            tail[...] = b_hh[dst.shape[0] - tail.shape[0]:]
        else:
            dst[...] = 0
            tail[...] = 0
    return layer


def _copy_out(layer: Any, module: Any, names: Dict[str, str], bias_key: str,
              hh_tail: str = "") -> Any:
    """The inverse of _copy_in: bias_ih = the bias, bias_hh = 0 but for its last H
    rows, which are hh_tail's (the GRU's b_hn)."""
    torch = _torch()
    with torch.no_grad():
        for t_sfx, f_sfx in _cells(module):
            for ours, theirs in names.items():
                getattr(module, theirs + t_sfx).copy_(torch.from_numpy(np.array(layer.params[ours + f_sfx])))
            getattr(module, "bias_ih" + t_sfx).copy_(torch.from_numpy(
                np.array(layer.params[bias_key + f_sfx])))
            b_hh = getattr(module, "bias_hh" + t_sfx)
            b_hh.zero_()
            if hh_tail:
                tail = layer.params[hh_tail + f_sfx]
                b_hh[b_hh.shape[0] - tail.shape[0]:].copy_(torch.from_numpy(np.array(tail)))
    return module


def _torch_dtype(dtype: np.dtype) -> Any:
    torch = _torch()
    return torch.float64 if dtype == np.float64 else torch.float32


def _stack_options(module: Any) -> Dict[str, Any]:
    """The constructor keywords of a fusedrnn layer for what every torch.nn recurrent
    module has: layers, directions, dropout (between layers only), dtype, layout."""
    return dict(num_layers=module.num_layers, bidirectional=module.bidirectional,
                dropout=float(module.dropout) if module.num_layers > 1 else 0.0,
                dtype=_np(module.weight_ih_l0).dtype, batch_first=module.batch_first)


def _refuse(kind: str, options: Tuple[Tuple[str, bool], ...]) -> None:
    """ValueError naming the options (name, in use) that torch.nn.`kind` lacks."""
    blocked = [name for name, on in options if on]
    if blocked:
        raise ValueError(f"torch.nn.{kind} has no {', '.join(blocked)}: this {kind} cannot be "
                         "exported to it")


def lstm_from_torch(cls: Any, module: Any) -> Any:
    _check_module(module, "LSTM")
    layer = cls(module.input_size, module.hidden_size, peepholes=None, proj_size=module.proj_size,
                **_stack_options(module))
    names = {"W_x": "weight_ih", "W_v": "weight_hh"}
    if module.proj_size:
        names["W_qv"] = "weight_hr"
    return _copy_in(layer, module, names)


def lstm_to_torch(layer: Any) -> Any:
    _refuse("LSTM", (("peepholes", layer.peepholes != "none"),
                     ("context windows", layer.context != (0, 0)),
                     ("coupled gates", layer.coupled_gates),
                     ("cell_clip", layer.cell_clip is not None),
                     ("accumulation_clip", layer.accumulation_clip is not None),
                     ("reverse (a backwards-only layer)", layer.reverse),
                     ("warping functions other than sigmoid and tanh "
                      f"(gate_activation={layer.gate_activation!r}, "
                      f"cell_activation={layer.cell_activation!r}, "
                      f"output_activation={layer.output_activation!r})",
                      (layer.gate_activation, layer.cell_activation,
                       layer.output_activation) != ("sigmoid", "tanh", "tanh"))))
    layer._checked_params()  # names a missing, wrong-shaped or wrong-dtype entry
    torch = _torch()
    module = torch.nn.LSTM(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                           bidirectional=layer.bidirectional, proj_size=layer.proj_size,
                           dropout=layer.dropout, batch_first=layer.batch_first,
                           dtype=_torch_dtype(layer.dtype))
    names = {"W_x": "weight_ih", "W_v": "weight_hh"}
    if layer.proj_size:
        names["W_qv"] = "weight_hr"
    return _copy_out(layer, module, names, "b")


def rnn_from_torch(cls: Any, module: Any) -> Any:
    _check_module(module, "RNN")
    if module.nonlinearity not in ("tanh", "relu"):
        raise ValueError("torch.nn.RNN's nonlinearity must be 'tanh' or 'relu', got "
                         f"{module.nonlinearity!r}")
    layer = cls(module.input_size, module.hidden_size, state_feedback=False,
                activation=module.nonlinearity, **_stack_options(module))
    return _copy_in(layer, module, {"W_x": "weight_ih", "W_r": "weight_hh"})


def rnn_to_torch(layer: Any) -> Any:
    if layer.state_feedback:
        raise ValueError("torch.nn.RNN has no state feedback W_s: build the RNN with "
                         "state_feedback=False to export it")
    _refuse("RNN", (("reverse (a backwards-only layer)", layer.reverse),
                    ("accumulation_clip", layer.accumulation_clip is not None)))
    if layer.activation not in ("tanh", "relu"):
        raise ValueError("torch.nn.RNN's nonlinearity is 'tanh' or 'relu' (for every direction), "
                         f"this RNN's activation is {layer.activation!r}: it cannot be exported")
    layer._checked_params()  # names a missing, wrong-shaped or wrong-dtype entry
    torch = _torch()
    module = torch.nn.RNN(layer.input_size, layer.hidden_size, nonlinearity=layer.activation,
                          num_layers=layer.num_layers, bidirectional=layer.bidirectional,
                          dropout=layer.dropout, batch_first=layer.batch_first,
                          dtype=_torch_dtype(layer.dtype))
    return _copy_out(layer, module, {"W_x": "weight_ih", "W_r": "weight_hh"}, "theta_s")


def gru_from_torch(cls: Any, module: Any) -> Any:
    _check_module(module, "GRU")
    layer = cls(module.input_size, module.hidden_size, linear_before_reset=True,
                **_stack_options(module))
    return _copy_in(layer, module, {"W_x": "weight_ih", "W_h": "weight_hh"}, "b_hn")


def gru_to_torch(layer: Any) -> Any:
    _refuse("GRU", (("linear_before_reset=False (r applied to h before W_hn)",
                     not layer.linear_before_reset),
                    ("reverse (a backwards-only layer)", layer.reverse),
                    ("accumulation_clip", layer.accumulation_clip is not None),
                    (f"warping functions other than sigmoid and tanh (gate_activation="
                     f"{layer.gate_activation!r}, cell_activation={layer.cell_activation!r})",
                     (layer.gate_activation, layer.cell_activation) != ("sigmoid", "tanh"))))
    layer._checked_params()  # names a missing, wrong-shaped or wrong-dtype entry
    torch = _torch()
    module = torch.nn.GRU(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                          bidirectional=layer.bidirectional, dropout=layer.dropout,
                          batch_first=layer.batch_first, dtype=_torch_dtype(layer.dtype))
    return _copy_out(layer, module, {"W_x": "weight_ih", "W_h": "weight_hh"}, "b", "b_hn")
