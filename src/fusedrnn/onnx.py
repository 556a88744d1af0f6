"""ONNX export and import of fusedrnn networks: standard `LSTM` / `GRU` / `RNN` nodes.

    fr.onnx.export(lstm, "model.onnx", sequence_lens=True, initial_state=True)
    lstm2 = fr.onnx.load("model.onnx")            # the same parameters, bit for bit

The exported graph (opset >= 14, default 17) has
    inputs   X (T, B, I) float ((B, T, I) for a batch_first layer),
             sequence_lens (B,) int32            with sequence_lens=True
             initial_h (L*D, B, R), initial_c (L*D, B, H)  with initial_state=True
             (RNN: initial_h, the readout r; and initial_s, the state s, with
             state_feedback; GRU: initial_h)
    outputs  Y (T, B, D*R) ((B, T, D*R) batch_first), Y_h (L*D, B, R), Y_c (L*D, B, H)
             (RNN: Y, Y_h, and Y_s with state_feedback; GRU: Y, Y_h)
i.e. fusedrnn's own layouts. A stack is a chain of one node per layer, with
the Transpose/Reshape from ONNX's (T, D, B, H) output to (T, B, D*H) between
layers; initial states are sliced per layer and final states concatenated.
With `layout=1` the nodes are batch-major (ONNX's layout attribute: X (B, T, I),
Y (B, T, D, H), states (B, D, H)); the graph's inputs and outputs stay as above.
ONNX Runtime runs only layout=0 nodes, hence the default.

What maps onto the ONNX nodes: diagonal peepholes (`P`), coupled gates
(`input_forget=1`), accumulation_clip (`clip`), the warping functions
(`activations`, `activation_alpha`, `activation_beta`; per direction), bidirectional,
reverse (`direction="reverse"`), variable lengths, stacks, and for the RNN the
torch-like cell (state_feedback=False).
Gates are reordered from fusedrnn's (cu, cs, du, cr) = (i, f, g, o) to ONNX's
(i, o, f, c), peepholes from (cu, cs, cr) = (i, f, o) to ONNX's (i, o, f), and
fusedrnn's single bias b becomes B = [b; 0]. A GRU's gates are reordered from
fusedrnn's (r, z, n) to ONNX's (z, r, h), its linear_before_reset is the node's
attribute, and B = [b; 0, 0, b_hn] (B = [b; 0] without linear_before_reset).

What ONNX has no node for: projection (proj_size), context windows, full
peepholes, cell_clip (LSTM) and state feedback (RNN). `export` refuses them
with a ValueError naming the feature, unless `unsupported="scan"`, which emits
an exact equivalent subgraph instead: the cell written out in standard
operators inside a `Scan` over time (ReverseSequence for the reverse
direction and variable lengths; the context window unfolded with Pad/Slice/
Concat). Such graphs round-trip through `load` only as far as plain
LSTM/RNN nodes go: `load` reads LSTM and RNN nodes.

Both directions check what they handle: `export` the layer's parameters and
the opset before writing; `load` every node's weights against its attributes,
the chain of nodes and what lies between them, the graph's outputs, and external data (read only from files inside the model's
folder). What does not fit raises ValueError (TypeError for a wrong argument
type) naming the node or argument.

ONNX Runtime implements LSTM and RNN in float32 only: export float64 layers
with dtype=np.float32 to run them there.

An int8 `QuantizedLSTM` exports as ONNX Runtime's contrib operator
com.microsoft.DynamicQuantizeLSTM (its int8 weights and scales as they are), and
`load` reads such nodes back as an int8 QuantizedLSTM (see `export` and
fusedrnn.interop._onnx_quantized).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .interop import _onnx_graph as _G
from .interop import _onnx_quantized as _QO
from .core import _activations as _acts
from .core import _validate as V
from .core._layer import suffix
from .core.gru import GRU
from .core.lstm import LSTM
from .core.quantized import QuantizedLSTM, _Quantized
from .core.rnn import RNN

__all__ = ["export", "load", "load_nodes", "to_model", "blocking_features",
           "ONNX_GATE_ORDER", "ONNX_PEEPHOLE_ORDER", "ONNX_GRU_GATE_ORDER"]

# ONNX gate blocks (i, o, f, c) taken from ours (cu, cs, du, cr) = (i, f, g, o)
ONNX_GATE_ORDER = (0, 3, 1, 2)
# ONNX peephole blocks (i, o, f) taken from our w_s rows (cu, cs, cr) = (i, f, o)
ONNX_PEEPHOLE_ORDER = (0, 2, 1)
_INV_GATE_ORDER = tuple(int(i) for i in np.argsort(ONNX_GATE_ORDER))
_INV_PEEPHOLE_ORDER = tuple(int(i) for i in np.argsort(ONNX_PEEPHOLE_ORDER))
# ONNX GRU gate blocks (z, r, h) taken from ours (r, z, n) (the swap is its own inverse)
ONNX_GRU_GATE_ORDER = (1, 0, 2)

PathLike = Union[str, "os.PathLike[str]"]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise ImportError("fusedrnn.onnx needs the onnx package: pip install onnx") from exc
    return onnx


def _as_layer(model: Any) -> Any:
    """A fusedrnn LSTM/GRU/RNN from the model (fusedrnn.torch modules are converted)."""
    if isinstance(model, (LSTM, RNN, GRU)):
        return model
    if hasattr(model, "to_fusedrnn"):  # fusedrnn.torch.LSTM / GRU / RNN
        return model.to_fusedrnn()
    raise TypeError(f"expected a fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.RNN or fusedrnn.torch "
                    f"module, got {type(model).__name__}")


def blocking_features(model: Any) -> List[str]:
    """The options of `model` that no standard ONNX LSTM/GRU/RNN node expresses
    (empty: it exports as plain nodes)."""
    layer = _as_layer(model)
    if isinstance(layer, GRU):
        return []  # every GRU option has its ONNX attribute
    if isinstance(layer, RNN):
        return ["state_feedback"] if layer.state_feedback else []
    return [name for name, on in (
        ("proj_size (projection)", layer.proj_size > 0),
        ("context windows", layer.context != (0, 0)),
        ("peepholes='full'", layer.peepholes == "full"),
        ("cell_clip", layer.cell_clip is not None)) if on]


def _reorder(m: np.ndarray, H: int, order: Sequence[int]) -> np.ndarray:
    return np.concatenate([m[k * H:(k + 1) * H] for k in order])


class _Graph:
    """A small builder: nodes, initializers and unique names."""

    def __init__(self, dtype: np.dtype) -> None:
        self.onnx = _onnx()
        self.helper = self.onnx.helper
        self.dtype = dtype
        self.nodes: List[Any] = []
        self.inits: List[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        name = self.name(base)
        arr = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> List[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def op1(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.op(op_type, inputs, 1, **attrs)[0]


def _tensor_type(dtype: np.dtype) -> int:
    onnx = _onnx()
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def to_model(model: Any, *, sequence_lens: bool = False, initial_state: bool = False,
             opset: int = 17, dtype: Any = None, unsupported: str = "raise",
             layout: int = 0, name: str = "fusedrnn") -> Any:
    """The `onnx.ModelProto` that `export` writes (see `export`)."""
    onnx = _onnx()
    layer = _as_layer(model)
    newest = int(onnx.defs.onnx_opset_version())
    if not V.is_int(opset):
        raise TypeError(f"opset must be an int in [14, {newest}], got {opset!r}")
    if opset < 14:
        raise ValueError(f"opset must be >= 14, got {opset}")
    if opset > newest:
        raise ValueError(f"opset must be <= {newest} (the newest the installed onnx package "
                         f"knows), got {opset}")
    opset = int(opset)
    for flag, value in (("sequence_lens", sequence_lens), ("initial_state", initial_state)):
        V.flag(value, flag)
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not isinstance(unsupported, str) or unsupported not in ("raise", "scan"):
        raise ValueError(f"unsupported must be 'raise' or 'scan', got {unsupported!r}")
    if isinstance(layout, (bool, np.bool_)) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 (time-major nodes) or 1 (batch-major nodes), "
                         f"got {layout!r}")
    blocked = blocking_features(layer)
    int8 = isinstance(layer, _Quantized)
    if int8:
        _QO.check_export(layer, blocked, unsupported, layout, dtype)
    if blocked and unsupported == "scan" and _node_activations(layer):
        raise ValueError("the Scan subgraph warps with sigmoid and tanh only: this "
                         f"{type(layer).__name__}'s warping functions cannot be written with "
                         f"{', '.join(blocked)} (export them without those options)")
    if blocked and layout == 1 and unsupported == "scan":
        raise ValueError("layout=1 sets the layout of LSTM/RNN nodes; the Scan subgraph that "
                         f"this {type(layer).__name__} needs has none (export it with layout=0)")
    if blocked and unsupported == "raise":
        kind = "LSTM" if isinstance(layer, LSTM) else "RNN"
        raise ValueError(f"ONNX's {kind} operator has no {', '.join(blocked)}: this "
                         f"{type(layer).__name__} cannot be exported as standard {kind} nodes "
                         "(pass unsupported='scan' for an equivalent Scan subgraph)")
    dt = layer.dtype if dtype is None else V.as_dtype(dtype)
    for key, p in layer._checked_params().items():  # present, of the layer's dtype and shape
        if dt.itemsize < p.dtype.itemsize:
            big = np.abs(p[np.isfinite(p)])
            if big.size and big.max() > np.finfo(dt).max:
                raise ValueError(f"params[{key!r}] holds values beyond the range of {dt} "
                                 f"(max |value| {big.max():.3g}): export with dtype={p.dtype}")
    g = _Graph(dt)
    helper = onnx.helper
    is_lstm = isinstance(layer, LSTM)
    second_state = is_lstm or (isinstance(layer, RNN) and layer.state_feedback)
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    R = layer.output_size

    x_shape = ["B", "T", layer.input_size] if layer.batch_first else ["T", "B", layer.input_size]
    inputs = [helper.make_tensor_value_info("X", _tensor_type(dt), x_shape)]
    x = "X"
    if layer.batch_first != (layout == 1):  # the nodes read (T, B, I), or (B, T, I) with layout=1
        x = g.op1("Transpose", [x], perm=[1, 0, 2])
    lens = ""
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", onnx.TensorProto.INT32, ["B"]))
        lens = "sequence_lens"
    h0_all = c0_all = ""
    if initial_state:
        inputs.append(helper.make_tensor_value_info("initial_h", _tensor_type(dt), [L * D, "B", R]))
        h0_all = "initial_h"
        if second_state:
            c0_all = "initial_c" if is_lstm else "initial_s"
            inputs.append(helper.make_tensor_value_info(c0_all, _tensor_type(dt),
                                                        [L * D, "B", H]))

    if blocked:
        from .interop._onnx_scan import scan_network
        y, hs, cs = scan_network(g, layer, x, lens, h0_all, c0_all)
    else:
        hs, cs = [], []
        y = x
        for l in range(L):
            h0 = c0 = ""
            if initial_state:
                starts = g.const("start", [l * D], np.int64)
                ends = g.const("end", [(l + 1) * D], np.int64)
                axes = g.const("axes", [0], np.int64)
                h0 = _node_state(g, g.op1("Slice", [h0_all, starts, ends, axes]), layout)
                if is_lstm:
                    c0 = _node_state(g, g.op1("Slice", [c0_all, starts, ends, axes]), layout)
            if is_lstm:
                Y, Y_h, Y_c = _lstm_node(g, layer, l, y, lens, h0, c0, layout)
                cs.append(_node_state(g, Y_c, layout))
            elif isinstance(layer, GRU):
                Y, Y_h = _gru_node(g, layer, l, y, lens, h0, layout)
            else:
                Y, Y_h = _rnn_node(g, layer, l, y, lens, h0, layout)
            hs.append(_node_state(g, Y_h, layout))
            # layout 0: (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H);
            # layout 1: (B, T, D, H) -> (B, T, D*H)
            yt = Y if layout == 1 else g.op1("Transpose", [Y], perm=[0, 2, 1, 3])
            y = g.op1("Reshape", [yt, g.const("shape", [0, 0, -1], np.int64)])
    if layer.batch_first != (layout == 1):
        y = g.op1("Transpose", [y], perm=[1, 0, 2])
    outputs = [("Y", y, [*(["B", "T"] if layer.batch_first else ["T", "B"]), D * R]),
               ("Y_h", _concat(g, hs), [L * D, "B", R])]
    if second_state:
        outputs.append(("Y_c" if is_lstm else "Y_s", _concat(g, cs), [L * D, "B", H]))
    out_infos = []
    for out_name, src, shape in outputs:
        g.nodes.append(helper.make_node("Identity", [src], [out_name]))
        out_infos.append(helper.make_tensor_value_info(out_name, _tensor_type(dt), shape))
    graph = helper.make_graph(g.nodes, name, inputs, out_infos, initializer=g.inits)
    domains = [helper.make_opsetid("", opset)]
    if int8:
        domains.append(helper.make_opsetid(_QO.MS_DOMAIN, 1))
    m = helper.make_model(graph, opset_imports=domains,
                          producer_name="fusedrnn", producer_version=_version())
    m.doc_string = repr(layer)
    props = {"fusedrnn.layer": repr(layer), "fusedrnn.batch_first": "1" if layer.batch_first else "0"}
    if getattr(layer, "accumulation_clip", None) is not None:  # the clip attribute is a float32
        props["fusedrnn.accumulation_clip"] = repr(layer.accumulation_clip)
    onnx.helper.set_model_props(m, props)
    onnx.checker.check_model(m, full_check=True)
    return m


def _concat(g: _Graph, parts: List[str]) -> str:
    return parts[0] if len(parts) == 1 else g.op1("Concat", parts, axis=0)


def _version() -> str:
    from ._version import version
    return version()


def _direction(layer: Any) -> str:
    """The ONNX direction attribute of a layer's nodes."""
    if layer.bidirectional:
        return "bidirectional"
    return "reverse" if layer.reverse else "forward"


