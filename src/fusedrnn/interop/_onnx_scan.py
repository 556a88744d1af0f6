"""The exact ONNX subgraph for what the LSTM/RNN operators cannot express
(projection, context windows, full peepholes, cell_clip, state feedback): the
cell written out in standard operators inside a `Scan` over time.

Per layer and direction, as the C kernel does it: the input GEMM of all steps
is hoisted out of the loop (MatMul over (T, B, I_l)); the Scan body does the
recurrent MatMul and the element-wise cell. Variable lengths: a (T, B, 1)
boolean mask holds the state and zeroes the output at padding steps, and the
reverse direction (and a reverse layer) runs over ReverseSequence of each
row's valid part (as `fr.LSTM` does). The context window is unfolded with Pad/Slice/Concat
(frames at or after a row's end are zero)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.lstm import LSTM


def _s(name: Any) -> str:
    """A tensor name (typed)."""
    return str(name)


class _Body:
    """Builder of a Scan body graph, sharing the outer graph's name counter."""

    def __init__(self, g: Any) -> None:
        self.g = g
        self.helper = g.helper
        self.nodes: List[Any] = []
        self.inits: List[Any] = []

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        name = _s(self.g.name(base))
        arr = np.asarray(value, dtype=dtype if dtype is not None else self.g.dtype)
        self.inits.append(self.g.onnx.numpy_helper.from_array(arr, name))
        return name

    def op1(self, op_type: str, inputs: Sequence[str], out: Optional[str] = None, **attrs: Any) -> str:
        name = out or self.g.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [name], **attrs))
        return name


def _unsq(g: Any, x: str, axis: int) -> str:
    return _s(g.op1("Unsqueeze", [x, g.const("axes", [axis], np.int64)]))


def _zeros_state(g: Any, x: str, width: int) -> str:
    """Zeros (B, width) with B read from x (T, B, .)."""
    shape = g.op1("Shape", [x])
    B = g.op1("Slice", [shape, g.const("s", [1], np.int64), g.const("e", [2], np.int64)])
    full = g.op1("Concat", [B, g.const("w", [width], np.int64)], axis=0)
    onnx = g.onnx
    value = onnx.numpy_helper.from_array(np.zeros(1, g.dtype), g.name("zero"))
    return _s(g.op1("ConstantOfShape", [full], value=value))


def _state_slice(g: Any, all_states: str, i: int) -> str:
    """all_states[i] (B, width) of an (L*D, B, width) input."""
    part = g.op1("Slice", [all_states, g.const("s", [i], np.int64), g.const("e", [i + 1], np.int64),
                           g.const("a", [0], np.int64)])
    return _s(g.op1("Squeeze", [part, g.const("axes", [0], np.int64)]))


def _mask(g: Any, x: str, lens64: str) -> str:
    """(T, B, 1) bool: step n < lengths[b]."""
    shape = g.op1("Shape", [x])
    T = g.op1("Squeeze", [g.op1("Slice", [shape, g.const("s", [0], np.int64),
                                          g.const("e", [1], np.int64)]),
                          g.const("axes", [0], np.int64)])
    steps = g.op1("Range", [g.const("zero", 0, np.int64), T, g.const("one", 1, np.int64)])
    less = g.op1("Less", [_unsq(g, steps, 1), _unsq(g, lens64, 0)])   # (T, B)
    return _unsq(g, less, 2)


def _unfold(g: Any, x: str, mask: Optional[str], L_past: int, L_future: int) -> str:
    """X (T, B, K*I): column block k holds x[n + k - L_past], zero outside each row's sequence."""
    if mask is not None:
        x = g.op1("Where", [mask, x, g.const("zero", 0.0)])
    ext = g.op1("Pad", [x, g.const("pads", [L_past, 0, 0, L_future, 0, 0], np.int64)])
    shape = g.op1("Shape", [x])
    T = g.op1("Slice", [shape, g.const("s", [0], np.int64), g.const("e", [1], np.int64)])
    blocks = []
    for k in range(L_past + 1 + L_future):
        end = g.op1("Add", [T, g.const("k", [k], np.int64)])
        blocks.append(g.op1("Slice", [ext, g.const("k", [k], np.int64), end,
                                      g.const("a", [0], np.int64)]))
    return _s(blocks[0] if len(blocks) == 1 else g.op1("Concat", blocks, axis=2))


