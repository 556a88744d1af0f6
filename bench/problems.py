"""The problems the competitors solve: weights, data and models of a case (fusedrnn, torch,
ONNX), the correctness check that runs before anything is timed, and fusedrnn's memory per call."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from cases import SEED, Case


def gates_to_onnx(m: np.ndarray, H: int) -> np.ndarray:
    """ONNX gate order (i, o, f, c) from ours (cu, cs, du, cr) = (i, f, g, o)."""
    return np.concatenate([m[k * H:(k + 1) * H] for k in (0, 3, 1, 2)])


def onnx_lstm_model(params: Mapping[str, np.ndarray], T: int, B: int, I: int, H: int,
                    peepholes: bool, state_inputs: bool = False) -> bytes:
    """One ONNX LSTM node (opset 14), weights as initializers, X the only input, Y the output;
    with `state_inputs` also the inputs initial_h and initial_c (1, B, H) and the outputs Y_h
    and Y_c (a model to call frame by frame with its state)."""
    from onnx import TensorProto, helper, numpy_helper
    W = gates_to_onnx(params["W_x"], H)[None].astype(np.float32)
    R = gates_to_onnx(params["W_v"], H)[None].astype(np.float32)
    Bias = np.concatenate([gates_to_onnx(params["b"], H), np.zeros(4 * H)])[None].astype(np.float32)
    inits = {"W": W, "R": R, "B": Bias}
    names = ["X", "W", "R", "B"]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])]
    outputs = ["Y", "Y_h", "Y_c"] if state_inputs else ["Y"]
    names += ["", "initial_h", "initial_c"] if state_inputs else ["", "", ""]  # sequence_lens unset
    if state_inputs:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B, H])
                   for n in ("initial_h", "initial_c")]
    if peepholes:  # ONNX P is (i, o, f) = ours (cu, cr, cs)
        inits["P"] = params["w_s"][[0, 2, 1]].reshape(1, -1).astype(np.float32)
        names.append("P")
    while names[-1] == "":
        names.pop()
    node = helper.make_node("LSTM", names, outputs, hidden_size=H, direction="forward")
    graph = helper.make_graph(
        [node], "lstm", inputs,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model.SerializeToString()


def onnx_gru_model(params: Mapping[str, np.ndarray], T: int, B: int, I: int, H: int) -> bytes:
    """One ONNX GRU node (opset 14, linear_before_reset=1), weights as initializers, X the only
    input, Y the output. ONNX's gate order is (z, r, h), ours (r, z, n); its B is [Wb; Rb], and
    our b holds both biases of r and z, b_hn the recurrent bias of n."""
    from onnx import TensorProto, helper, numpy_helper

    def zrn(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m[k * H:(k + 1) * H] for k in (1, 0, 2)])

    rb = np.concatenate([np.zeros(2 * H), params["b_hn"]])
    inits = {"W": zrn(params["W_x"])[None].astype(np.float32),
             "R": zrn(params["W_h"])[None].astype(np.float32),
             "B": np.concatenate([zrn(params["b"]), rb])[None].astype(np.float32)}
    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y"], hidden_size=H,
                            direction="forward", linear_before_reset=1)
    graph = helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model.SerializeToString()


def onnx_model(case: Case, params: Mapping[str, np.ndarray]) -> bytes:
    """The case's ONNX model for ONNX Runtime: an LSTM or a GRU node."""
    if case.cell == "gru":
        return onnx_gru_model(params, case.T, case.B, case.I, case.H)
    return onnx_lstm_model(params, case.T, case.B, case.I, case.H, case.peepholes)