def _node_state(g: _Graph, state: str, layout: int) -> str:
    """A node's (B, D, H) state of layout=1 as our (D, B, H) and back (the same swap)."""
    return g.op1("Transpose", [state], perm=[1, 0, 2]) if layout == 1 else state


def _lstm_node(g: _Graph, layer: LSTM, l: int, x: str, lens: str, h0: str,
               c0: str, layout: int) -> Tuple[str, str, str]:
    """Layer l's LSTM node; an int8 QuantizedLSTM's is a DynamicQuantizeLSTM node."""
    H, D = layer.hidden_size, layer.num_directions
    p = layer.params
    sfx = [suffix(l, d) for d in range(D)]

    def gates(name: str) -> np.ndarray:  # (D, 4H, ...) in ONNX's gate order
        return np.stack([_reorder(p[name + s], H, ONNX_GATE_ORDER) for s in sfx])

    B = np.concatenate([gates("b"), np.zeros((D, 4 * H))], axis=1)
    P = None
    if layer.peepholes == "diagonal":
        P = np.stack([p["w_s" + s][list(ONNX_PEEPHOLE_ORDER)].reshape(-1) for s in sfx])
    attrs: Dict[str, Any] = _node_activations(layer)
    if layer.coupled_gates:
        attrs["input_forget"] = 1
    if layer.accumulation_clip is not None:
        attrs["clip"] = float(layer.accumulation_clip)
    if isinstance(layer, QuantizedLSTM):
        ins = _QO.node_inputs(g, layer, gates, x, B, lens, h0, c0, P)
        Y, Y_h, Y_c = _emit(g, _QO.OP, layer, ins, 3, 0, domain=_QO.MS_DOMAIN, **attrs)
        return Y, Y_h, Y_c
    ins = [x, g.const("W", gates("W_x")), g.const("R", gates("W_v")), g.const("B", B), lens,
           h0, c0, "" if P is None else g.const("P", P)]
    Y, Y_h, Y_c = _emit(g, "LSTM", layer, ins, 3, layout, **attrs)
    return Y, Y_h, Y_c