def _lstm_body(g: Any, layer: LSTM, p: Dict[str, np.ndarray], H: int, R: int, masked: bool) -> Any:
    """Scan body: (s, o, xw_n[, m_n]) -> (s', o', y_n)."""
    b = _Body(g)
    helper, T = g.helper, g.onnx.helper.np_dtype_to_tensor_dtype(g.dtype)
    s, o, xw = g.name("s_prev"), g.name("o_prev"), g.name("xw_n")
    ins = [helper.make_tensor_value_info(s, T, ["B", H]),
           helper.make_tensor_value_info(o, T, ["B", R]),
           helper.make_tensor_value_info(xw, T, ["B", 4 * H])]
    m = None
    if masked:
        m = g.name("m_n")
        ins.append(helper.make_tensor_value_info(m, g.onnx.TensorProto.BOOL, ["B", 1]))
    a = b.op1("Add", [xw, b.op1("MatMul", [o, b.const("W_vT", p["W_v"].T)])])
    gate = [b.op1("Slice", [a, b.const("s", [k * H], np.int64), b.const("e", [(k + 1) * H], np.int64),
                            b.const("a", [1], np.int64)]) for k in range(4)]   # cu, cs, du, cr

    def peep(acc: str, k: int, state: str) -> str:
        if layer.peepholes == "diagonal":
            return b.op1("Add", [acc, b.op1("Mul", [state, b.const("w_s", p["w_s"][k])])])
        if layer.peepholes == "full":
            return b.op1("Add", [acc, b.op1("MatMul", [state, b.const("W_sT", p["W_s"][k].T)])])
        return acc

    def clip(acc: str, c: Optional[float]) -> str:
        if c is None:
            return acc
        return b.op1("Clip", [acc, b.const("lo", -c), b.const("hi", c)])

    c_acc = layer.accumulation_clip
    a_cu = clip(peep(gate[0], 0, s), c_acc)
    a_cs = clip(peep(gate[1], 1, s), c_acc)
    a_du = clip(gate[2], c_acc)
    g_cu = b.op1("Sigmoid", [a_cu])
    g_cs = (b.op1("Sub", [b.const("one", 1.0), g_cu]) if layer.coupled_gates
            else b.op1("Sigmoid", [a_cs]))
    u = b.op1("Tanh", [a_du])
    s_new = b.op1("Add", [b.op1("Mul", [g_cs, s]), b.op1("Mul", [g_cu, u])])
    s_new = clip(s_new, layer.cell_clip)
    a_cr = clip(peep(gate[3], 2, s_new), c_acc)
    v = b.op1("Mul", [b.op1("Sigmoid", [a_cr]), b.op1("Tanh", [s_new])])
    q = b.op1("MatMul", [v, b.const("W_qvT", p["W_qv"].T)]) if layer.proj_size else v
    outs = _masked_outputs(b, m, [(s_new, s), (q, o)], q)
    return _body_graph(g, b, ins, outs, [H, R, R])


def _rnn_body(g: Any, layer: Any, p: Dict[str, np.ndarray], H: int, masked: bool) -> Any:
    """Scan body: (s, r, xw_n[, m_n]) -> (s', r', y_n); s' = xw + W_s s + W_r r."""
    b = _Body(g)
    helper, T = g.helper, g.onnx.helper.np_dtype_to_tensor_dtype(g.dtype)
    s, r, xw = g.name("s_prev"), g.name("r_prev"), g.name("xw_n")
    ins = [helper.make_tensor_value_info(s, T, ["B", H]),
           helper.make_tensor_value_info(r, T, ["B", H]),
           helper.make_tensor_value_info(xw, T, ["B", H])]
    m = None
    if masked:
        m = g.name("m_n")
        ins.append(helper.make_tensor_value_info(m, g.onnx.TensorProto.BOOL, ["B", 1]))
    acc = b.op1("Add", [xw, b.op1("MatMul", [r, b.const("W_rT", p["W_r"].T)])])
    if layer.state_feedback:
        acc = b.op1("Add", [acc, b.op1("MatMul", [s, b.const("W_sT", p["W_s"].T)])])
    r_new = b.op1("Tanh", [acc])
    outs = _masked_outputs(b, m, [(acc, s), (r_new, r)], r_new)
    return _body_graph(g, b, ins, outs, [H, H, H])


