"""What `fusedrnn.onnx.load` checks in the graph around the LSTM / RNN nodes.

A graph loads as a fusedrnn stack only when the stack computes what the graph
computes:
- the nodes form one chain: the first reads the graph input X, each next one the
  previous one's Y rearranged into (T, B, D*H) (or (B, T, D*H) for layout=1), the
  layer input of a stack. The operators in between may only move data (Identity,
  Transpose, Reshape, Squeeze, Unsqueeze, Flatten, Cast to float); what they do is
  replayed on an array of indices and must give exactly that layer input;
- every graph output is a rearrangement (those operators, and Concat) of the last
  node's Y or of the nodes' final states Y_h / Y_c: an intermediate layer's Y, or
  an output computed by another operator, is refused;
- every node reads the same sequence_lens graph input (int32), or none does;
- X has the weights' float type.
Each refusal is a ValueError naming the node or graph output and what was
unexpected.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

# operators that only move data (one data input: input 0)
MOVES = ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast")
# default T and B for the replay when the graph input's shape does not give them
_REPLAY_T, _REPLAY_B = 3, 2


def _onnx() -> Any:
    import onnx
    return onnx


def node_name(node: Any) -> str:
    """How messages name a node: its type and name."""
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node (unnamed)"


def nth(node: Any, k: int) -> str:
    """How messages name the k-th LSTM/RNN node: its place and its name if it has one."""
    return f"{node.op_type} node {k}" + (f" ({node.name!r})" if node.name else "")


def producers(graph: Any) -> Dict[str, Any]:
    return {out: n for n in graph.node for out in n.output if out}


def _attrs(node: Any) -> Dict[str, Any]:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def cast_keeps_values(node: Any) -> bool:
    """A Cast to float32 or float64 (the types fusedrnn computes in); another
    target type would round or truncate what passes."""
    TP = _onnx().TensorProto
    return _attrs(node).get("to") in (TP.FLOAT, TP.DOUBLE)


def tensor_array(value: Any, what: str) -> np.ndarray:
    """The values of a TensorProto (or an array already converted): ValueError naming
    `what` when its data do not fit its type or dims (a malformed file)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(_onnx().numpy_helper.to_array(value))
    except Exception as exc:  # protobuf / numpy / onnx: undefined type, short data, ...
        raise ValueError(f"{what} is a malformed tensor: {exc}") from None


def ints(consts: Dict[str, Any], name: str) -> Optional[List[int]]:
    """The values of a constant int tensor input, None if it is not a constant."""
    if not name or name not in consts:
        return None
    arr = tensor_array(consts[name], f"the constant {name!r}")
    return [int(v) for v in arr.reshape(-1)] if arr.dtype.kind in "iu" else None


def _replay(node: Any, arr: np.ndarray, consts: Dict[str, Any], opset: int) -> np.ndarray:
    """What the data-moving `node` does to `arr` (an array of indices)."""
    op, a = node.op_type, _attrs(node)
    ins = list(node.input) + ["", ""]
    if op == "Identity":
        return arr
    if op == "Cast":
        if not cast_keeps_values(node):
            raise ValueError(f"{node_name(node)} casts to ONNX type {a.get('to')}, which changes "
                             "the values it passes (only Cast to float or double keeps them)")
        return arr
    if op == "Transpose":
        perm = a.get("perm", list(range(arr.ndim))[::-1])
        return np.transpose(arr, perm)
    if op == "Flatten":
        axis = a.get("axis", 1)
        axis = axis + arr.ndim if axis < 0 else axis
        return arr.reshape(int(np.prod(arr.shape[:axis])), -1)
    if op == "Reshape":
        shape = ints(consts, ins[1])
        if shape is None:
            raise ValueError(f"{node_name(node)}: its shape input {ins[1]!r} is not a constant "
                             "int tensor, so what it does cannot be checked")
        if not a.get("allowzero", 0):
            shape = [arr.shape[i] if v == 0 and i < arr.ndim else v for i, v in enumerate(shape)]
        return arr.reshape(shape)
    # Squeeze / Unsqueeze: axes as input from opset 13, as attribute before
    axes = ints(consts, ins[1]) if opset >= 13 else a.get("axes")
    if opset >= 13 and ins[1] and axes is None:
        raise ValueError(f"{node_name(node)}: its axes input {ins[1]!r} is not a constant "
                         "int tensor, so what it does cannot be checked")
    if op == "Squeeze":
        if axes is None:
            return np.squeeze(arr)
        return np.squeeze(arr, axis=tuple(int(x) for x in axes))
    if axes is None:
        raise ValueError(f"{node_name(node)} has no axes")
    return np.expand_dims(arr, axis=tuple(int(x) for x in axes))


