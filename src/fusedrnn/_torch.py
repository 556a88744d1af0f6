"""Exact weight mapping between fusedrnn layers and torch.nn.LSTM / torch.nn.RNN.

torch is imported lazily: it is an optional dependency."""
from __future__ import annotations

from typing import Any

import numpy as np


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError("this needs PyTorch: pip install torch") from exc
    return torch


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _check_module(module: Any, kind: str) -> None:
    torch = _torch()
    cls = getattr(torch.nn, kind)
    if not isinstance(module, cls):
        raise TypeError(f"expected a torch.nn.{kind}, got {type(module).__name__}")
    if module.num_layers != 1 or module.bidirectional or getattr(module, "proj_size", 0):
        raise ValueError(f"only a one-layer, unidirectional torch.nn.{kind} without proj_size "
                         f"maps onto this layer (got num_layers={module.num_layers}, "
                         f"bidirectional={module.bidirectional}, "
                         f"proj_size={getattr(module, 'proj_size', 0)})")
    dtype = module.weight_ih_l0.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"torch.nn.{kind} weights must be float32 or float64, got {dtype}")


def _bias(module: Any, rows: int, dtype: np.dtype) -> np.ndarray:
    if not module.bias:
        return np.zeros(rows, dtype)
    return _np(module.bias_ih_l0) + _np(module.bias_hh_l0)


def lstm_from_torch(cls: Any, module: Any) -> Any:
    _check_module(module, "LSTM")
    W_x = _np(module.weight_ih_l0)
    layer = cls(module.input_size, module.hidden_size, peepholes=False, dtype=W_x.dtype,
                batch_first=module.batch_first)
    layer.params["W_x"][...] = W_x
    layer.params["W_v"][...] = _np(module.weight_hh_l0)
    layer.params["b"][...] = _bias(module, 4 * module.hidden_size, W_x.dtype)
    return layer


def _fill(module: Any, W_x: np.ndarray, W_h: np.ndarray, b: np.ndarray) -> Any:
    torch = _torch()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(W_x))
        module.weight_hh_l0.copy_(torch.from_numpy(W_h))
        module.bias_ih_l0.copy_(torch.from_numpy(b))
        module.bias_hh_l0.zero_()
    return module


def _torch_dtype(dtype: np.dtype) -> Any:
    torch = _torch()
    return torch.float64 if dtype == np.float64 else torch.float32


def lstm_to_torch(layer: Any) -> Any:
    if layer.peepholes:
        raise ValueError("torch.nn.LSTM has no peepholes: build the LSTM with peepholes=False "
                         "to export it")
    torch = _torch()
    module = torch.nn.LSTM(layer.input_size, layer.hidden_size, batch_first=layer.batch_first,
                           dtype=_torch_dtype(layer.dtype))
    return _fill(module, layer.params["W_x"], layer.params["W_v"], layer.params["b"])


def rnn_from_torch(cls: Any, module: Any) -> Any:
    _check_module(module, "RNN")
    if module.nonlinearity != "tanh":
        raise ValueError(f"the canonical RNN warps with tanh; got nonlinearity={module.nonlinearity!r}")
    W_x = _np(module.weight_ih_l0)
    layer = cls(module.input_size, module.hidden_size, state_feedback=False, dtype=W_x.dtype,
                batch_first=module.batch_first)
    layer.params["W_x"][...] = W_x
    layer.params["W_r"][...] = _np(module.weight_hh_l0)
    layer.params["theta_s"][...] = _bias(module, module.hidden_size, W_x.dtype)
    return layer


def rnn_to_torch(layer: Any) -> Any:
    if layer.state_feedback:
        raise ValueError("torch.nn.RNN has no state feedback W_s: build the RNN with "
                         "state_feedback=False to export it")
    torch = _torch()
    module = torch.nn.RNN(layer.input_size, layer.hidden_size, nonlinearity="tanh",
                          batch_first=layer.batch_first, dtype=_torch_dtype(layer.dtype))
    return _fill(module, layer.params["W_x"], layer.params["W_r"], layer.params["theta_s"])