def _emit(g: _Graph, op: str, layer: Any, ins: List[str], n_out: int, layout: int,
          **attrs: Any) -> List[str]:
    """A recurrent node `op` of `layer`'s hidden size and direction (trailing
    absent inputs dropped, layout=1 written when asked)."""
    while ins[-1] == "":
        ins.pop()
    attrs.update(hidden_size=layer.hidden_size, direction=_direction(layer))
    if layout == 1:
        attrs["layout"] = 1
    return g.op(op, ins, n_out, **attrs)


def _rnn_node(g: _Graph, layer: RNN, l: int, x: str, lens: str, h0: str,
              layout: int) -> Tuple[str, str]:
    H, D = layer.hidden_size, layer.num_directions
    p = layer.params
    sfx = [suffix(l, d) for d in range(D)]
    W = np.stack([p["W_x" + s] for s in sfx])
    R = np.stack([p["W_r" + s] for s in sfx])
    B = np.stack([np.concatenate([p["theta_s" + s], np.zeros(H)]) for s in sfx])
    ins = [x, g.const("W", W), g.const("R", R), g.const("B", B), lens, h0]
    attrs: Dict[str, Any] = _node_activations(layer)
    if layer.accumulation_clip is not None:
        attrs["clip"] = float(layer.accumulation_clip)
    Y, Y_h = _emit(g, "RNN", layer, ins, 2, layout, **attrs)
    return Y, Y_h


# the warping-function options of a layer, in ONNX's order per direction (LSTM: f, g, h;
# GRU: f, g), and their defaults
_WARP_OPTIONS = {"LSTM": ("gate_activation", "cell_activation", "output_activation"),
                 "RNN": ("activation",), "GRU": ("gate_activation", "cell_activation")}
_WARP_DEFAULTS = {"LSTM": (_acts.SIGMOID, _acts.TANH, _acts.TANH), "RNN": (_acts.TANH,),
                  "GRU": (_acts.SIGMOID, _acts.TANH)}


def _node_activations(layer: Any) -> Dict[str, Any]:
    """The activations / activation_alpha / activation_beta attributes of a layer's
    nodes; none for the defaults (LSTM Sigmoid, Tanh, Tanh; RNN Tanh; GRU Sigmoid, Tanh)."""
    kind = ("LSTM" if isinstance(layer, LSTM) else "RNN" if isinstance(layer, RNN)
            else "GRU" if isinstance(layer, GRU) else None)
    if kind is None:
        return {}
    options = _WARP_OPTIONS[kind]
    D = layer.num_directions
    per = [_acts.per_direction(getattr(layer, k), D, k) for k in options]
    cells = [tuple(p[d] for p in per) for d in range(D)]
    default = _WARP_DEFAULTS[kind]
    if all(c == default for c in cells):
        return {}
    names, alphas, betas = _acts.onnx_attributes(cells)
    attrs: Dict[str, Any] = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _gru_node(g: _Graph, layer: GRU, l: int, x: str, lens: str, h0: str,
              layout: int) -> Tuple[str, str]:
    """W, R (D, 3H, .) in ONNX's (z, r, h) order; B = [W_b; R_b] with ours b in W_b
    and b_hn in R_b's h rows (linear_before_reset: the bias inside r's product)."""
    H, D = layer.hidden_size, layer.num_directions
    p = layer.params
    sfx = [suffix(l, d) for d in range(D)]
    W = np.stack([_reorder(p["W_x" + s], H, ONNX_GRU_GATE_ORDER) for s in sfx])
    R = np.stack([_reorder(p["W_h" + s], H, ONNX_GRU_GATE_ORDER) for s in sfx])
    B = np.stack([np.concatenate([_reorder(p["b" + s], H, ONNX_GRU_GATE_ORDER), np.zeros(2 * H),
                                  p["b_hn" + s] if layer.linear_before_reset else np.zeros(H)])
                  for s in sfx])
    ins = [x, g.const("W", W), g.const("R", R), g.const("B", B), lens, h0]
    attrs: Dict[str, Any] = _node_activations(layer)
    if layer.accumulation_clip is not None:
        attrs["clip"] = float(layer.accumulation_clip)
    Y, Y_h = _emit(g, "GRU", layer, ins, 2, layout,
                   linear_before_reset=int(layer.linear_before_reset), **attrs)
    return Y, Y_h