def path_back(producer: Dict[str, Any], name: str) -> Tuple[List[Any], str, Optional[Any]]:
    """Follow `name` back through data-moving operators: (the operators in graph
    order, the first tensor that is not moved data, the node that made it)."""
    path: List[Any] = []
    for _ in range(len(producer) + 1):
        made_by = producer.get(name)
        if made_by is None or made_by.op_type not in MOVES or not made_by.input:
            return path[::-1], name, made_by
        path.append(made_by)
        name = made_by.input[0]
    raise ValueError("the ONNX graph has a cycle")


def _layout(node: Any) -> int:
    return int(_attrs(node).get("layout", 0))


def replay_sizes(graph: Any, x_name: str, batch_major: bool) -> Tuple[int, int]:
    """T and B of the graph input X where its shape gives them, else small
    defaults (> 1, so that a wrong axis order shows in the replay)."""
    dims: List[int] = []
    for v in graph.input:
        if v.name == x_name and v.type.HasField("tensor_type"):
            dims = [d.dim_value if d.HasField("dim_value") else 0
                    for d in v.type.tensor_type.shape.dim]
    T, B = (dims[1], dims[0]) if batch_major and len(dims) == 3 else (
        (dims[0], dims[1]) if len(dims) == 3 else (0, 0))
    return (T if T > 0 else _REPLAY_T), (B if B > 0 else _REPLAY_B)


def first_input(graph: Any, node: Any) -> str:
    """The graph input that reaches the first node's X through data-moving
    operators (anything computed in front would be dropped: ValueError)."""
    path, name, made_by = path_back(producers(graph), node.input[0] if node.input else "")
    if made_by is not None or name not in {i.name for i in graph.input}:
        what = f"a {made_by.op_type} node" if made_by is not None else f"{name!r}"
        raise ValueError(f"the first {node.op_type} node's input X comes from {what}, "
                         "not from a graph input: fusedrnn.onnx.load would drop what "
                         "computes it; use fusedrnn.onnx.load_nodes for the cells alone")
    return name


def check_chain(graph: Any, nodes: List[Any], cells: List[Any], consts: Dict[str, Any],
                opset: int, sizes: Tuple[int, int]) -> None:
    """Each node after the first reads the previous one's Y as the layer input
    (T, B, D*H) ((B, T, D*H) for a layout=1 node) through data-moving operators
    only (replayed on indices); sizes: T and B for the replay."""
    producer = producers(graph)
    T, B = sizes
    for k, node in enumerate(nodes[1:], 1):
        path, name, made_by = path_back(producer, node.input[0] if node.input else "")
        prev = nodes[k - 1]
        if made_by is not prev or name != prev.output[0]:
            raise ValueError(f"{nth(node, k)} does not read "
                             f"the output Y of node {k - 1}: the nodes do not form one stack; "
                             "use fusedrnn.onnx.load_nodes")
        D, H = cells[k - 1].num_directions, cells[k - 1].hidden_size
        Y = np.arange(T * D * B * H).reshape(T, D, B, H)        # Y[t, d, b, j]
        want = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)     # x[t, b, d*H + j]
        arr = Y.transpose(2, 0, 1, 3) if _layout(prev) == 1 else Y  # (B, T, D, H)
        if _layout(node) == 1:
            want = want.transpose(1, 0, 2)
        ops = " -> ".join(n.op_type for n in path) or "nothing"
        try:
            for n in path:
                arr = _replay(n, arr, consts, opset)
        except ValueError as exc:  # numpy's for a shape the operator cannot take
            raise ValueError(f"{nth(node, k)} reads node "
                             f"{k - 1}'s Y through {ops}: {exc}") from None
        if arr.shape != want.shape or not np.array_equal(arr, want):
            raise ValueError(f"{nth(node, k)} reads node "
                             f"{k - 1}'s Y (T, D, B, H) through {ops}, which gives "
                             f"{'shape ' + str(arr.shape) if arr.shape != want.shape else 'its elements in another order'}"
                             f", not the layer input {want.shape} of a stack "
                             f"({'(B, T, D*H)' if _layout(node) == 1 else '(T, B, D*H)'}: both "
                             "directions' outputs side by side)")