def _masked_outputs(b: _Body, m: Optional[str], states: List[Tuple[str, str]], y: str) -> List[str]:
    """Body outputs: each state new-or-held, then the step output (0 at padding)."""
    if m is None:
        return [b.op1("Identity", [new]) for new, _ in states] + [b.op1("Identity", [y])]
    outs = [b.op1("Where", [m, new, old]) for new, old in states]
    return outs + [b.op1("Where", [m, y, b.const("zero", 0.0)])]


def _body_graph(g: Any, b: _Body, ins: List[Any], outs: List[str], widths: List[int]) -> Any:
    helper, T = g.helper, g.onnx.helper.np_dtype_to_tensor_dtype(g.dtype)
    out_infos = [helper.make_tensor_value_info(n, T, ["B", w]) for n, w in zip(outs, widths)]
    return helper.make_graph(b.nodes, g.name("cell"), ins, out_infos, initializer=b.inits)


def scan_network(g: Any, layer: Any, x: str, lens: str, h0_all: str,
                 c0_all: str) -> Tuple[str, List[str], List[str]]:
    """Append the whole network to g; x (T, B, I) time-major. Returns y (T, B, D*R)
    and per layer the final states (D, B, R) and (D, B, H) (RNN: r and s)."""
    is_lstm = isinstance(layer, LSTM)
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    R = layer.output_size
    lens64 = g.op1("Cast", [lens], to=g.onnx.TensorProto.INT64) if lens else ""
    mask = _mask(g, x, lens64) if lens else None
    y = x
    if is_lstm and layer.context != (0, 0):
        y = _unfold(g, x, mask, *layer.context)
    hs: List[str] = []
    cs: List[str] = []
    for l in range(L):
        outs, h_T, s_T = [], [], []
        for d in range(D):
            i = l * D + d
            p = layer._cell_dict(layer.params, l, d)
            o0 = _state_slice(g, h0_all, i) if h0_all else _zeros_state(g, x, R)
            s0 = _state_slice(g, c0_all, i) if c0_all else _zeros_state(g, x, H)
            inp = y
            rev = d == 1 or layer.reverse
            if rev and lens:
                inp = g.op1("ReverseSequence", [y, lens64], batch_axis=1, time_axis=0)
            if is_lstm:
                W, bias = p["W_x"], p["b"]
            else:
                W, bias = p["W_x"], p["theta_s"]
            xw = g.op1("Add", [g.op1("MatMul", [inp, g.const("W_xT", W.T)]), g.const("b", bias)])
            body = (_lstm_body(g, layer, p, H, R, mask is not None) if is_lstm
                    else _rnn_body(g, layer, p, H, mask is not None))
            scan_ins = [s0, o0, xw] + ([mask] if mask is not None else [])
            n_scan = len(scan_ins) - 2
            attrs: Dict[str, Any] = dict(body=body, num_scan_inputs=n_scan)
            if rev and not lens:
                attrs.update(scan_input_directions=[1] * n_scan, scan_output_directions=[1])
            sT, oT, ys = g.op("Scan", scan_ins, 3, **attrs)
            if rev and lens:
                ys = g.op1("ReverseSequence", [ys, lens64], batch_axis=1, time_axis=0)
            outs.append(ys)
            h_T.append(_unsq(g, oT, 0))
            s_T.append(_unsq(g, sT, 0))
        y = outs[0] if D == 1 else g.op1("Concat", outs, axis=2)
        hs.append(h_T[0] if D == 1 else g.op1("Concat", h_T, axis=0))
        cs.append(s_T[0] if D == 1 else g.op1("Concat", s_T, axis=0))
    return y, hs, cs
