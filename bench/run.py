#!/usr/bin/env python3
"""fusedrnn benchmark suite (issue 4): fr.LSTM against torch.nn.LSTM, ONNX Runtime's LSTM
operator, the NumPy oracle and the GEMM floor, over sizes, variants and thread counts.

    python bench/run.py              # full matrix, ~12 min on a 2-core machine
    python bench/run.py --quick      # smoke subset, < 2 min
    python bench/run.py --cases medium --threads 2 --budget 3   # a slice of the matrix

Every competitor runs in its own worker process, one per (competitor, thread count), kept
alive for the whole run and fed one job per line (JSON in, JSON out), so the thread pools of
OpenBLAS, PyTorch and ONNX Runtime never share a process. Before a case is timed the parent
checks that the competitors compute the same thing (fusedrnn vs torch through from_torch,
vs ONNX Runtime, vs the NumPy oracle); it refuses to time on a mismatch.

Outputs (in --out, default bench/results/): <tag>.json (every measurement, every raw time,
machine info), <tag>.md (the tables), <tag>-ratios.png or ratios.png (ratio vs size). The
tag is "latest" for a full run (which also writes latest-full.json, the committed copy) and
"quick" for --quick. See bench/README.md for what every column means.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEED = 0
NOISY_IQR = 0.2     # a measurement is flagged noisy when its IQR exceeds 20% of its median
SETTLE_S = 0.15     # pause before each job: lets idle thread pools of the last worker sleep

# ============================================================================ the matrix
# name -> (T, B, I, H)
SIZES: Dict[str, Tuple[int, int, int, int]] = {
    "small": (100, 1, 64, 128),
    "medium": (100, 32, 256, 256),
    "large": (50, 64, 512, 1024),
    "sweep B=1": (100, 1, 256, 256),
    "sweep B=4": (100, 4, 256, 256),
    "sweep B=16": (100, 16, 256, 256),
    "sweep B=64": (100, 64, 256, 256),
}
VARIANTS = ("plain", "peepholes", "projection", "float64", "2x bidir")
VARIANT_LABEL = {
    "plain": "plain",
    "peepholes": "peepholes (torch: plain)",
    "projection": "projection P=H/2",
    "float64": "float64",
    "2x bidir": "2 layers x bidirectional",
}
FULL_MATRIX: List[Tuple[str, str]] = (
    [("small", v) for v in VARIANTS] + [("medium", v) for v in VARIANTS] + [("large", "plain")]
    + [(f"sweep B={b}", "plain") for b in (1, 4, 16, 64)])
QUICK_MATRIX: List[Tuple[str, str]] = [("small", v) for v in VARIANTS] + [("medium", "plain")]
MODES = {"inference": "inference", "train": "training step"}
COMPETITORS = ("fusedrnn", "torch", "ort", "oracle", "floor")
COMPETITOR_LABEL = {"fusedrnn": "fusedrnn", "torch": "torch", "ort": "ORT",
                    "oracle": "NumPy oracle", "floor": "GEMM floor"}


@dataclass(frozen=True)
class Case:
    size: str
    variant: str
    T: int
    B: int
    I: int
    H: int

    @property
    def name(self) -> str:
        return f"{self.size} / {self.variant}"

    @property
    def dtype(self) -> str:
        return "float64" if self.variant == "float64" else "float32"

    @property
    def peepholes(self) -> bool:
        return self.variant == "peepholes"

    @property
    def P(self) -> int:
        return self.H // 2 if self.variant == "projection" else 0

    @property
    def R(self) -> int:
        return self.P or self.H

    @property
    def layers(self) -> int:
        return 2 if self.variant == "2x bidir" else 1

    @property
    def D(self) -> int:
        return 2 if self.variant == "2x bidir" else 1

    def dims(self) -> str:
        return f"T={self.T} B={self.B} I={self.I} H={self.H}" + (f" P={self.P}" if self.P else "")

    def cells(self):
        """(layer, direction, input width) of every kernel cell."""
        for l in range(self.layers):
            for d in range(self.D):
                yield l, d, self.I if l == 0 else self.D * self.R

    def runs(self, competitor: str) -> bool:
        if competitor == "ort":    # ONNX Runtime: float32, one unidirectional layer, no projection
            return self.dtype == "float32" and self.layers == 1 and self.D == 1 and not self.P
        if competitor == "oracle":  # the NumPy oracle only at the smallest size, one layer
            return self.size == "small" and self.variant in ("plain", "peepholes")
        return True

    def modes(self, competitor: str) -> Tuple[str, ...]:
        return ("inference",) if competitor == "ort" else tuple(MODES)

    def job_key(self, competitor: str) -> str:
        """Identical computations share one measurement: torch has no peepholes (the
        peephole case times torch plain) and diagonal peepholes add no GEMM to the floor."""
        peep = self.peepholes and competitor not in ("torch", "floor")
        return (f"{competitor}|{self.T},{self.B},{self.I},{self.H},{self.P}|{self.dtype}|"
                f"L{self.layers}D{self.D}|peep={int(peep)}")


def make_case(size: str, variant: str) -> Case:
    return Case(size, variant, *SIZES[size])


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    size: str
    variant: str
    mode: str
    against: str   # competitor, or "floor"
    bound: float   # competitor/fr >= bound, or fr/floor <= bound

    def ok(self, ratio: float) -> bool:
        return ratio <= self.bound if self.against == "floor" else ratio >= self.bound

    def text(self) -> str:
        if self.against == "floor":
            return f"<= {self.bound:g}x floor"
        return f"{COMPETITOR_LABEL[self.against]} >= {self.bound:g}x"


TARGETS: List[Target] = (
    [Target("small", "plain", "train", "torch", 2.5),
     Target("small", "plain", "inference", "torch", 2.0),
     Target("small", "plain", "inference", "ort", 1.4),
     Target("medium", "plain", "inference", "torch", 1.0),
     Target("medium", "plain", "inference", "ort", 1.0),
     Target("medium", "plain", "inference", "floor", 1.1),
     Target("medium", "plain", "train", "torch", 1.15),
     Target("medium", "plain", "train", "floor", 1.2)]
    + [Target("large", "plain", m, "torch", 1.0) for m in MODES]
    + [Target("large", "plain", m, "floor", 1.15) for m in MODES]
    + [Target("medium", "float64", m, "torch", 1.4) for m in MODES]
    + [Target("medium", "projection", "train", "torch", 1.4),
       Target("medium", "projection", "inference", "torch", 2.0)]
    + [Target(f"sweep B={b}", "plain", m, "torch", 1.0) for b in (1, 4, 16, 64) for m in MODES]
    + [Target("small", "2x bidir", "train", "torch", 3.0)])


def targets_of(case: Case, mode: str) -> List[Target]:
    return [t for t in TARGETS if (t.size, t.variant, t.mode) == (case.size, case.variant, mode)]


# ============================================================================ timing
def measure(fn: Callable[[], object], budget: float, min_rep: int, max_rep: int) -> dict:
    """Per-call wall times of fn (seconds). Warm-up: one call, plus more while cheap (up to
    10% of the budget, at most 4). Repeats: budget / (fastest warm-up call), clamped to
    [min_rep, max_rep]. GC off while timing."""
    warm = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
        if sum(warm) > 0.1 * budget:
            break
    est = min(warm)
    n = int(min(max_rep, max(min_rep, budget / max(est, 1e-9))))
    times: List[float] = []
    gc_on = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_on:
            gc.enable()
    return {**time_stats(times), "warmup": len(warm), "warmup_times": warm}


def time_stats(times: List[float]) -> dict:
    """Median, min, quartiles and relative IQR of per-call times (and the times)."""
    s = sorted(times)
    q1, med, q3 = statistics.quantiles(s, n=4) if len(s) > 1 else (s[0],) * 3
    med = statistics.median(s)
    return {"median": med, "min": s[0], "q1": q1, "q3": q3, "iqr_rel": (q3 - q1) / med,
            "n": len(s), "times": times}


def merge_rounds(rounds: List[dict]) -> dict:
    """One job's results from several rounds: the per-call times pooled per mode (the
    median of all calls), each round's median kept as `round_medians`; the machine's
    background load averaged."""
    merged = dict(rounds[0])
    merged["timings"] = {}
    for mode in rounds[0]["timings"]:
        parts = [r["timings"][mode] for r in rounds]
        t = {**time_stats([t for p in parts for t in p["times"]]),
             "warmup": parts[0]["warmup"], "warmup_times": parts[0]["warmup_times"],
             "round_medians": [p["median"] for p in parts]}
        if "raw_median" in parts[0]:  # the floor: net of the Python cost, as each round was
            cost = sum(p["raw_median"] - p["median"] for p in parts) / len(parts)
            t["raw_median"] = t["median"]
            t["median"] = max(t["median"] - cost, 0.5 * t["median"])
        merged["timings"][mode] = t
    loads = [r["background_load"] for r in rounds if "background_load" in r]
    if loads:
        merged["background_load"] = sum(loads) / len(loads)
    merged["rounds"] = len(rounds)
    return merged


# ============================================================================ problems
def gates_to_onnx(m: np.ndarray, H: int) -> np.ndarray:
    """ONNX gate order (i, o, f, c) from ours (cu, cs, du, cr) = (i, f, g, o)."""
    return np.concatenate([m[k * H:(k + 1) * H] for k in (0, 3, 1, 2)])


def onnx_lstm_model(params: Mapping[str, np.ndarray], T: int, B: int, I: int, H: int,
                    peepholes: bool) -> bytes:
    """One ONNX LSTM node (opset 14), weights as initializers, X the only input, Y the output."""
    from onnx import TensorProto, helper, numpy_helper
    W = gates_to_onnx(params["W_x"], H)[None].astype(np.float32)
    R = gates_to_onnx(params["W_v"], H)[None].astype(np.float32)
    Bias = np.concatenate([gates_to_onnx(params["b"], H), np.zeros(4 * H)])[None].astype(np.float32)
    inits = {"W": W, "R": R, "B": Bias}
    names = ["X", "W", "R", "B"]
    if peepholes:  # ONNX P is (i, o, f) = ours (cu, cr, cs)
        inits["P"] = params["w_s"][[0, 2, 1]].reshape(1, -1).astype(np.float32)
        names += ["", "", "", "P"]  # sequence_lens, initial_h, initial_c left out
    node = helper.make_node("LSTM", names, ["Y"], hidden_size=H, direction="forward")
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model.SerializeToString()


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
    layer = fr.LSTM(case.I, case.H, peepholes="diagonal" if case.peepholes else False,
                    proj_size=case.P, num_layers=case.layers, bidirectional=case.D == 2,
                    dtype=np.dtype(case.dtype), seed=SEED)
    for k, v in (params or {}).items():
        layer.params[k][...] = v
    return layer


def make_torch(case: Case, state: Optional[Mapping[str, np.ndarray]] = None):
    """torch.nn.LSTM for the case (plain for the peephole case: torch has none)."""
    import torch
    torch.manual_seed(SEED)
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


def _maxabs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _rel(a, b) -> float:
    return _maxabs(a, b) / max(float(np.max(np.abs(np.asarray(b, np.float64)))), 1e-30)


def check_case(case: Case, threads: int, tol: float) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """Build the problem (weights, x, dy), run the competitors once and compare.
    Returns (differences, arrays for the workers). Raises on a mismatch."""
    import torch
    from threadpoolctl import threadpool_limits
    import fusedrnn as fr
    from fusedrnn._layer import suffix

    torch.set_num_threads(threads)
    data = make_data(case)
    x, dy = data["x"], data["dy"]
    module = make_torch(case)
    if case.peepholes:
        layer = make_fr(case)              # random peepholes (seeded); torch is plain
    else:
        layer = fr.LSTM.from_torch(module)
    diffs: Dict[str, float] = {}
    with threadpool_limits(threads, "blas"):
        y_inf, _ = layer.forward(x, training=False)
        layer.zero_grad()
        y_tr, _ = layer.forward(x)
        dx, _ = layer.backward(dy)
        diffs["fusedrnn y training vs inference (abs)"] = _maxabs(y_tr, y_inf)
        if not case.peepholes:
            with torch.inference_mode():
                y_t = module(torch.from_numpy(x))[0].numpy()
            diffs["torch: y inference (abs)"] = _maxabs(y_inf, y_t)
            xt = torch.from_numpy(x.copy()).requires_grad_()
            module.zero_grad(set_to_none=True)
            yt, _ = module(xt)
            yt.backward(torch.from_numpy(dy))
            diffs["torch: y training (abs)"] = _maxabs(y_tr, yt.detach().numpy())
            diffs["torch: dx (rel)"] = _rel(dx, xt.grad.numpy())
            names = {"W_x": "weight_ih", "W_v": "weight_hh", "b": "bias_ih", "W_qv": "weight_hr"}
            worst = 0.0
            for l, d, _ in case.cells():
                for ours, theirs in names.items():
                    key = ours + suffix(l, d)
                    if key in layer.grads:
                        g = getattr(module, f"{theirs}_l{l}" + ("_reverse" if d else "")).grad
                        worst = max(worst, _rel(layer.grads[key], g.numpy()))
            diffs["torch: weight gradients (max rel)"] = worst
        if case.runs("ort"):
            sess = ort_session(onnx_lstm_model(layer.params, case.T, case.B, case.I, case.H,
                                               case.peepholes), threads)
            Y = sess.run(["Y"], {"X": x})[0]
            del sess
            diffs["ORT: y inference (abs)"] = _maxabs(y_inf, Y[:, 0])
        if case.layers == 1 and case.D == 1 and not case.P and (case.runs("oracle") or case.peepholes):
            from fusedrnn import reference as ref
            params = {k: v.copy() for k, v in layer.params.items()}
            y_r, _, _, cache = ref.lstm_forward(x, params, None, None)
            dx_r, _, _, g_r = ref.lstm_backward(dy, None, None, cache)
            diffs["oracle: y (abs)"] = _maxabs(y_tr, y_r)
            diffs["oracle: dx (rel)"] = _rel(dx, dx_r)
            diffs["oracle: weight gradients (max rel)"] = max(_rel(layer.grads[k], g_r[k]) for k in g_r)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise RuntimeError(f"{case.name}: competitors disagree (> {tol:g}): {bad}; not timing")
    arrays = dict(data)
    for k, v in module.state_dict().items():
        arrays["torch." + k] = v.detach().numpy()
    for k, v in layer.params.items():
        arrays["fusedrnn." + k] = v
    return diffs, arrays


def params_of(problem: Mapping[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in problem.items() if k.startswith(p)}


# ============================================================================ memory
def memory_report(case: Case) -> dict:
    """Training: what fusedrnn stores for the backward (the kernel's activation store plus the
    outputs y, every cell) against the minimum the equations need (per step and row: the
    gates 4H and the state H, plus v (H) with projection). Inference: the kernel workspace
    against B*H, and whether it grows with T."""
    from fusedrnn import _kernel
    it = np.dtype(case.dtype).itemsize
    peep = 1 if case.peepholes else 0
    acts = outs = minimum = work = work10 = 0
    for _, _, I in case.cells():
        a, _, wi, _ = _kernel.LSTMConfig(case.T, case.B, I, case.H, case.P, peep).sizes()
        wi10 = _kernel.LSTMConfig(100000, case.B, I, case.H, case.P, peep).sizes()[2]
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


# ============================================================================ workers
# Each worker process serves one competitor at one thread count. It reads one JSON job per
# line on stdin ({"case": ..., "problem": path, "budget": s, "min_rep": n, "max_rep": n})
# and writes one JSON line back ({"version", "threads": {pool: [counts]}, "timings": {...}}).
def _blas_threads() -> List[int]:
    from threadpoolctl import threadpool_info
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})


def _fr_threads(threads: int) -> Dict[str, List[int]]:
    import fusedrnn as fr
    if hasattr(fr, "set_num_threads"):
        fr.set_num_threads(threads)
    out = {"blas": _blas_threads()}
    if hasattr(fr, "get_num_threads"):
        out["fusedrnn"] = [int(fr.get_num_threads())]
    return out


def _kernel_id() -> dict:
    import fusedrnn as fr
    from fusedrnn import _kernel
    with open(_kernel.__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    packed = None
    if hasattr(_kernel, "set_packed_max_rows"):  # read it (set returns the old value)
        packed = _kernel.set_packed_max_rows(0)
        _kernel.set_packed_max_rows(packed)
    return {"kernel_so": _kernel.__file__, "kernel_sha256": digest, "gemm": fr.get_gemm(),
            "has_set_num_threads": hasattr(fr, "set_num_threads"), "packed_max_rows": packed}


def work_fusedrnn(case: Case, threads: int, problem, timer) -> dict:
    from threadpoolctl import threadpool_limits
    import fusedrnn as fr
    layer = make_fr(case, params_of(problem, "fusedrnn"))
    x, dy = problem["x"], problem["dy"]

    def inference():
        layer.forward(x, training=False)

    def train():
        layer.zero_grad()
        layer.forward(x)
        layer.backward(dy)

    with threadpool_limits(threads, "blas"):
        th = _fr_threads(threads)
        timings = {"inference": timer(inference), "train": timer(train)}
    return {"version": fr.__version__, "threads": th, "timings": timings, **_kernel_id()}


def work_torch(case: Case, threads: int, problem, timer) -> dict:
    import torch
    torch.set_num_threads(threads)
    module = make_torch(case, params_of(problem, "torch"))
    x = torch.from_numpy(problem["x"])
    x_train = x.clone().requires_grad_()
    dy = torch.from_numpy(problem["dy"])

    def inference():
        with torch.inference_mode():
            module(x)

    def train():
        module.zero_grad(set_to_none=True)
        x_train.grad = None
        y, _ = module(x_train)
        y.backward(dy)

    timings = {"inference": timer(inference), "train": timer(train)}
    return {"version": torch.__version__, "threads": {"intra-op": [torch.get_num_threads()]},
            "timings": timings, "config": torch.__config__.parallel_info().splitlines()[:6]}


def work_ort(case: Case, threads: int, problem, timer) -> dict:
    import onnxruntime as ort
    model = onnx_lstm_model(params_of(problem, "fusedrnn"), case.T, case.B, case.I, case.H,
                            case.peepholes)
    sess = ort_session(model, threads)
    feed = {"X": problem["x"]}
    try:
        timings = {"inference": timer(lambda: sess.run(["Y"], feed))}
        n = sess.get_session_options().intra_op_num_threads
    finally:
        del sess  # destroys ORT's (spinning) thread pool before the next job
    return {"version": ort.__version__, "threads": {"intra-op": [n]}, "timings": timings}


def work_oracle(case: Case, threads: int, problem, timer) -> dict:
    from threadpoolctl import threadpool_limits
    from fusedrnn import reference as ref
    params = params_of(problem, "fusedrnn")
    x, dy = problem["x"], problem["dy"]

    def inference():
        ref.lstm_forward(x, params, None, None)

    def train():
        _, _, _, cache = ref.lstm_forward(x, params, None, None)
        ref.lstm_backward(dy, None, None, cache)

    with threadpool_limits(threads, "blas"):
        th = {"blas": _blas_threads()}
        timings = {"inference": timer(inference), "train": timer(train)}
    return {"version": np.__version__, "threads": th, "timings": timings}


def floor_calls(case: Case, train: bool):
    """The GEMMs of the case, alone, as (C, A, B, tA, tB, M, N, K, beta) on flat buffers:
    per cell the input GEMM (TB x I x 4H), T recurrent GEMMs (B x R x 4H), with projection
    T projection GEMMs (B x H x P); training adds T recurrent backward GEMMs (B x 4H x R)
    (with projection T more (B x P x H)), dW_x (4H x TB x I), dW_v (4H x TB x R), dx
    (TB x 4H x I) (and dW_qv (P x TB x H))."""
    dt = np.dtype(case.dtype)
    rng = np.random.default_rng(1)
    T, B, H, P, R = case.T, case.B, case.H, case.P, case.R
    G, TB = 4 * H, case.T * case.B

    def buf(n):
        return rng.standard_normal(n).astype(dt)

    calls = []
    for _, _, I in case.cells():
        X, W_x, W_v, gates = buf(TB * I), buf(G * I), buf(G * R), buf(TB * G)
        v_prev, W_qv, v_n, q_n = buf(B * R), buf(P * H), buf(B * H), buf(B * R)
        steps = [gates[n * B * G:(n + 1) * B * G] for n in range(T)]
        calls.append((gates, X, W_x, False, True, TB, G, I, 0.0))
        for n in range(T):
            calls.append((steps[n], v_prev, W_v, False, True, B, G, R, 1.0))
            if P:
                calls.append((q_n, v_n, W_qv, False, True, B, P, H, 0.0))
        if not train:
            continue
        dW_x, dW_v, dx, f_chi = buf(G * I), buf(G * R), buf(TB * I), buf(B * R)
        dW_qv, V_all, Y_all, dq, dv = buf(P * H), buf(TB * H), buf(TB * R), buf(B * R), buf(B * H)
        for n in range(T):
            if P:
                calls.append((dv, dq, W_qv, False, False, B, H, P, 0.0))
            calls.append((f_chi, steps[n], W_v, False, False, B, R, G, 0.0))
        calls.append((dW_x, gates, X, True, False, G, I, TB, 1.0))
        calls.append((dW_v, gates, Y_all, True, False, G, R, TB, 1.0))
        if P:
            calls.append((dW_qv, Y_all, V_all, True, False, P, H, TB, 1.0))
        calls.append((dx, gates, W_x, False, False, TB, I, G, 0.0))
    return calls


def work_floor(case: Case, threads: int, problem, timer) -> dict:
    from threadpoolctl import threadpool_limits
    from fusedrnn import _kernel
    gemm = _kernel.gemm
    plans = {m: floor_calls(case, m == "train") for m in MODES}

    def run(calls):
        def fn():
            for C, A, Bm, tA, tB, M, N, K, beta in calls:
                gemm(C, A, Bm, tA, tB, M, N, K, 1.0, beta)
        return fn

    with threadpool_limits(threads, "blas"):
        th = _fr_threads(threads)
        timings = {m: timer(run(c)) for m, c in plans.items()}
        # the Python cost of one gemm() call (1x1x1), to judge the floor of tiny cases
        one = np.ones(1, np.dtype(case.dtype))
        t = timer(lambda: [gemm(one, one, one, False, False, 1, 1, 1, 1.0, 0.0) for _ in range(100)])
    import fusedrnn as fr
    over = t["median"] / 100
    for m, c in plans.items():  # net of the Python cost of the calls (kept as raw_median)
        timings[m]["raw_median"] = timings[m]["median"]
        timings[m]["median"] = max(timings[m]["median"] - len(c) * over, 0.5 * timings[m]["median"])
    return {"version": fr.__version__, "threads": th, "timings": timings,
            "gemm_calls": {m: len(c) for m, c in plans.items()},
            "python_call_overhead_s": over, **_kernel_id()}


WORKERS = {"fusedrnn": work_fusedrnn, "torch": work_torch, "ort": work_ort,
           "oracle": work_oracle, "floor": work_floor}


def serve(competitor: str, threads: int) -> int:
    """Worker loop. The protocol goes through a private copy of fd 1; fd 1 itself is pointed at
    stderr so that nothing else (a library, a rebuild) can write into the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # import everything up front, so a job times only its calls
    import threadpoolctl  # noqa: F401
    import fusedrnn  # noqa: F401
    if competitor == "torch":
        import torch
        torch.set_num_threads(threads)
    elif competitor == "ort":
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    proto.write(json.dumps({"ready": competitor, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        job = json.loads(line)
        try:
            case = Case(**job["case"])
            with np.load(job["problem"]) as f:
                problem = {k: f[k] for k in f.files}

            def timer(fn):
                return measure(fn, job["budget"], job["min_rep"], job["max_rep"])

            result = {"ok": True, **WORKERS[competitor](case, threads, problem, timer)}
        except Exception:  # reported to the parent, which stops the run
            result = {"ok": False, "error": traceback.format_exc()}
        problem = None
        gc.collect()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        proto.write(json.dumps(result) + "\n")
    return 0


def cpu_busy_seconds() -> Optional[float]:
    """Busy CPU seconds of the whole machine since boot (all CPUs, from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


BUSY_BACKGROUND = 0.1  # a job is flagged when other processes used > 10% of the machine


def machine_busy(seconds: float = 1.0) -> Optional[float]:
    """The share of the machine busy over `seconds` (called while our workers are idle)."""
    b0, t0 = cpu_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    b1, t1 = cpu_busy_seconds(), time.perf_counter()
    if b0 is None or b1 is None:
        return None
    return (b1 - b0) / ((t1 - t0) * (os.cpu_count() or 1))


def wait_until_idle(max_wait: float, threshold: float = 0.15) -> Tuple[float, Optional[float]]:
    """Wait (up to max_wait s) until less than `threshold` of the machine is busy.
    Returns (seconds waited, the last busy share measured)."""
    t0 = time.time()
    busy = machine_busy()
    while busy is not None and busy > threshold and time.time() - t0 < max_wait:
        time.sleep(4)
        busy = machine_busy()
    return time.time() - t0, busy


class Worker:
    """A live worker process for one (competitor, threads)."""

    def __init__(self, competitor: str, threads: int, logdir: str):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        self.competitor, self.threads = competitor, threads
        self.log_path = os.path.join(logdir, f"{competitor}-{threads}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", competitor, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
            env=env, cwd=REPO)
        self.ready = False

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            with open(self.log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"worker {self.competitor}/{self.threads} died "
                               f"(exit {self.proc.poll()}):\n{tail}")
        return json.loads(line)

    def wait_ready(self) -> None:
        if not self.ready:
            self._read()
            self.ready = True

    def run(self, job: dict) -> dict:
        self.wait_ready()
        busy0, t0, me0 = cpu_busy_seconds(), time.perf_counter(), _own_cpu()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        result = self._read()
        busy1, t1, me1 = cpu_busy_seconds(), time.perf_counter(), _own_cpu()
        if busy0 is not None and busy1 is not None and "cpu_s" in result:
            # the share of the machine used by other processes while the job ran
            other = max(0.0, (busy1 - busy0) - result["cpu_s"] - (me1 - me0))
            result["background_load"] = other / ((t1 - t0) * (os.cpu_count() or 1))
        if not result.pop("ok"):
            raise RuntimeError(f"worker {self.competitor}/{self.threads} failed:\n{result['error']}")
        for pool, counts in result["threads"].items():
            if counts != [self.threads]:
                raise RuntimeError(f"worker {self.competitor} ran {pool} with {counts} threads, "
                                   f"not {self.threads}")
        return result

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
        self.log.close()


# ============================================================================ machine info
def machine_info() -> dict:
    import importlib.metadata as md
    sys.path.insert(0, HERE)
    from bench_lstm import cpu_model, git_revision
    info: Dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                            "platform": platform.platform(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU family", "Model", "CPU(s)", "Thread(s) per core",
                "Core(s) per socket", "L2 cache", "L3 cache", "Hypervisor vendor")
        info["lscpu"] = {k.strip(): v.strip() for k, v in
                         (ln.split(":", 1) for ln in lscpu.splitlines() if ":" in ln) if k.strip() in keep}
        flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "")
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    except OSError:
        pass
    versions = {}
    for pkg in ("numpy", "scipy", "torch", "onnxruntime", "onnx", "threadpoolctl", "fusedrnn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    git = {"describe": git_revision()}
    try:
        git["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                                       text=True, check=True).stdout.strip()
        st = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, check=True).stdout
        git["modified"] = [ln[3:] for ln in st.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        pass
    info["git"] = git
    return info


# ============================================================================ report
def fmt_ms(t: Optional[float]) -> str:
    if t is None:
        return "—"
    ms = 1e3 * t
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def build_rows(cases: List[Case], threads_list: List[int], results: Mapping[str, dict]) -> List[dict]:
    """One row per (case, threads, mode): medians, ratios, targets."""
    rows = []
    for case in cases:
        for threads in threads_list:
            for mode in MODES:
                med: Dict[str, Optional[float]] = {}
                for comp in COMPETITORS:
                    r = results.get(f"{case.job_key(comp)}|t{threads}")
                    t = r["timings"].get(mode) if r and case.runs(comp) else None
                    med[comp] = t["median"] if t else None
                if med["fusedrnn"] is None:
                    continue
                fr_t = med["fusedrnn"]
                ratios = {c: (med[c] / fr_t if med[c] else None) for c in ("torch", "ort", "oracle")}
                ratios["floor"] = fr_t / med["floor"] if med["floor"] else None
                checks = []
                for tg in targets_of(case, mode):
                    r = ratios.get(tg.against)
                    checks.append({"target": tg.text(), "ratio": r,
                                   "met": None if r is None else tg.ok(r)})
                fr_r = results.get(f"{case.job_key('fusedrnn')}|t{threads}") or {}
                packed = fr_r.get("packed_max_rows")
                rows.append({"packed": bool(packed) and case.B <= packed,
                             "case": case.name, "size": case.size, "variant": case.variant,
                             "dims": case.dims(), "dtype": case.dtype, "threads": threads,
                             "mode": mode, "median_s": med, "ratios": ratios, "targets": checks})
    return rows


def markdown(info: dict, settings: dict, rows: List[dict], memory: Mapping[str, dict],
             checks: Mapping[str, dict], results: Mapping[str, dict], elapsed: float) -> str:
    L: List[str] = []
    g = info["git"]
    L.append(f"# fusedrnn benchmark ({'quick' if settings['quick'] else 'full'} run)")
    L.append("")
    L.append(f"- CPU: {info['cpu']} ({info.get('lscpu', {}).get('CPU(s)', info['cpu_count'])} CPUs, "
             f"SIMD: {', '.join(info.get('simd', []))}), {info['platform']}")
    v = info["versions"]
    L.append(f"- fusedrnn {v['fusedrnn']} at git {g['describe']}"
             + (f" (modified: {', '.join(g['modified'])})" if g.get("modified") else "")
             + f"; GEMM backend `{settings.get('gemm', '?')}`"
             + f"; Python {info['python']}, NumPy {v['numpy']}, SciPy {v['scipy']}, torch {v['torch']}, "
             f"onnxruntime {v['onnxruntime']}")
    L.append(f"- {settings['date']}, {elapsed / 60:.1f} min; load average before: "
             f"{settings['load_before']:.2f}, after: {settings['load_after']:.2f}"
             + ("  **(machine busy when started: timings may be disturbed)**"
                if settings["load_before"] >= 0.5 else ""))
    if settings.get("pause_when_busy"):
        L.append(f"- before each case the run waited (up to {settings['pause_when_busy']:g} s) for "
                 f"other processes to use < 15% of the machine: {settings['waited_s']:.0f} s in all")
    rounds = settings.get("rounds", 1)
    L.append(f"- medians of adaptive repeats (budget {settings['budget']:g} s per measurement, "
             f"{settings['min_rep']}..{settings['max_rep']} calls"
             + (f", in {rounds} rounds: the competitors of a case take turns" if rounds > 1 else "")
             + "); threads: "
             f"{', '.join(map(str, settings['threads']))}")
    L.append("- ratios: `X/fr` = X's median / fusedrnn's (> 1: fusedrnn faster); "
             "`fr/floor` = fusedrnn's median / the GEMM floor's (1 = nothing but the GEMMs)")
    L.append("")
    head = ["case", "dims", "mode", "thr", "fusedrnn ms", "torch ms", "ORT ms", "oracle ms",
            "floor ms", "torch/fr", "ORT/fr", "oracle/fr", "fr/floor", "target", "met"]
    L.append("| " + " | ".join(head) + " |")
    L.append("| " + " | ".join(["---"] * 4 + ["---:"] * 9 + ["---", "---"]) + " |")
    met = total = 0

    def rt(x):
        return "—" if x is None else f"{x:.2f}"

    for r in rows:
        m = r["median_s"]
        ra = r["ratios"]
        tg = "; ".join(c["target"] for c in r["targets"]) or ""
        marks = []
        for c in r["targets"]:
            total += 1
            if c["met"]:
                met += 1
            marks.append("n/a" if c["met"] is None else "yes" if c["met"] else "**NO**")
        variant = VARIANT_LABEL[r["variant"]]
        L.append("| " + " | ".join([
            f"{r['size']} {variant}", r["dims"] + ("" if r["dtype"] == "float32" else " f64"),
            MODES[r["mode"]], str(r["threads"]),
            fmt_ms(m["fusedrnn"]), fmt_ms(m["torch"]), fmt_ms(m["ort"]), fmt_ms(m["oracle"]),
            fmt_ms(m["floor"]), rt(ra["torch"]), rt(ra["ort"]), rt(ra["oracle"]),
            rt(ra["floor"]) + (" (p)" if r.get("packed") and ra["floor"] is not None else ""),
            tg, " / ".join(marks)]) + " |")
    L.append("")
    L.append(f"**Targets met: {met} of {total}.**")
    if any(r.get("packed") for r in rows):
        L.append("")
        L.append("(p): at this batch size and thread count fusedrnn runs its per-step recurrent "
                 "GEMMs on its own packed-weight micro-kernel (`_kernel.set_packed_max_rows`), not "
                 "on the BLAS; the floor is the same GEMMs through the BLAS (`_kernel.gemm`), so "
                 "there it is not a lower bound and fr/floor < 1 is possible.")
    noisy = [f"{r['case']} {COMPETITOR_LABEL[r['competitor']]} {r['threads_requested']} thr "
             f"{MODES[mode]} ({100 * t['iqr_rel']:.0f}%)"
             for r in results.values() for mode, t in r["timings"].items()
             if t["n"] >= 10 and t["iqr_rel"] > NOISY_IQR]
    if noisy:
        L.append("")
        L.append(f"Noisy measurements (IQR > {100 * NOISY_IQR:.0f}% of the median): " + "; ".join(noisy))
    bg = [r["background_load"] for r in results.values() if "background_load" in r]
    busy = [f"{r['case']} {COMPETITOR_LABEL[r['competitor']]} {r['threads_requested']} thr "
            f"({100 * r['background_load']:.0f}%)"
            for r in results.values() if r.get("background_load", 0) > BUSY_BACKGROUND]
    if bg:
        L.append("")
        L.append(f"Other processes used on average {100 * statistics.mean(bg):.0f}% of the machine "
                 f"while the jobs ran (from /proc/stat minus the worker's own CPU time)"
                 + (f"; above {100 * BUSY_BACKGROUND:.0f}% during {len(busy)} of {len(bg)} jobs: "
                    + "; ".join(busy) if busy else "."))
    L.append("")
    L.append("## Memory (fusedrnn, per call, all cells)")
    L.append("")
    L.append("Training: bytes kept for the backward = the kernel's activation store + the outputs y; "
             "minimum = gates (4H) + state (H) per step and row (+ v (H) with projection). "
             "Inference: the kernel workspace, against B·H (summed over cells), and its size for "
             "T = 100000 (it is bounded in T: the input GEMM runs in chunks of about 256 rows).")
    L.append("")
    L.append("| case | dims | train: stored MB | train: minimum MB | stored / minimum | "
             "inference workspace KB | / (B·H) | at T = 100000, KB |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, mem in memory.items():
        case = next(c for c in settings["_cases"] if c.name == name)
        L.append(f"| {case.size} {VARIANT_LABEL[case.variant]} | {case.dims()} | "
                 f"{mem['train_stored_bytes'] / 2**20:.2f} | {mem['train_min_bytes'] / 2**20:.2f} | "
                 f"{mem['train_ratio']:.2f} | {mem['infer_workspace_bytes'] / 2**10:.1f} | "
                 f"{mem['infer_ratio_to_BH']:.1f} | "
                 f"{mem['infer_workspace_limit_bytes'] / 2**10:.1f} |")
    L.append("")
    L.append("## Correctness checks before timing (largest difference per case)")
    L.append("")
    for name, d in checks.items():
        L.append(f"- {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()))
    floor_over = sorted({r.get("python_call_overhead_s", 0) for k, r in results.items()
                         if k.startswith("floor|")})
    if floor_over:
        L.append("")
        L.append(f"The GEMM floor is timed through `fusedrnn._kernel.gemm` called from Python; the "
                 f"Python cost of a call ({1e6 * floor_over[0]:.1f}-{1e6 * floor_over[-1]:.1f} µs, "
                 "the median of a 1x1x1 call) times the number of calls is subtracted (the raw "
                 "time is `raw_median` in the JSON). It matters only for the smallest cases.")
    return "\n".join(L) + "\n"


TICKS = [2.0 ** k for k in range(-8, 10)] + [0.75, 1.1, 1.2, 1.5, 3, 6, 12]


def plot(rows: List[dict], path: str, threads_list: List[int]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["small", "sweep B=1", "sweep B=4", "sweep B=16", "medium", "sweep B=64", "large"]
    labels = {"small": "small\nB=1 H=128", "sweep B=1": "B=1", "sweep B=4": "B=4",
              "sweep B=16": "B=16", "medium": "medium\nB=32", "sweep B=64": "B=64",
              "large": "large\nB=64 H=1024"}
    plain = [r for r in rows if r["variant"] == "plain"]
    sizes = [s for s in order if any(r["size"] == s for r in plain)]
    if not sizes:
        return
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    styles = {1: "-", 2: "--"}
    for col, mode in enumerate(MODES):
        for row, kinds in enumerate([("torch", "ort", "oracle"), ("floor",)]):
            ax = axes[row][col]
            for comp, color in zip(kinds, ("C0", "C1", "C2") if row == 0 else ("C3",)):
                for th in threads_list:
                    xs, ys, packed = [], [], []
                    for i, s in enumerate(sizes):
                        r = next((r for r in plain if r["size"] == s and r["threads"] == th
                                  and r["mode"] == mode), None)
                        if r and r["ratios"][comp] is not None:
                            xs.append(i)
                            ys.append(r["ratios"][comp])
                            packed.append(bool(r.get("packed")))
                    if xs:
                        name = "fr / GEMM floor" if comp == "floor" else f"{COMPETITOR_LABEL[comp]} / fr"
                        ax.plot(xs, ys, styles.get(th, ":"), marker="o", color=color,
                                label=f"{name}, {th} thread{'s' if th > 1 else ''}")
                        if comp == "floor" and any(packed):  # hollow: fr on its packed kernel
                            ax.plot([x for x, p in zip(xs, packed) if p],
                                    [y for y, p in zip(ys, packed) if p], "o", color=color,
                                    markerfacecolor="white", zorder=3,
                                    label="hollow: fr's per-step GEMMs on its packed kernel"
                                    if th == threads_list[0] else None)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ticks = [t for t in TICKS if lo <= t <= hi]
            if len(ticks) > 8:
                ticks = [t for t in ticks if math.log2(t).is_integer()]
            ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}x"))
            ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if row == 1:  # the floor targets: medium 1.1 / 1.2, large 1.15
                ax.axhline({"inference": 1.1, "train": 1.2}[mode], color="C3", lw=0.8, ls=":",
                           label="medium target")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{MODES[mode]}: " + ("competitor / fusedrnn (> 1: fusedrnn faster)"
                                               if row == 0 else "fusedrnn / BLAS GEMM floor (1 = GEMMs only)"),
                         fontsize=10)
            ax.legend(fontsize=8)
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels([labels[s] for s in sizes], fontsize=8)
    fig.suptitle("fusedrnn LSTM, plain float32: ratio of medians vs size "
                 "(sweep: T=100 I=H=256; small T=100 I=64 H=128; large T=50 I=512 H=1024)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dump_json(blob: dict) -> str:
    """Indented JSON with every list of numbers on one line (raw times rounded to 0.1 µs)."""
    def rounded(o):
        if isinstance(o, dict):
            return {k: rounded(v) for k, v in o.items()}
        if isinstance(o, list):
            return [rounded(v) for v in o]
        if isinstance(o, float) and math.isfinite(o) and abs(o) < 1e3:
            return float(f"{o:.4g}") if abs(o) >= 1 else round(o, 7) if abs(o) > 1e-3 else float(f"{o:.4g}")
        return o
    text = json.dumps(rounded(blob), indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


# ============================================================================ main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke subset (< 2 min): small sizes and "
                   "medium plain, short time budgets")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--cases", metavar="REGEX", help="only cases whose 'size / variant' name matches")
    p.add_argument("--budget", type=float, help="seconds of timed calls per measurement "
                   "(default 3; --quick 0.1)")
    p.add_argument("--rounds", type=int, help="the competitors of a case take turns this many "
                   "times, each with budget / rounds (default 3; --quick 1)")
    p.add_argument("--min-rep", type=int, help="minimum timed calls (default 7; --quick 3)")
    p.add_argument("--max-rep", type=int, help="maximum timed calls (default 200; --quick 30)")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    p.add_argument("--tag", help="output name (default: latest, or quick with --quick)")
    p.add_argument("--tol", type=float, default=1e-4, help="agreement tolerance (default 1e-4)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="wait up to S seconds for the 1-min load average to drop below 0.5")
    p.add_argument("--pause-when-busy", type=float, metavar="S",
                   help="before each case, wait up to S seconds while other processes use more "
                        "than 15%% of the machine (default 60; --quick 0)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (a line per case)")
    p.add_argument("--replot", metavar="JSON", help="only redraw the plot of a run's JSON "
                   "(next to it: ratios.png for latest*.json, else <name>-ratios.png)")
    p.add_argument("--serve", choices=COMPETITORS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass
        self.total, self.done = total, 0

    def set(self, text: str) -> None:
        if self.bar:
            self.bar.set_description_str(text)

    def step(self) -> None:
        self.done += 1
        if self.bar:
            self.bar.update(1)

    def write(self, line: str) -> None:
        if self.bar:
            self.bar.write(line, file=sys.stderr)
        else:
            print(f"[{self.done}/{self.total}] {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.serve:
        return serve(args.serve, threads_list[0])
    if args.replot:
        with open(args.replot) as f:
            blob = json.load(f)
        stem = os.path.splitext(os.path.basename(args.replot))[0]
        png = os.path.join(os.path.dirname(os.path.abspath(args.replot)),
                           "ratios.png" if stem.startswith("latest") else f"{stem}-ratios.png")
        plot(blob["rows"], png, blob["settings"]["threads"])
        print(f"wrote {os.path.relpath(png)}", file=sys.stderr)
        return 0
    if any(t < 1 for t in threads_list):
        sys.exit("--threads: counts must be >= 1")

    quick = args.quick
    budget = args.budget if args.budget is not None else (0.1 if quick else 3.0)
    rounds = args.rounds or (1 if quick else 3)
    if rounds < 1:
        sys.exit("--rounds must be >= 1")
    min_rep = args.min_rep or (3 if quick else 7)
    max_rep = args.max_rep or (30 if quick else 200)
    tag = args.tag or ("quick" if quick else "latest")
    matrix = QUICK_MATRIX if quick else FULL_MATRIX
    cases = [make_case(s, v) for s, v in matrix]
    if args.cases:
        cases = [c for c in cases if re.search(args.cases, c.name)]
    if not cases:
        sys.exit("no case matches --cases")

    if args.wait_quiet > 0:
        t_end = time.time() + args.wait_quiet
        while os.getloadavg()[0] >= 0.5 and time.time() < t_end:
            time.sleep(10)
    load_before = os.getloadavg()[0]
    if load_before >= 0.5:
        print(f"warning: 1-min load average {load_before:.2f} >= 0.5 at the start: something else "
              "is using the CPU, timings may be disturbed", file=sys.stderr)

    t_start = time.time()
    import fusedrnn as fr  # triggers the editable rebuild, if any, before the workers start
    info = machine_info()
    os.makedirs(args.out, exist_ok=True)

    # the plan: unique jobs per (case, threads, competitor)
    plan: List[Tuple[Case, int, str, str]] = []
    seen = set()
    for case in cases:
        for th in threads_list:
            for comp in COMPETITORS:
                if case.runs(comp):
                    key = f"{case.job_key(comp)}|t{th}"
                    if key not in seen:
                        seen.add(key)
                        plan.append((case, th, comp, key))
    needed = sorted({(comp, th) for _, th, comp, _ in plan}, key=lambda p: (p[1], COMPETITORS.index(p[0])))
    logdir = tempfile.mkdtemp(prefix="fusedrnn_bench_")
    workers = {p: Worker(p[0], p[1], logdir) for p in needed}  # start all: they import in parallel
    progress = Progress(len(plan), not args.no_progress)
    results: Dict[str, dict] = {}
    checks: Dict[str, dict] = {}
    memory: Dict[str, dict] = {}
    loads: Dict[str, float] = {}
    waits: Dict[str, dict] = {}
    pause = args.pause_when_busy if args.pause_when_busy is not None else (0 if quick else 60)
    try:
        progress.set("starting workers")
        for w in workers.values():
            w.wait_ready()
        for case in cases:
            if pause > 0:
                progress.set(f"{case.name}: waiting for a quiet machine")
                waited, busy = wait_until_idle(pause)
                waits[case.name] = {"waited_s": waited, "busy_share": busy}
            progress.set(f"{case.name}: checking")
            diffs, arrays = check_case(case, max(threads_list), args.tol)
            checks[case.name] = diffs
            memory[case.name] = memory_report(case)
            loads[case.name] = os.getloadavg()[0]
            path = os.path.join(logdir, "problem.npz")
            np.savez(path, **arrays)
            gc.collect()
            # The competitors take turns, `rounds` times, each with its share of the
            # budget: a slow spell of the host then hits all of them, not just one.
            case_jobs = [(th, comp, key) for c, th, comp, key in plan if c is case]
            parts: Dict[str, List[dict]] = {key: [] for _, _, key in case_jobs}
            for rnd in range(rounds):
                for th, comp, key in case_jobs:
                    progress.set(f"{case.name} | {th} thr | {COMPETITOR_LABEL[comp]}"
                                 + (f" | round {rnd + 1}/{rounds}" if rounds > 1 else ""))
                    time.sleep(SETTLE_S)
                    job = {"case": dataclasses.asdict(case), "problem": path,
                           "budget": budget / rounds, "min_rep": max(1, -(-min_rep // rounds)),
                           "max_rep": max(1, max_rep // rounds)}
                    parts[key].append(workers[(comp, th)].run(job))
            for th, comp, key in case_jobs:
                r = merge_rounds(parts[key])
                r.update(competitor=comp, threads_requested=th, case=case.name, key=key,
                         loadavg=os.getloadavg()[0])
                results[key] = r
                progress.step()
            summary = []
            for th in threads_list:
                fr_r = results.get(f"{case.job_key('fusedrnn')}|t{th}")
                to_r = results.get(f"{case.job_key('torch')}|t{th}")
                if fr_r and to_r:
                    summary.append(f"{th} thr: " + ", ".join(
                        f"{m} fr {fmt_ms(fr_r['timings'][m]['median'])} ms torch/fr "
                        f"{to_r['timings'][m]['median'] / fr_r['timings'][m]['median']:.2f}"
                        for m in MODES))
            progress.write(f"{case.name} ({case.dims()}): " + " | ".join(summary))
    finally:
        progress.close()
        for w in workers.values():
            w.close()
    elapsed = time.time() - t_start
    shutil.rmtree(logdir, ignore_errors=True)

    kernels = sorted({r["kernel_sha256"] for r in results.values() if "kernel_sha256" in r})
    if len(kernels) > 1:
        print(f"warning: the workers loaded different builds of the kernel ({kernels}): "
              "the C sources changed during the run", file=sys.stderr)
    gemm = sorted({r["gemm"] for r in results.values() if "gemm" in r})
    settings = {"quick": quick, "threads": threads_list, "budget": budget, "rounds": rounds,
                "min_rep": min_rep,
                "max_rep": max_rep, "tol": args.tol, "cases_filter": args.cases,
                "date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_before": load_before,
                "load_after": os.getloadavg()[0], "gemm": ",".join(gemm), "kernel_builds": kernels,
                "argv": sys.argv[1:], "pause_when_busy": pause,
                "waited_s": sum(w["waited_s"] for w in waits.values())}
    rows = build_rows(cases, threads_list, results)
    md = markdown(info, {**settings, "_cases": cases}, rows, memory, checks, results, elapsed)
    blob = {"machine": info, "settings": settings, "elapsed_s": elapsed,
            "cases": [{**dataclasses.asdict(c), "name": c.name, "dtype": c.dtype, "P": c.P,
                       "layers": c.layers, "directions": c.D, "loadavg_at_start": loads.get(c.name),
                       "quiet_wait": waits.get(c.name)}
                      for c in cases],
            "checks": checks, "memory": memory, "rows": rows, "results": results}
    written = []
    for name, text in ((f"{tag}.json", dump_json(blob)), (f"{tag}.md", md)):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(text)
        written.append(name)
    full = not quick and not args.cases and args.tag is None and threads_list == [1, 2]
    if full:
        shutil.copyfile(os.path.join(args.out, f"{tag}.json"), os.path.join(args.out, "latest-full.json"))
        written.append("latest-full.json")
    png = "ratios.png" if tag == "latest" else f"{tag}-ratios.png"
    try:
        plot(rows, os.path.join(args.out, png), threads_list)
        written.append(png)
    except ImportError as e:
        print(f"no plot ({e}): pip install matplotlib", file=sys.stderr)
    print(md)
    print(f"{elapsed / 60:.1f} min; wrote " + ", ".join(os.path.join(os.path.relpath(args.out), w)
                                                       for w in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