def export(model: Any, path: PathLike, *, sequence_lens: bool = False,
           initial_state: bool = False, opset: int = 17, dtype: Any = None,
           unsupported: str = "raise", layout: int = 0) -> Any:
    """Write `model` (a fusedrnn.LSTM / GRU / RNN, or a fusedrnn.torch module) to
    `path` as an ONNX model of standard LSTM/GRU/RNN nodes; returns the ModelProto.

    sequence_lens: add the graph input sequence_lens (B,) int32 (variable lengths).
    initial_state: add the graph inputs initial_h (and initial_c for an LSTM,
        initial_s for an RNN with state_feedback);
        without them the states start at zero.
    opset: ONNX opset (>= 14). dtype: float32 / float64 of the weights and
        tensors (default: the layer's; ONNX Runtime runs LSTM/RNN in float32 only).
    unsupported: "raise" (default) refuses options the ONNX operators lack
        (projection, context windows, full peepholes, cell_clip, state feedback)
        with a ValueError naming them; "scan" writes an exact Scan subgraph for them.
    layout: the `layout` attribute of the LSTM/RNN nodes. 0 (default): time-major
        nodes, which ONNX Runtime runs; 1: batch-major nodes that read X (B, T, I)
        directly, for runtimes that want them (ONNX Runtime refuses layout=1 nodes).
        The graph's inputs and outputs keep the layouts above either way.
    Inference graph: dropout is not exported.

    An int8 `fusedrnn.QuantizedLSTM` (lstm.quantize("int8")) exports as ONNX
    Runtime's com.microsoft.DynamicQuantizeLSTM nodes (the model imports the
    com.microsoft opset 1): W (D, I, 4H) and R (D, R, 4H) int8, the transposes of
    the LSTM node's, with W_scale / R_scale (D, 4H) float32 (one per output unit,
    as the layer holds them) and zero points 0; B, P, the attributes and the graph
    as for an LSTM. `load` reads such nodes back as an int8 QuantizedLSTM, bit for
    bit. ONNX Runtime quantizes the activations its own way, so its outputs are
    near, not equal to, the layer's. Refused with a ValueError (export the float
    layer instead): bf16 layers, QuantizedRNN, projection, context windows, full
    peepholes, cell_clip, unsupported="scan", layout=1, dtype other than float32."""
    onnx = _onnx()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    m = to_model(model, sequence_lens=sequence_lens, initial_state=initial_state, opset=opset,
                 dtype=dtype, unsupported=unsupported, layout=layout)
    onnx.save(m, os.fspath(path))
    return m


# -- import -----------------------------------------------------------------------------

_ATTRIBUTES = {"LSTM": {"hidden_size", "direction", "layout", "activations", "activation_alpha",
                        "activation_beta", "clip", "input_forget"},
               "RNN": {"hidden_size", "direction", "layout", "activations", "activation_alpha",
                       "activation_beta", "clip"},
               "GRU": {"hidden_size", "direction", "layout", "activations", "activation_alpha",
                       "activation_beta", "clip", "linear_before_reset"}}