def check_outputs(graph: Any, nodes: List[Any]) -> None:
    """Every graph output is the last node's Y or nodes' final states, moved
    (data-moving operators) or concatenated."""
    producer = producers(graph)
    index = {id(n): k for k, n in enumerate(nodes)}
    modeled = {n.output[i] for n in nodes for i in (1, 2) if i < len(n.output) and n.output[i]}
    if nodes[-1].output and nodes[-1].output[0]:
        modeled.add(nodes[-1].output[0])
    if not graph.output:
        raise ValueError("the ONNX graph has no outputs")
    for out in graph.output:
        todo, seen = [out.name], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in modeled:
                continue
            made_by = producer.get(name)
            if made_by is None:
                what = "a graph input" if any(i.name == name for i in graph.input) else (
                    "a constant" if any(t.name == name for t in graph.initializer) else
                    "a tensor no node computes")
                raise ValueError(f"graph output {out.name!r} passes on {what} ({name!r}), which "
                                 "the LSTM/RNN nodes do not compute: fusedrnn.onnx.load reads "
                                 "graphs whose outputs are the last node's Y and the final states")
            k = index.get(id(made_by))
            if k is not None:
                raise ValueError(f"graph output {out.name!r} is (made from) the output Y of "
                                 f"{nth(made_by, k)} of "
                                 f"{len(nodes)}: a fusedrnn stack returns the last layer's Y and "
                                 "the final states, not an inner layer's Y; use "
                                 "fusedrnn.onnx.load_nodes")
            if made_by.op_type == "Cast" and not cast_keeps_values(made_by):
                raise ValueError(f"graph output {out.name!r} passes {node_name(made_by)}, which "
                                 "casts to a type other than float or double")
            if made_by.op_type in MOVES:
                todo.append(made_by.input[0])
            elif made_by.op_type == "Concat":
                todo.extend(i for i in made_by.input if i)
            else:
                raise ValueError(f"graph output {out.name!r} is computed by {node_name(made_by)}, "
                                 "which fusedrnn.onnx.load does not read (it reads the LSTM/RNN "
                                 "nodes and the operators that only move their outputs); use "
                                 "fusedrnn.onnx.load_nodes for the cells alone")


def _declared_type(graph: Any, name: str) -> int:
    """The element type a graph input is declared with (0: not declared)."""
    for v in graph.input:
        if v.name == name and v.type.HasField("tensor_type"):
            return int(v.type.tensor_type.elem_type)
    return 0


def check_lengths(graph: Any, nodes: List[Any]) -> None:
    """Every node reads the same int32 sequence_lens graph input, or none does
    (the lengths argument of forward applies to every layer)."""
    producer = producers(graph)
    TP = _onnx().TensorProto
    graph_inputs = {i.name for i in graph.input}
    sources = []
    for k, node in enumerate(nodes):
        name = node.input[4] if len(node.input) > 4 else ""
        where = f"{nth(node, k)}: sequence_lens"
        cast = None
        made_by = producer.get(name) if name else None
        while made_by is not None and made_by.op_type in ("Identity", "Cast"):
            cast = made_by if made_by.op_type == "Cast" else cast
            name = made_by.input[0]
            made_by = producer.get(name)
        if made_by is not None or (name and name not in graph_inputs):
            raise ValueError(f"{where} comes from {node_name(made_by) if made_by else repr(name)}; "
                             "fusedrnn takes the lengths as the lengths argument of forward: "
                             "make sequence_lens a graph input")
        elem = _declared_type(graph, name) if name and cast is None else 0
        if elem not in (0, TP.INT32):
            raise ValueError(f"{where}: graph input {name!r} is declared with ONNX type "
                             f"{TP.DataType.Name(elem)}; the operator takes int32 lengths")
        sources.append(name)
    if len(set(sources)) > 1:
        names = ", ".join(f"node {k}: {s or 'none'}" for k, s in enumerate(sources))
        raise ValueError(f"the LSTM/RNN nodes read different sequence_lens ({names}); a fusedrnn "
                         "stack applies one lengths argument to every layer")


def weight_type(node: Any, consts: Dict[str, Any]) -> Optional[np.dtype]:
    """The node's float type T (its W's type; float32 for DynamicQuantizeLSTM)."""
    if node.op_type == "DynamicQuantizeLSTM":
        return np.dtype(np.float32)
    value = consts.get(node.input[1]) if len(node.input) > 1 else None
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.dtype
    try:
        return np.dtype(_onnx().helper.tensor_dtype_to_np_dtype(value.data_type))
    except Exception:  # an undefined or unknown element type
        raise ValueError(f"{node_name(node)}: the weight W ({node.input[1]!r}) has no valid "
                         f"element type (data_type {value.data_type})") from None


def check_input_type(graph: Any, node: Any, consts: Dict[str, Any], name: str,
                     what: str) -> None:
    """A graph input that a node reads as X / initial_h / initial_c is declared
    with the node's weight type (ONNX's type T), unless a Cast comes between."""
    want = weight_type(node, consts)
    if want is None:
        return
    onnx = _onnx()
    producer = producers(graph)
    made_by = producer.get(name)
    while made_by is not None and made_by.op_type in MOVES + ("Slice",):
        if made_by.op_type == "Cast":
            return  # the Cast's target type is what the node reads
        name = made_by.input[0]
        made_by = producer.get(name)
    elem = _declared_type(graph, name)
    if elem == 0:
        return
    try:
        have = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, TypeError, ValueError):
        have = None
    if have != want:
        label = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() \
            else str(elem)
        raise ValueError(f"{node_name(node)}: its {what} is the graph input {name!r} of ONNX type "
                         f"{label}, its weights are {want}: the operator's inputs share one "
                         "float type T")