def ort_session(model: bytes, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def make_fr(case: Case, params: Optional[Mapping[str, np.ndarray]] = None):
    import fusedrnn as fr
    if case.cell == "gru":
        layer = fr.GRU(case.I, case.H, num_layers=case.layers, bidirectional=case.D == 2,
                       dtype=np.dtype(case.dtype), seed=SEED)
    else:
        layer = fr.LSTM(case.I, case.H, peepholes="diagonal" if case.peepholes else False,
                        proj_size=case.P, num_layers=case.layers, bidirectional=case.D == 2,
                        dtype=np.dtype(case.dtype), seed=SEED)
    for k, v in (params or {}).items():
        layer.params[k][...] = v
    return layer


def make_torch(case: Case, state: Optional[Mapping[str, np.ndarray]] = None):
    """torch.nn.LSTM for the case (plain for the peephole case: torch has none), or
    torch.nn.GRU."""
    import torch
    torch.manual_seed(SEED)
    if case.cell == "gru":
        m = torch.nn.GRU(case.I, case.H, num_layers=case.layers, bidirectional=case.D == 2,
                         dtype=getattr(torch, case.dtype))
    else:
        m = torch.nn.LSTM(case.I, case.H, num_layers=case.layers, bidirectional=case.D == 2,
                          proj_size=case.P, dtype=getattr(torch, case.dtype))
    if state is not None:
        m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return m


def make_data(case: Case) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    dt = np.dtype(case.dtype)
    return {"x": rng.standard_normal((case.T, case.B, case.I)).astype(dt),
            "dy": rng.standard_normal((case.T, case.B, case.D * case.R)).astype(dt)}


def maxabs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def rel(a, b) -> float:
    return maxabs(a, b) / max(float(np.max(np.abs(np.asarray(b, np.float64)))), 1e-30)


def check_case(case: Case, threads: int, tol: float) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """Build the problem (weights, x, dy), run the competitors once and compare.
    Returns (differences, arrays for the workers). Raises on a mismatch."""
    import torch
    from threadpoolctl import threadpool_limits
    import fusedrnn as fr
    try:
        from fusedrnn.core._layer import suffix
    except ImportError:  # an installation from before the package was grouped
        from fusedrnn._layer import suffix

    torch.set_num_threads(threads)
    data = make_data(case)
    x, dy = data["x"], data["dy"]
    module = make_torch(case)
    if case.peepholes:
        layer = make_fr(case)              # random peepholes (seeded); torch is plain
    else:
        layer = (fr.GRU if case.cell == "gru" else fr.LSTM).from_torch(module)
    diffs: Dict[str, float] = {}
    with threadpool_limits(threads, "blas"):
        y_inf, _ = layer.forward(x, training=False)
        layer.zero_grad()
        y_tr, _ = layer.forward(x)
        dx, _ = layer.backward(dy)
        diffs["fusedrnn y training vs inference (abs)"] = maxabs(y_tr, y_inf)
        if not case.peepholes:
            with torch.inference_mode():
                y_t = module(torch.from_numpy(x))[0].numpy()
            diffs["torch: y inference (abs)"] = maxabs(y_inf, y_t)
            xt = torch.from_numpy(x.copy()).requires_grad_()
            module.zero_grad(set_to_none=True)
            yt, _ = module(xt)
            yt.backward(torch.from_numpy(dy))
            diffs["torch: y training (abs)"] = maxabs(y_tr, yt.detach().numpy())
            diffs["torch: dx (rel)"] = rel(dx, xt.grad.numpy())
            # the GRU's b: bias_ih's gradient (b_r, b_z hold both biases, b_n the input's)
            names = {"W_x": "weight_ih", "W_v": "weight_hh", "W_h": "weight_hh", "b": "bias_ih",
                     "W_qv": "weight_hr"}
            worst = 0.0
            for l, d, _ in case.cells():
                for ours, theirs in names.items():
                    key = ours + suffix(l, d)
                    if key in layer.grads:
                        g = getattr(module, f"{theirs}_l{l}" + ("_reverse" if d else "")).grad
                        worst = max(worst, rel(layer.grads[key], g.numpy()))
            diffs["torch: weight gradients (max rel)"] = worst
        if case.runs("ort"):
            sess = ort_session(onnx_model(case, layer.params), threads)
            Y = sess.run(["Y"], {"X": x})[0]
            del sess
            diffs["ORT: y inference (abs)"] = maxabs(y_inf, Y[:, 0])
        if case.cell == "gru" and case.size == "small" and case.layers == 1 and case.D == 1:
            from fusedrnn import reference as ref
            params = {k: v.copy() for k, v in layer.params.items()}
            y_r, _, cache = ref.gru_forward(x, params, None)
            dx_r, _, g_r = ref.gru_backward(dy, None, cache)
            diffs["oracle: y (abs)"] = maxabs(y_tr, y_r)
            diffs["oracle: dx (rel)"] = rel(dx, dx_r)
            diffs["oracle: weight gradients (max rel)"] = max(rel(layer.grads[k], g_r[k]) for k in g_r)
        elif case.layers == 1 and case.D == 1 and not case.P and (case.runs("oracle") or case.peepholes):
            from fusedrnn import reference as ref
            params = {k: v.copy() for k, v in layer.params.items()}
            y_r, _, _, cache = ref.lstm_forward(x, params, None, None)
            dx_r, _, _, g_r = ref.lstm_backward(dy, None, None, cache)
            diffs["oracle: y (abs)"] = maxabs(y_tr, y_r)
            diffs["oracle: dx (rel)"] = rel(dx, dx_r)
            diffs["oracle: weight gradients (max rel)"] = max(rel(layer.grads[k], g_r[k]) for k in g_r)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise RuntimeError(f"{case.name}: competitors disagree (> {tol:g}): {bad}; not timing")
    arrays = dict(data)
    for k, v in module.state_dict().items():
        arrays["torch." + k] = v.detach().numpy()
    for k, v in layer.params.items():
        arrays["fusedrnn." + k] = v
    arrays["check.y"] = np.array(y_inf)  # each worker compares its own output with it
    return diffs, arrays


def params_of(problem: Mapping[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in problem.items() if k.startswith(p)}


# ============================================================================ memory
def _kernel_sizes(case: Case, T: int, I: int) -> Tuple[int, int, int, int]:
    """The kernel's element counts of one cell (acts, train, inference, backward workspace)."""
    from fusedrnn import _kernel
    if case.cell == "gru":
        return _kernel.GRUConfig(T, case.B, I, case.H, True).sizes()
    return _kernel.LSTMConfig(T, case.B, I, case.H, case.P, 1 if case.peepholes else 0).sizes()


def memory_report(case: Case) -> dict:
    """Training: what fusedrnn stores for the backward (the kernel's activation store plus the
    outputs y, every cell) against the minimum the equations need (per step and row: the
    gates 4H and the state H, plus v (H) with projection; the GRU's r, z, n and
    W_hn h[n-1] + b_hn (4H) and h (H)). Inference: the kernel workspace against B*H, and
    whether it grows with T."""
    it = np.dtype(case.dtype).itemsize
    acts = outs = minimum = work = work10 = 0
    for _, _, I in case.cells():
        a, _, wi, _ = _kernel_sizes(case, case.T, I)
        wi10 = _kernel_sizes(case, 100000, I)[2]
        acts += a
        outs += case.T * case.B * case.R
        minimum += case.T * case.B * (5 * case.H + (case.H if case.P else 0))
        work += wi
        work10 += wi10
    ncell = case.layers * case.D
    return {"train_acts_bytes": acts * it, "train_outputs_bytes": outs * it,
            "train_stored_bytes": (acts + outs) * it, "train_min_bytes": minimum * it,
            "train_ratio": (acts + outs) / minimum,
            "infer_workspace_bytes": work * it, "infer_BH_bytes": ncell * case.B * case.H * it,
            "infer_ratio_to_BH": work / (ncell * case.B * case.H),
            "infer_workspace_limit_bytes": work10 * it}
