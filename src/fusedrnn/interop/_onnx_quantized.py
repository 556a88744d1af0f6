"""int8 LSTMs in ONNX: ONNX Runtime's contrib operator com.microsoft.DynamicQuantizeLSTM.

The node takes the LSTM node's inputs and attributes (X, B, sequence_lens, initial_h,
initial_c, P; direction, clip, input_forget, activations) with the weights in int8:

    W (D, I, 4H) int8, R (D, R, 4H) int8    the transposes of the LSTM node's W and R
    W_scale, R_scale (D, 4H) float32        one scale per column (output unit), or (D,)
    W_zero_point, R_zero_point (D, 4H) int8 (or (D,)): zero for symmetric weights

An int8 `fr.QuantizedLSTM` holds exactly such weights (symmetric, one scale per output
unit: docs/equations.md §7), so `export` writes them as they are (gates in ONNX's order)
and `load` reads them back bit for bit. ONNX Runtime quantises the activations its own
way (uint8, asymmetric, one scale per GEMM call) where fusedrnn takes one symmetric int8
scale per row, so the two runtimes' outputs are close but not equal."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..core import _validate as V
from ..core._layer import suffix
from ..core.quantized import QuantizedGRU, QuantizedLSTM, QuantizedRNN, _split_key, assemble
from ._onnx_graph import node_name, tensor_array

MS_DOMAIN = "com.microsoft"
OP = "DynamicQuantizeLSTM"
_FLOAT_ALTERNATIVE = ("export the float layer instead (fr.onnx.export of the layer before "
                      "quantize; onnxruntime.quantization.quantize_dynamic turns its LSTM "
                      "nodes into DynamicQuantizeLSTM)")


def check_export(layer: Any, blocked: List[str], unsupported: str, layout: int,
                 dtype: Any) -> None:
    """ValueError naming what a quantized layer has that DynamicQuantizeLSTM cannot
    express, and the alternative."""
    if isinstance(layer, (QuantizedRNN, QuantizedGRU)):
        kind = type(layer).__name__
        raise ValueError(f"ONNX has no quantized {kind[len('Quantized'):]} operator (ONNX "
                         f"Runtime's DynamicQuantizeLSTM is an LSTM): a {kind} "
                         f"({layer.precision}) cannot be exported; {_FLOAT_ALTERNATIVE}")
    if layer.precision != "int8":
        raise ValueError(f"ONNX has no {layer.precision} LSTM operator (DynamicQuantizeLSTM "
                         f"takes int8 weights): a {layer.precision} QuantizedLSTM cannot be "
                         f"exported; quantize the float layer with 'int8', or "
                         f"{_FLOAT_ALTERNATIVE}")
    if blocked:
        raise ValueError(f"ONNX Runtime's DynamicQuantizeLSTM has no {', '.join(blocked)}: "
                         f"this int8 QuantizedLSTM cannot be exported; {_FLOAT_ALTERNATIVE} "
                         "(with unsupported='scan' for those options)")
    if unsupported != "raise":
        raise ValueError("unsupported='scan' writes a float32 Scan subgraph, which has no "
                         f"int8 form: export an int8 QuantizedLSTM with unsupported='raise', or "
                         f"{_FLOAT_ALTERNATIVE}")
    if layout != 0:
        raise ValueError("DynamicQuantizeLSTM has no layout attribute (its nodes are "
                         "time-major): export an int8 QuantizedLSTM with layout=0")
    if dtype is not None and V.as_dtype(dtype) != np.float32:
        raise ValueError(f"DynamicQuantizeLSTM computes in float32: dtype must be float32 or "
                         f"None for an int8 QuantizedLSTM, got {V.as_dtype(dtype)}")


def node_inputs(g: Any, layer: QuantizedLSTM, gates: Callable[[str], np.ndarray], x: str,
                B: np.ndarray, lens: str, h0: str, c0: str, P: Optional[np.ndarray]) -> List[str]:
    """The inputs of one layer's DynamicQuantizeLSTM node; gates(name): the parameter
    `name` of every direction (D, 4H, ...), in ONNX's gate order."""
    D, H = layer.num_directions, layer.hidden_size
    ins = [x]
    for name in ("W_x", "W_v"):   # (D, K, 4H): the node's layout is the transpose
        ins.append(g.const("W" if name == "W_x" else "R", gates(name).transpose(0, 2, 1),
                           np.int8))
    ins += [g.const("B", B), lens, h0, c0, "" if P is None else g.const("P", P)]
    for name, what in (("W_x", "W"), ("W_v", "R")):
        ins += [g.const(what + "_scale", gates(name + "_scale"), np.float32),
                g.const(what + "_zero_point", np.zeros((D, 4 * H)), np.int8)]
    return ins