_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "RNN": ["tanh"], "GRU": ["sigmoid", "tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # gate blocks of W and R


def _tensors(graph: Any) -> Any:
    """Every TensorProto of a graph and its subgraphs (initializers, attributes)."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for sub in a.graphs:
                yield from _tensors(sub)


def _read_external(t: Any, folder: str, path: str) -> None:
    """Read tensor t's external data into it; the file must lie inside `folder`
    (the model's), the bytes must be there and fit the tensor's shape."""
    onnx = _onnx()
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    where = f"{path}: tensor {t.name!r}"
    full = os.path.join(folder, loc)
    base = os.path.realpath(folder)
    real = os.path.realpath(full)
    if not loc or os.path.isabs(loc) or os.path.commonpath([base, real]) != base:
        raise ValueError(f"{where} keeps its data in {loc!r}, outside the model's folder "
                         f"{folder}: external data must be a file inside that folder")
    if not os.path.isfile(real):
        raise ValueError(f"{where}: its external data file {loc!r} does not exist")
    try:
        offset = int(info.get("offset") or 0)
        length = None if info.get("length") in (None, "") else int(info["length"])
    except ValueError:
        raise ValueError(f"{where}: external data offset/length must be integers, got "
                         f"{info.get('offset')!r}/{info.get('length')!r}") from None
    if offset < 0 or (length is not None and length < 0) or any(d < 0 for d in t.dims):
        raise ValueError(f"{where}: negative external data offset, length or dims")
    available = os.path.getsize(real) - offset
    try:
        need = int(np.prod(list(t.dims), dtype=object)) * onnx.helper.tensor_dtype_to_np_dtype(
            t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        need = None  # a type numpy has no dtype for: the converter will judge it
    want = length if length is not None else (need if need is not None else available)
    if need is not None and want != need:
        raise ValueError(f"{where}: external data length {want} does not fit its shape "
                         f"{list(t.dims)} ({need} bytes)")
    if want > available:
        raise ValueError(f"{where}: needs {want} bytes of {loc!r} from offset {offset}, the file "
                         f"has {max(available, 0)}")
    with open(real, "rb") as f:
        f.seek(offset)
        t.raw_data = f.read(want)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT


def _read_model(source: Any) -> Any:
    """An onnx.ModelProto: `source` itself, or read from the path `source` with its
    external data (only from files inside the model's folder)."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        for t in _tensors(source.graph):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise ValueError(f"tensor {t.name!r} of the ModelProto keeps its data in an "
                                 "external file: pass the model's path instead, so that the data "
                                 "is read from the model's folder")
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"path must be a file path or an onnx.ModelProto, got "
                        f"{type(source).__name__}")
    from google.protobuf import json_format, message, text_format
    path = os.fspath(source)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise ValueError(f"{path}: not a regular file")  # a pipe or device would block
    try:  # the format follows the file's extension (binary, text or JSON protobuf)
        m = onnx.load(path, load_external_data=False)
    except (message.Error, text_format.Error, json_format.Error) as exc:
        raise ValueError(f"{path}: not a valid ONNX model (it does not parse as an ONNX "
                         f"ModelProto: {exc})") from None
    folder = os.path.dirname(os.path.abspath(path))
    for t in _tensors(m.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _read_external(t, folder, path)
    return m


def _constants(graph: Any) -> Dict[str, Any]:
    """name -> TensorProto of the initializers and of the Constant nodes' values."""
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    consts[node.output[0]] = a.t
    return consts


def _node_layer(node: Any, consts: Dict[str, Any], dtype: Optional[np.dtype],
                exact_clip: Optional[str] = None) -> Any:
    """A one-layer fusedrnn layer from one LSTM, GRU or RNN node, every attribute and
    weight checked against the node's hidden size and directions (ValueError naming
    the node and the input or attribute otherwise)."""
    onnx = _onnx()
    op = node.op_type
    if op == _QO.OP:
        return _QO.node_layer(node, consts, dtype, exact_clip, _node_layer)
    where = f"{op} node {node.name!r}" if node.name else f"{op} node (unnamed)"
    ins = list(node.input) + [""] * 8
    a = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
    unknown = sorted(set(a) - _ATTRIBUTES[op])
    if unknown:
        raise ValueError(f"{where}: unknown attributes {unknown}")

    def attr(name: str, kind: type, default: Any) -> Any:
        v = a.get(name, default)
        if kind is str and isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        ok = isinstance(v, kind) or (kind is float and isinstance(v, int))
        if not ok or isinstance(v, bool):
            raise ValueError(f"{where}: attribute {name} must be a{'n' if kind is int else ''} "
                             f"{kind.__name__}, got {v!r}")
        return v

    def const(i: int, what: str, required: bool = False) -> Optional[np.ndarray]:
        name = ins[i]
        if not name:
            if required:
                raise ValueError(f"{where} has no {what} input")
            return None
        if name not in consts:
            raise ValueError(f"{where}: input {what} ({name!r}) is neither an initializer nor a "
                             "Constant; if it is a graph input, pass its value as "
                             f"fusedrnn.onnx.load(model, inputs={{{name!r}: array}})")
        arr = _G.tensor_array(consts[name], f"{where}: input {what} ({name!r})")
        if arr.dtype.kind != "f":
            raise ValueError(f"{where}: input {what} must be a float tensor (float16, float32 or "
                             f"float64: the operator's type T), got dtype {arr.dtype}")
        return arr

    def shape(arr: np.ndarray, what: str, want: Tuple[int, ...], names: str) -> None:
        if arr.shape != want:
            raise ValueError(f"{where}: {what} must have shape {names} = {want}, got {arr.shape}")

    direction = attr("direction", str, "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: direction must be 'forward', 'reverse' or 'bidirectional', "
                         f"got {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    reverse = direction == "reverse"
    layout = attr("layout", int, 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout must be 0 or 1, got {layout!r}")
    batch_first = layout == 1  # X (B, T, I)
    acts = a.get("activations")
    warp_options: Dict[str, Any] = {}
    if acts is not None:
        acts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in acts]
        want = _ACTIVATIONS[op] * D
        if len(acts) != len(want):
            raise ValueError(f"{where}: activations lists {len(acts)} functions, the "
                             f"{'bidirectional ' if D == 2 else ''}{op} takes "
                             f"{len(want)} ({len(want) // D} per direction)")
        funcs = _acts.from_onnx(acts, a.get("activation_alpha"), a.get("activation_beta"),
                                where)
        k = len(want) // D
        for i, option in enumerate(_WARP_OPTIONS[op]):
            specs = [_acts.spec(funcs[d * k + i]) for d in range(D)]
            warp_options[option] = specs[0] if D == 1 else specs
    elif "activation_alpha" in a or "activation_beta" in a:
        raise ValueError(f"{where}: activation_alpha / activation_beta without activations")
    G = _GATES[op]
    W = const(1, "W", required=True)
    Rm = const(2, "R", required=True)
    if W.ndim != 3 or Rm.ndim != 3:
        raise ValueError(f"{where}: W and R must be 3-D (num_directions, {G}*hidden_size, .), "
                         f"got shapes {W.shape} and {Rm.shape}")
    if "hidden_size" not in a:
        raise ValueError(f"{where} has no hidden_size attribute (ONNX Runtime requires it too); "
                         f"set hidden_size={int(Rm.shape[2])}, the last axis of R")
    H = attr("hidden_size", int, 0)
    I = int(W.shape[2])
    if H < 1 or I < 1:
        raise ValueError(f"{where}: hidden_size and input_size must be >= 1, got {H} and {I}")
    shape(W, "W", (D, G * H, I), f"(num_directions, {G}*hidden_size, input_size)")
    shape(Rm, "R", (D, G * H, H), f"(num_directions, {G}*hidden_size, hidden_size)")
    Bm = const(3, "B")
    if Bm is not None:
        shape(Bm, "B", (D, 2 * G * H), f"(num_directions, {2 * G}*hidden_size)")
    for what, arr in (("R", Rm), ("B", Bm)):
        if arr is not None and arr.dtype != W.dtype:
            raise ValueError(f"{where}: {what} is {arr.dtype} and W {W.dtype}; the operator's "
                             "inputs share one type T")
    if ins[4] and ins[4] in consts:
        raise ValueError(f"{where}: sequence_lens is a constant of the graph; fusedrnn takes the "
                         "lengths as the lengths argument of forward (make it a graph input)")
    for i, what in ((5, "initial_h"), (6, "initial_c")):
        if i == 6 and op != "LSTM":
            break
        value = const(i, what) if ins[i] and ins[i] in consts else None
        if value is not None and value.dtype != W.dtype:
            raise ValueError(f"{where}: {what} is {value.dtype} and W {W.dtype}; the operator's "
                             "inputs share one type T")
        if value is not None and np.any(value != 0):
            raise ValueError(f"{where}: {what} is a constant non-zero state of the graph; "
                             "fusedrnn takes the initial state as the state argument of forward "
                             "(make it a graph input)")
    dt = dtype if dtype is not None else (W.dtype if W.dtype in (np.float32, np.float64)
                                          else np.dtype(np.float32))

    def _clip() -> Optional[float]:
        """The clip attribute (None when absent), exact when fusedrnn's metadata holds the
        value whose float32 rounding it is."""
        clip = float(attr("clip", float, 0.0)) if "clip" in a else None
        if clip is not None and exact_clip is not None:
            try:
                if np.float32(float(exact_clip)) == np.float32(clip):
                    clip = float(exact_clip)
            except ValueError:
                pass
        return clip

    try:
        if op == "LSTM":
            P = const(7, "P")
            if P is not None:
                shape(P, "P", (D, 3 * H), "(num_directions, 3*hidden_size)")
                if P.dtype != W.dtype:
                    raise ValueError(f"{where}: P is {P.dtype} and W {W.dtype}; the operator's "
                                     "inputs share one type T")
            input_forget = attr("input_forget", int, 0)
            if input_forget not in (0, 1):
                raise ValueError(f"{where}: input_forget must be 0 or 1, got {input_forget}")
            clip = _clip()
            layer: Any = LSTM(I, H, peepholes="diagonal" if P is not None else None,
                              coupled_gates=bool(input_forget), accumulation_clip=clip,
                              bidirectional=D == 2, reverse=reverse, batch_first=batch_first,
                              dtype=dt, seed=0, **warp_options)
            for d in range(D):
                s = suffix(0, d)
                layer.params["W_x" + s][...] = _reorder(W[d], H, _INV_GATE_ORDER)
                layer.params["W_v" + s][...] = _reorder(Rm[d], H, _INV_GATE_ORDER)
                b = np.zeros(4 * H) if Bm is None else Bm[d, :4 * H] + Bm[d, 4 * H:]
                layer.params["b" + s][...] = _reorder(b, H, _INV_GATE_ORDER)
                if P is not None:
                    layer.params["w_s" + s][...] = P[d].reshape(3, H)[list(_INV_PEEPHOLE_ORDER)]
        elif op == "GRU":
            layer = _gru_layer(where, attr("linear_before_reset", int, 0), W, Rm, Bm, D,
                               reverse, batch_first, dt, accumulation_clip=_clip(),
                               **warp_options)
        else:
            layer = RNN(I, H, bidirectional=D == 2, reverse=reverse, batch_first=batch_first,
                        dtype=dt, seed=0, accumulation_clip=_clip(), **warp_options)
            for d in range(D):
                s = suffix(0, d)
                layer.params["W_x" + s][...] = W[d]
                layer.params["W_r" + s][...] = Rm[d]
                layer.params["theta_s" + s][...] = 0 if Bm is None else Bm[d, :H] + Bm[d, H:]
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: {exc}") from None
    return layer


def _gru_layer(where: str, lbr: int, W: np.ndarray, Rm: np.ndarray,
               Bm: Optional[np.ndarray], D: int, reverse: bool, batch_first: bool,
               dt: Any, **options: Any) -> GRU:
    """A one-layer fr.GRU from a GRU node's weights: gates from ONNX's (z, r, h);
    B = [W_b; R_b]: b = W_b + R_b in the z, r rows; the h rows give b_n = W_bh and
    b_hn = R_bh with linear_before_reset, else b_n = W_bh + R_bh. options: the
    clip and the warping functions."""
    if lbr not in (0, 1):
        raise ValueError(f"{where}: linear_before_reset must be 0 or 1, got {lbr}")
    I, H = int(W.shape[2]), int(Rm.shape[2])
    layer = GRU(I, H, linear_before_reset=bool(lbr), bidirectional=D == 2, reverse=reverse,
                batch_first=batch_first, dtype=dt, seed=0, **options)
    for d in range(D):
        s = suffix(0, d)
        layer.params["W_x" + s][...] = _reorder(W[d], H, ONNX_GRU_GATE_ORDER)
        layer.params["W_h" + s][...] = _reorder(Rm[d], H, ONNX_GRU_GATE_ORDER)
        wb, rb = (np.zeros(3 * H), np.zeros(3 * H)) if Bm is None else (Bm[d, :3 * H],
                                                                         Bm[d, 3 * H:])
        rb_inside = rb[2 * H:] if lbr else np.zeros(H)  # R_bh inside r's product
        b = wb + np.concatenate([rb[:2 * H], np.zeros(H) if lbr else rb[2 * H:]])
        layer.params["b" + s][...] = _reorder(b, H, ONNX_GRU_GATE_ORDER)
        if lbr:
            layer.params["b_hn" + s][...] = rb_inside
    return layer


def _recurrent_nodes(graph: Any) -> List[Any]:
    return [n for n in graph.node if (n.op_type in _GATES and n.domain in ("", "ai.onnx"))
            or (n.op_type == _QO.OP and n.domain == _QO.MS_DOMAIN)]


def _cell_nodes(graph: Any) -> List[Any]:
    nodes = _recurrent_nodes(graph)
    if not nodes:
        scan = any(n.op_type == "Scan" for n in graph.node)
        raise ValueError("the ONNX model has no LSTM, GRU or RNN node" + (
            " (a Scan graph, as export(..., unsupported='scan') writes, is not read back)"
            if scan else ""))
    return nodes


# the weight inputs of each node type (index in node.input: name)
_WEIGHT_INPUTS = {"LSTM": {1: "W", 2: "R", 3: "B", 7: "P"}, "RNN": {1: "W", 2: "R", 3: "B"},
                  "GRU": {1: "W", 2: "R", 3: "B"}, _QO.OP: {3: "B", 7: "P"}}


def _weight_inputs(graph: Any, inputs: Any, consts: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The values given for weight inputs (W, R, B, P) that are graph inputs."""
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs must be a dict of graph input name -> array, got "
                        f"{type(inputs).__name__}")
    weights = {}
    for node in _recurrent_nodes(graph):
        for i, what in _WEIGHT_INPUTS[node.op_type].items():
            if i < len(node.input) and node.input[i]:
                weights[node.input[i]] = what
    graph_inputs = {v.name for v in graph.input}
    out = {}
    for name, value in inputs.items():
        if name in consts:
            raise ValueError(f"inputs[{name!r}]: the model already holds {name!r} as an "
                             "initializer or Constant")
        if name not in graph_inputs or name not in weights:
            raise ValueError(f"inputs[{name!r}]: not a W, R, B or P graph input of an LSTM/GRU/RNN "
                             f"node (weight graph inputs: {sorted(set(weights) & graph_inputs)}); "
                             "X, sequence_lens and initial states go to forward()")
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise TypeError(f"inputs[{name!r}] ({weights[name]}) must be a float array, got "
                            f"dtype {arr.dtype}")
        out[name] = arr
    return out


def _graph_constants(model: Any, inputs: Optional[Dict[str, Any]]) -> Tuple[Any, Dict[str, Any]]:
    """The graph and its constants: initializers and Constant values (TensorProto),
    and the arrays given with `inputs` for weight graph inputs."""
    graph = model.graph
    consts = _constants(graph)
    if inputs:
        consts.update(_weight_inputs(graph, inputs, consts))
    return graph, consts


def _dtype_arg(dtype: Any) -> Optional[np.dtype]:
    return None if dtype is None else V.as_dtype(dtype)


def load_nodes(path: Any, dtype: Any = None, inputs: Optional[Dict[str, Any]] = None) -> List[Any]:
    """One single-layer fusedrnn.LSTM / GRU / RNN per LSTM / GRU / RNN node of the ONNX
    model at `path` (or an onnx.ModelProto), in graph order. inputs: values of
    weight inputs (W, R, B, P) that the graph takes as graph inputs (see `load`)."""
    dt = _dtype_arg(dtype)
    graph, consts = _graph_constants(_read_model(path), inputs)
    return [_node_layer(n, consts, dt) for n in _cell_nodes(graph)]


def _same_cell(a: Any, b: Any) -> bool:
    if (type(a) is not type(b) or a.hidden_size != b.hidden_size
            or (a.bidirectional, a.reverse, a.batch_first) != (b.bidirectional, b.reverse,
                                                                b.batch_first)):
        return False
    if isinstance(a, LSTM):
        return (a.peepholes, a.coupled_gates, a.accumulation_clip, a.gate_activation,
                a.cell_activation, a.output_activation) == (
            b.peepholes, b.coupled_gates, b.accumulation_clip, b.gate_activation,
            b.cell_activation, b.output_activation)
    if isinstance(a, GRU):
        return (a.linear_before_reset, a.accumulation_clip, a.gate_activation,
                a.cell_activation) == (b.linear_before_reset, b.accumulation_clip,
                                       b.gate_activation, b.cell_activation)
    return (a.activation, a.accumulation_clip) == (b.activation, b.accumulation_clip)


def _is_zero_fill(node: Any, consts: Dict[str, Any]) -> bool:
    """An Expand of a zero constant or a ConstantOfShape of zero (torch.onnx.export's
    default initial state)."""
    where = _G.node_name(node)
    if node.op_type == "ConstantOfShape":
        vals = [_G.tensor_array(a.t, f"{where}: attribute value") for a in node.attribute
                if a.name == "value"]
        return not vals or not np.any(vals[0])
    if node.op_type == "Expand" and node.input and node.input[0] in consts:
        arr = _G.tensor_array(consts[node.input[0]], f"{where}: input {node.input[0]!r}")
        return arr.dtype.kind in "biuf" and not np.any(arr)
    return False


def _check_initial_states(graph: Any, nodes: List[Any], consts: Dict[str, Any],
                          D: int) -> None:
    """Each node's initial_h / initial_c is absent, zero (a constant, or the zero fill
    torch.onnx.export writes), or layer l's rows [l*D, (l+1)*D) of one graph input
    (the whole input for one layer) -- the state argument of forward. Anything
    else would be dropped by `load`: ValueError."""
    producer = {out: n for n in graph.node for out in n.output if out}
    graph_inputs = {i.name for i in graph.input}
    sources: Dict[str, set] = {}
    for l, node in enumerate(nodes):
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        slots = (5, 6) if node.op_type in ("LSTM", _QO.OP) else (5,)
        for i, what in zip(slots, ("initial_h", "initial_c")):
            name = node.input[i] if i < len(node.input) else ""
            if not name or name in consts:  # zero or absent (a non-zero constant is refused)
                continue
            where = f"{node.op_type} node {l} ({node.name or 'unnamed'}): {what}"
            made_by = producer.get(name)
            while made_by is not None and made_by.op_type in ("Identity", "Cast"):
                if made_by.op_type == "Cast" and not _G.cast_keeps_values(made_by):
                    raise ValueError(f"{where} passes {_G.node_name(made_by)}, which casts to a "
                                     "type other than float or double")
                name = made_by.input[0]
                made_by = producer.get(name)
            if (made_by is not None and layout == 1 and made_by.op_type == "Transpose"
                    and [a.ints for a in made_by.attribute if a.name == "perm"] == [[1, 0, 2]]):
                name = made_by.input[0]  # (D, B, H) -> the node's (B, D, H)
                made_by = producer.get(name)
            if made_by is None and name in graph_inputs:
                if len(nodes) > 1:
                    raise ValueError(f"{where} is the whole graph input {name!r}; in a stack "
                                     "each layer must take its rows of one state input (Slice)")
                sources.setdefault(what, set()).add(name)
                continue
            if made_by is not None and _is_zero_fill(made_by, consts):
                continue
            if made_by is not None and made_by.op_type == "Slice" and made_by.input[0] in graph_inputs:
                ins = list(made_by.input) + [""] * 5
                starts, ends = _G.ints(consts, ins[1]), _G.ints(consts, ins[2])
                axes = _G.ints(consts, ins[3]) if ins[3] else [0]
                steps = _G.ints(consts, ins[4]) if ins[4] else [1]
                if (starts, ends, axes, steps) == ([l * D], [(l + 1) * D], [0], [1]):
                    sources.setdefault(what, set()).add(ins[0])
                    continue
                raise ValueError(f"{where} is a Slice of {ins[0]!r} with starts={starts}, "
                                 f"ends={ends}, axes={axes}, steps={steps}; layer {l} takes rows "
                                 f"[{l * D}, {(l + 1) * D}) of the state (axis 0)")
            kind = f"a {made_by.op_type} node" if made_by is not None else f"{name!r}"
            raise ValueError(f"{where} comes from {kind}: fusedrnn takes the initial state as "
                             "the state argument of forward; make it a graph input (sliced per "
                             "layer), a zero constant, or leave it out")
    for what, names in sources.items():
        if len(names) > 1:
            raise ValueError(f"the layers' {what} come from different graph inputs "
                             f"{sorted(names)}; fusedrnn takes one state for the whole stack")


def _input_swapped(graph: Any, node: Any) -> bool:
    """Whether the graph input reaches the first node's X through a swap of its
    first two axes (Transpose perm=[1, 0, 2]: torch.onnx.export's batch_first,
    fusedrnn's own export); other shape changes in front are refused."""
    producer = {out: n for n in graph.node for out in n.output if out}
    swapped = False
    made_by = producer.get(node.input[0])
    while made_by is not None:
        if made_by.op_type == "Transpose":
            perm = [list(a.ints) for a in made_by.attribute if a.name == "perm"]
            if perm != [[1, 0, 2]]:
                raise ValueError(f"the first {node.op_type} node's input X passes a Transpose "
                                 f"with perm={perm[0] if perm else None}; only the swap of the "
                                 "time and batch axes (perm=[1, 0, 2]) has a fusedrnn equivalent "
                                 "(batch_first)")
            swapped = not swapped
        elif made_by.op_type == "Cast" and not _G.cast_keeps_values(made_by):
            raise ValueError(f"the first {node.op_type} node's input X passes "
                             f"{_G.node_name(made_by)}, which casts to a type other than float "
                             "or double (it would change the values)")
        elif made_by.op_type not in ("Identity", "Cast"):
            raise ValueError(f"the first {node.op_type} node's input X passes a "
                             f"{made_by.op_type} node, which changes its shape: fusedrnn.onnx.load "
                             "would drop it (only Transpose perm=[1, 0, 2], Identity and Cast "
                             "may stand in front)")
        made_by = producer.get(made_by.input[0])
    return swapped


def load(path: Any, dtype: Any = None, batch_first: Optional[bool] = None,
         inputs: Optional[Dict[str, Any]] = None) -> Any:
    """The fusedrnn network of an ONNX model's LSTM / GRU / RNN nodes (inverse of `export`).

    The nodes must form one stack: the first reads a graph input, each next one
    the previous one's output rearranged into the layer input (T, B, D*H) by
    data-moving operators (replayed on indices to check), all of the same kind,
    hidden size, directions and options; every graph output must be the last
    node's Y or final states, moved or concatenated; every node needs its
    hidden_size and float weights of one type (see fusedrnn.interop._onnx_graph). Parameters are mapped back
    exactly (gates reordered, B = [Wb; Rb] summed to b, P to w_s). For other
    graphs use `load_nodes`. path: a file path (external data is read only from
    the model's folder) or an onnx.ModelProto. dtype: default the weights'.
    direction="reverse" nodes load as reverse=True.
    batch_first: default as the graph's X is: (B, T, I) for layout=1 (batch-major)
    nodes, or for layout=0 nodes behind a Transpose perm=[1, 0, 2] (what fusedrnn
    and torch.onnx.export write for batch_first); else (T, B, I).
    Initial states: each node's initial_h / initial_c must be absent, zero (a
    constant, or the zero fill torch.onnx.export writes), or the node's layer rows
    of one graph input; they are then the state argument of forward.
    inputs: the values of weight inputs (W, R, B, P) that the graph takes as graph
    inputs rather than initializers, e.g. inputs={"W": W, "R": R} (ONNX's own node
    tests are written so); other graph inputs (X, sequence_lens, initial_h,
    initial_c) are refused here: pass them to forward(). A malformed model raises
    ValueError naming the node and what was expected.
    ONNX Runtime's com.microsoft.DynamicQuantizeLSTM nodes (fusedrnn's int8 export, or
    onnxruntime.quantization.quantize_dynamic's) load as an int8 fusedrnn.QuantizedLSTM
    holding the file's weights: W and R int8 in [-127, 127] with zero points 0 and
    per-column or per-direction scales (uint8 or asymmetric weights are refused)."""
    dt = _dtype_arg(dtype)
    if batch_first is not None and not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool or None, got {batch_first!r}")
    model = _read_model(path)
    meta = {p.key: p.value for p in model.metadata_props}
    graph, consts = _graph_constants(model, inputs)
    nodes = _cell_nodes(graph)
    cells = [_node_layer(n, consts, dt, meta.get("fusedrnn.accumulation_clip")) for n in nodes]
    first = cells[0]

    def uniform(sizes_too: bool) -> None:
        for k, c in enumerate(cells[1:], 1):
            if not _same_cell(first, c) or (
                    sizes_too and c.input_size != first.num_directions * first.output_size):
                raise ValueError(f"the recurrent nodes do not form one uniform stack (node {k} "
                                 f"differs: {c!r} after {first!r}); use fusedrnn.onnx.load_nodes")

    uniform(False)  # the same cell everywhere, then the wiring, then the sizes it implies
    x_name = _G.first_input(graph, nodes[0])
    x_batch_major = first.batch_first != _input_swapped(graph, nodes[0])
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 14)
    _G.check_chain(graph, nodes, cells, consts, opset,
                   _G.replay_sizes(graph, x_name, x_batch_major))
    uniform(True)
    _G.check_outputs(graph, nodes)
    _G.check_lengths(graph, nodes)
    _G.check_input_type(graph, nodes[0], consts, nodes[0].input[0], "input X")
    _check_initial_states(graph, nodes, consts, first.num_directions)
    if batch_first is None:  # X batch-major: layout=1 nodes, or a (B, T, I) input transposed
        batch_first = x_batch_major
    L = len(cells)
    if isinstance(first, LSTM):
        net: Any = LSTM(first.input_size, first.hidden_size,
                        peepholes=None if first.peepholes == "none" else first.peepholes,
                        coupled_gates=first.coupled_gates,
                        accumulation_clip=first.accumulation_clip, num_layers=L,
                        bidirectional=first.bidirectional, reverse=first.reverse,
                        dtype=first.dtype, batch_first=bool(batch_first), seed=0,
                        gate_activation=first.gate_activation,
                        cell_activation=first.cell_activation,
                        output_activation=first.output_activation)
    elif isinstance(first, GRU):
        net = GRU(first.input_size, first.hidden_size,
                  linear_before_reset=first.linear_before_reset, num_layers=L,
                  bidirectional=first.bidirectional, reverse=first.reverse, dtype=first.dtype,
                  batch_first=bool(batch_first), seed=0, gate_activation=first.gate_activation,
                  cell_activation=first.cell_activation,
                  accumulation_clip=first.accumulation_clip)
    else:
        net = RNN(first.input_size, first.hidden_size, num_layers=L,
                  bidirectional=first.bidirectional, reverse=first.reverse, dtype=first.dtype,
                  batch_first=bool(batch_first), seed=0, activation=first.activation,
                  accumulation_clip=first.accumulation_clip)
    if isinstance(first, QuantizedLSTM):
        return _QO.stack(net, cells)
    for l, c in enumerate(cells):
        for name, arr in c.params.items():
            base, rev = (name[:-len("_reverse")], 1) if name.endswith("_reverse") else (name, 0)
            net.params[base + suffix(l, rev)][...] = arr
    return net