def node_layer(node: Any, consts: Dict[str, Any], dtype: Optional[np.dtype],
               exact_clip: Optional[str], lstm_layer: Callable[..., Any]) -> QuantizedLSTM:
    """The one-layer int8 QuantizedLSTM of a DynamicQuantizeLSTM node: the weights as
    stored (int8, zero point 0, scales per column or per direction), everything else
    read and checked as the LSTM node's by `lstm_layer` (fusedrnn.onnx's reader)."""
    from ..onnx import _INV_GATE_ORDER, _onnx, _reorder
    where = node_name(node)
    if dtype is not None and dtype != np.float32:
        raise ValueError(f"{where} loads as an int8 fr.QuantizedLSTM, which computes in "
                         f"float32: dtype must be float32 or None, got {dtype}")
    ins = list(node.input) + [""] * 12

    def const(i: int, what: str) -> np.ndarray:
        name = ins[i]
        if not name:
            raise ValueError(f"{where} has no {what} input")
        if name not in consts:
            raise ValueError(f"{where}: input {what} ({name!r}) is neither an initializer nor a "
                             "Constant; fusedrnn.onnx.load reads the quantized weights from "
                             "the model")
        return tensor_array(consts[name], f"{where}: input {what} ({name!r})")

    W, R = const(1, "W"), const(2, "R")
    for what, arr in (("W", W), ("R", R)):
        if arr.dtype != np.int8:
            raise ValueError(f"{where}: {what} is {arr.dtype}; fusedrnn's int8 layers hold "
                             "symmetric int8 weights (int8, zero point 0): uint8 or asymmetric "
                             "weights have no fusedrnn equivalent")
        if arr.ndim != 3 or arr.shape[0] != W.shape[0] or arr.shape[2] != W.shape[2]:
            raise ValueError(f"{where}: W and R must be 3-D (num_directions, input_size / "
                             "hidden_size, 4*hidden_size), got shapes "
                             f"{W.shape} and {R.shape}")
        if arr.size and int(arr.min()) == -128:
            raise ValueError(f"{where}: {what} holds -128; fusedrnn's symmetric int8 weights "
                             "lie in [-127, 127]")
    D, G = int(W.shape[0]), int(W.shape[2])
    scales = {}
    for what, i in (("W", 8), ("R", 10)):
        s, z = const(i, f"{what}_scale"), const(i + 1, f"{what}_zero_point")
        if s.dtype != np.float32 or s.shape not in ((D,), (D, G)):
            raise ValueError(f"{where}: {what}_scale must be float32 of shape ({D},) (one scale "
                             f"per direction) or ({D}, {G}) (one per column), got {s.dtype} "
                             f"{s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{where}: {what}_scale holds values that are not finite")
        if z.dtype != np.int8 or z.shape != s.shape or np.any(z != 0):
            raise ValueError(f"{where}: {what}_zero_point must be int8 zeros of {what}_scale's "
                             f"shape {s.shape} (symmetric weights), got {z.dtype} {z.shape}"
                             + (" with non-zero entries" if z.shape == s.shape else ""))
        scales[what] = np.broadcast_to(s.reshape(D, -1), (D, G))
    # the node as an LSTM node whose W and R are those integers (exact in float32)
    lstm = _onnx().NodeProto()
    lstm.CopyFrom(node)
    lstm.op_type, lstm.domain = "LSTM", ""
    del lstm.input[8:]
    consts = dict(consts)
    for i, arr in ((1, W), (2, R)):
        lstm.input[i] = f"{ins[i]} (as float)"
        consts[lstm.input[i]] = np.ascontiguousarray(arr.transpose(0, 2, 1), np.float32)
    try:
        layer = lstm_layer(lstm, consts, np.dtype(np.float32), exact_clip)
    except ValueError as exc:
        raise ValueError(str(exc).replace(node_name(lstm), where, 1)) from None
    H = layer.hidden_size
    params = dict(layer.params)
    for d in range(D):
        s = suffix(0, d)
        for name, what in (("W_x", "W"), ("W_v", "R")):
            params[name + s] = layer.params[name + s].astype(np.int8)
            params[name + "_scale" + s] = _reorder(scales[what][d], H, _INV_GATE_ORDER)
    return assemble(layer, "int8", params)


def stack(net: Any, cells: List[QuantizedLSTM]) -> QuantizedLSTM:
    """The int8 QuantizedLSTM of the float stack `net`'s configuration holding the
    one-layer cells' parameters as layers 0, 1, ..."""
    params = {}
    for l, c in enumerate(cells):
        for key, arr in c.params.items():
            name, cell = _split_key(key)
            params[name + suffix(l, int(cell == "_reverse"))] = arr
    return assemble(net, "int8", params)
