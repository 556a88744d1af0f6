"""The reduced-precision section: inference of one LSTM layer in bfloat16 and int8, fusedrnn
(`layer.quantize(...)`, on the CPU's best kernels and forced onto the AVX2 ones) against ONNX
Runtime int8 (`quantize_dynamic` -> DynamicQuantizeLSTM), OpenVINO bf16
(`INFERENCE_PRECISION_HINT=bf16`), torch bf16 and torch dynamic int8, with fusedrnn float32
as the reference (also forced onto AVX2, micro-kernel and OpenBLAS, the like-for-like base of
the AVX2 paths); every row with the max abs error of y against the float32 forward of the
same weights, and a table of the weights' bytes per precision.

    python bench/run.py --reduced            # small, medium, large; 1 and 2 threads
    python bench/run.py --reduced --quick    # small only, short budgets (seconds)

Every competitor runs in its own worker process per thread count (workers.Worker); the
competitors of a case take turns `rounds` times. A competitor that is not installed is
skipped with its reason. Writes <out>/reduced[-quick].{json,md}.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from cases import SEED

SECTION = "reduced"
# name -> (T, B, I, H)
CASES: Dict[str, Tuple[int, int, int, int]] = {
    "small": (100, 1, 64, 128),
    "medium": (100, 32, 256, 256),
    "large": (50, 64, 512, 1024),
}
QUICK_CASES = {"small": (20, 1, 16, 32)}
# competitor -> (label, precision)
COMPETITORS: Dict[str, Tuple[str, str]] = {
    "fr_f32": ("fusedrnn float32", "f32"),
    "fr_f32_avx2": ("fusedrnn float32, AVX2", "f32"),
    "fr_bf16": ("fusedrnn bf16", "bf16"),
    "fr_bf16_avx2": ("fusedrnn bf16, AVX2 path", "bf16"),
    "fr_int8": ("fusedrnn int8", "int8"),
    "fr_int8_avx2": ("fusedrnn int8, AVX2 path", "int8"),
    "ov_bf16": ("OpenVINO bf16 (INFERENCE_PRECISION_HINT=bf16)", "bf16"),
    "torch_bf16": ("torch bf16 (.to(torch.bfloat16))", "bf16"),
    "ort_int8": ("ONNX Runtime int8 (quantize_dynamic, DynamicQuantizeLSTM)", "int8"),
    "torch_int8": ("torch dynamic int8 (quantize_dynamic, qint8)", "int8"),
}
FR_COMPETITORS = tuple(c for c in COMPETITORS if c.startswith("fr_"))
# (case, fusedrnn row, peer row, bound): peer time / fusedrnn time >= bound
TARGETS = ([(c, "fr_int8", "ort_int8", 1.2) for c in CASES]
           + [("small", "fr_bf16", p, 1.2) for p in ("ov_bf16", "torch_bf16")]
           + [("medium", "fr_bf16", p, 1.15) for p in ("ov_bf16", "torch_bf16")]
           + [("large", "fr_bf16", "ov_bf16", 1.15)]
           + [(c, f"fr_{p}_avx2", "fr_f32", 1.0) for c in CASES for p in ("bf16", "int8")]
           + [(c, f"fr_{p}_avx2", "fr_f32_avx2", 1.0) for c in CASES for p in ("bf16", "int8")])


# ============================================================================ the problem
def make_problem(T: int, B: int, I: int, H: int) -> Dict[str, np.ndarray]:
    """Weights (torch's initialisation, seeded), x, and the float32 reference y of the
    same weights (fusedrnn float32, checked against torch float32)."""
    import torch
    import fusedrnn as fr
    torch.manual_seed(SEED)
    module = torch.nn.LSTM(I, H)
    layer = fr.LSTM.from_torch(module)
    x = np.random.default_rng(SEED).standard_normal((T, B, I)).astype(np.float32)
    y, _ = layer.forward(x, training=False)
    with torch.inference_mode():
        y_t = module(torch.from_numpy(x))[0].numpy()
    if not np.abs(y - y_t).max() <= 1e-4:
        raise RuntimeError(f"fusedrnn float32 differs from torch by {np.abs(y - y_t).max():.2e}")
    out = {"x": x, "y32": np.asarray(y)}
    out.update({"torch." + k: v.detach().numpy() for k, v in module.state_dict().items()})
    out.update({"fusedrnn." + k: np.asarray(v) for k, v in layer.params.items()})
    return out


def _params(problem, prefix: str) -> Dict[str, np.ndarray]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in problem.items() if k.startswith(p)}


def _torch_module(problem):
    import torch
    state = _params(problem, "torch")
    I, H = state["weight_ih_l0"].shape[1], state["weight_hh_l0"].shape[1]
    m = torch.nn.LSTM(I, H)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return m.eval()


def _onnx_model(problem) -> bytes:
    from problems import onnx_lstm_model
    T, B, I = problem["x"].shape
    params = _params(problem, "fusedrnn")
    return onnx_lstm_model(params, T, B, I, params["W_v"].shape[1], False)


def _skip(reason: str) -> dict:
    return {"skipped": reason, "threads": {}, "timings": {}}


# ============================================================================ the workers
def work_fr(name: str, problem, threads: int, timer) -> dict:
    from threadpoolctl import threadpool_limits
    import fusedrnn as fr
    from fusedrnn import _kernel
    from build import fr_threads
    layer = fr.LSTM(problem["x"].shape[2], problem["fusedrnn.W_v"].shape[1], peepholes=False,
                    seed=SEED)   # as from_torch made it
    params = _params(problem, "fusedrnn")
    if set(params) != set(layer.params):
        raise RuntimeError(f"parameters {sorted(params)}, the layer has {sorted(layer.params)}")
    for k, v in params.items():
        layer.params[k][...] = v
    precision = COMPETITORS[name][1]
    model = layer if precision == "f32" else layer.quantize(precision)
    isa = f32_isa = None
    if name == "fr_f32_avx2":
        # the micro-kernel's AVX2 tiles and OpenBLAS's Haswell kernels (OPENBLAS_CORETYPE,
        # set in this worker's environment by workers.COMPETITOR_ENV): float32 as it runs
        # on an AVX2 CPU without AVX-512
        from threadpoolctl import threadpool_info
        if _kernel.best_isa() < 1:
            return _skip("this CPU has no AVX2 path")
        arch = sorted({i.get("architecture") for i in threadpool_info()
                       if i.get("internal_api") == "openblas"} - {None})
        if arch and arch != ["Haswell"]:
            raise RuntimeError(f"OpenBLAS runs {arch} kernels, not Haswell's (OPENBLAS_CORETYPE="
                               f"{os.environ.get('OPENBLAS_CORETYPE')!r})")
        f32_isa = _kernel.set_isa(1)
    elif name.endswith("_avx2"):
        paths = {n: (i, ok) for i, n, _, ok in _kernel.qisa_paths(precision)}
        if "avx2" not in paths or not paths["avx2"][1]:
            return _skip("this CPU has no AVX2 path")
        isa = _kernel.qset_isa(precision, paths["avx2"][0])
    try:
        path = (_kernel.qisa_paths(precision)[_kernel.qget_isa(precision)][1]
                if precision != "f32" else "float32" if f32_isa is None else
                f"float32, micro-kernel avx2, OpenBLAS {','.join(arch) or '?'}")
        x = problem["x"]
        with threadpool_limits(threads, "blas"):
            th = fr_threads(threads)
            y, _ = model.forward(x, training=False)
            t = timer(lambda: model.forward(x, training=False))
    finally:
        if isa is not None:
            _kernel.qset_isa(precision, isa)
        if f32_isa is not None:
            _kernel.set_isa(f32_isa)
    return {"version": fr.__version__, "threads": th, "timings": {"inference": t}, "y": y,
            "path": path}


def work_torch_bf16(problem, threads: int, timer) -> dict:
    import torch
    torch.set_num_threads(threads)
    m = _torch_module(problem).to(torch.bfloat16)
    x = torch.from_numpy(problem["x"]).to(torch.bfloat16)

    def run():
        with torch.inference_mode():
            return m(x)[0]

    y = run().float().numpy()
    return {"version": torch.__version__, "threads": {"intra-op": [torch.get_num_threads()]},
            "timings": {"inference": timer(run)}, "y": y}


def work_torch_int8(problem, threads: int, timer) -> dict:
    import torch
    torch.set_num_threads(threads)
    holder = torch.nn.ModuleDict({"lstm": _torch_module(problem)})  # it swaps children only
    m = torch.ao.quantization.quantize_dynamic(holder, {torch.nn.LSTM}, dtype=torch.qint8)["lstm"]
    kind = type(m).__module__ + "." + type(m).__name__
    if "quantized" not in kind:
        raise RuntimeError(f"quantize_dynamic left the LSTM as {kind}")
    x = torch.from_numpy(problem["x"])

    def run():
        with torch.inference_mode():
            return m(x)[0]

    y = run().numpy()
    return {"version": torch.__version__, "threads": {"intra-op": [torch.get_num_threads()]},
            "timings": {"inference": timer(run)}, "y": y, "path": kind}


def ort_int8_model(model: bytes, tmpdir: str) -> bytes:
    """The float model through onnxruntime.quantization.quantize_dynamic (int8 weights);
    raises unless its LSTM became a DynamicQuantizeLSTM."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst = os.path.join(tmpdir, "f32.onnx"), os.path.join(tmpdir, "int8.onnx")
    with open(src, "wb") as f:
        f.write(model)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    ops = [n.op_type for n in onnx.load(dst).graph.node]
    if "DynamicQuantizeLSTM" not in ops:
        raise RuntimeError(f"quantize_dynamic gave the ops {ops}, no DynamicQuantizeLSTM")
    with open(dst, "rb") as f:
        return f.read()


def work_ort_int8(problem, threads: int, timer) -> dict:
    try:
        import onnxruntime as ort
        import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        return _skip(f"onnxruntime.quantization not importable ({e})")
    from problems import ort_session
    with tempfile.TemporaryDirectory() as tmp:
        model = ort_int8_model(_onnx_model(problem), tmp)
    sess = ort_session(model, threads)
    feed = {"X": problem["x"]}
    try:
        y = sess.run(["Y"], feed)[0][:, 0]
        t = timer(lambda: sess.run(["Y"], feed))
        n = sess.get_session_options().intra_op_num_threads
    finally:
        del sess
    return {"version": ort.__version__, "threads": {"intra-op": [n]},
            "timings": {"inference": t}, "y": y, "path": "DynamicQuantizeLSTM"}


def work_ov_bf16(problem, threads: int, timer) -> dict:
    try:
        import openvino as ov
    except ImportError as e:
        return _skip(f"openvino is not installed ({e}); pip install openvino")
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        return _skip(f"OpenVINO's CPU plugin has no bf16 on this CPU ({caps})")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f32.onnx")
        with open(path, "wb") as f:
            f.write(_onnx_model(problem))
        model = core.read_model(path)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                 "INFERENCE_NUM_THREADS": threads,
                                                 "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    n = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    req = compiled.create_infer_request()
    x = problem["x"]
    out = compiled.output(0)

    def run():
        return req.infer({0: x})[out]

    y = np.array(run())[:, 0]
    return {"version": ov.__version__ if hasattr(ov, "__version__") else ov.get_version(),
            "threads": {"inference": [n]}, "timings": {"inference": timer(run)}, "y": y,
            "path": "bf16" if "bfloat16" in got else got}


def work(competitor: str, problem, threads: int, timer) -> dict:
    """Time one competitor; `y` is replaced by its max abs error against float32."""
    if competitor in FR_COMPETITORS:
        r = work_fr(competitor, problem, threads, timer)
    else:
        r = {"torch_bf16": work_torch_bf16, "torch_int8": work_torch_int8,
             "ort_int8": work_ort_int8, "ov_bf16": work_ov_bf16}[competitor](problem, threads, timer)
    if "y" in r:
        y = np.asarray(r.pop("y"), np.float64)
        r["max_abs_err"] = float(np.max(np.abs(y - problem["y32"])))
    return r


# ============================================================================ memory
def memory_table(I: int, H: int) -> List[dict]:
    """Bytes of one layer's GEMM weights (W_x, W_v; int8: with the row scales) per precision,
    as fusedrnn stores them (`params`) and as its kernel packs them (the panels), and all
    the parameters (with biases)."""
    import fusedrnn as fr
    layer = fr.LSTM(I, H, peepholes=False, seed=SEED)
    gemm = ("W_x", "W_v", "W_x_scale", "W_v_scale")
    f32_gemm = sum(layer.params[k].nbytes for k in ("W_x", "W_v"))
    f32_all = sum(p.nbytes for p in layer.params.values())
    rows = [{"precision": "float32", "gemm_bytes": f32_gemm, "all_bytes": f32_all,
             "packed_bytes": None}]
    for precision in ("bf16", "int8"):
        q = layer.quantize(precision)
        g = sum(q.params[k].nbytes for k in gemm if k in q.params)
        packed = _packed_bytes(q)
        rows.append({"precision": precision, "gemm_bytes": g,
                     "all_bytes": sum(p.nbytes for p in q.params.values()),
                     "packed_bytes": packed})
    for r in rows:
        r["gemm_ratio"] = r["gemm_bytes"] / f32_gemm
        r["all_ratio"] = r["all_bytes"] / f32_all
        r["packed_ratio"] = None if r["packed_bytes"] is None else r["packed_bytes"] / f32_gemm
    return rows


def _packed_bytes(q) -> Optional[int]:
    """The kernel's packed panels of the layer (made by one forward), or None if hidden."""
    q.forward(np.zeros((1, 1, q.input_size), np.float32), training=False)
    packed = getattr(q, "_packed", None) or {}
    total = 0
    for hit in packed.values():
        buf = getattr(hit[1], "buffer", None)
        if buf is None:
            return None
        total += buf.nbytes
    return total or None


# ============================================================================ the run
def plan(quick: bool) -> Dict[str, Tuple[int, int, int, int]]:
    return QUICK_CASES if quick else CASES


def run(threads_list: List[int], quick: bool, budget: float, rounds: int, min_rep: int,
        max_rep: int, out: str, competitors: Optional[List[str]] = None,
        log: Callable[[str], None] = print) -> dict:
    """Time every competitor (or `competitors`) on every case and thread count, write
    <out>/reduced[-quick].{json,md}; returns the JSON blob."""
    from workers import Worker
    cases = plan(quick)
    names = [c for c in COMPETITORS if competitors is None or c in competitors]
    logdir = tempfile.mkdtemp(prefix="fusedrnn_reduced_")
    workers = {(c, th): Worker(c, th, logdir) for th in threads_list for c in names}
    results: Dict[str, Dict[int, Dict[str, dict]]] = {}
    try:
        for w in workers.values():
            w.wait_ready()
        for cname, (T, B, I, H) in cases.items():
            path = os.path.join(logdir, "problem.npz")
            np.savez(path, **make_problem(T, B, I, H))
            job = {"problem": path, "budget": budget / rounds, "section": SECTION,
                   "min_rep": max(1, -(-min_rep // rounds)), "max_rep": max(1, max_rep // rounds),
                   "case": {"T": T, "B": B, "I": I, "H": H}}
            results[cname] = {}
            for th in threads_list:
                parts: Dict[str, List[dict]] = {c: [] for c in names}
                for rnd in range(rounds):
                    order = names if rnd % 2 == 0 else names[::-1]
                    for c in order:
                        time.sleep(0.1)
                        parts[c].append(workers[(c, th)].run({**job, "round": rnd}))
                results[cname][th] = {c: _merge(p) for c, p in parts.items()}
                log(summary(cname, th, results[cname][th]))
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(logdir, ignore_errors=True)
    # the memory table at the full run's sizes (no forward of the sequence; --quick: medium)
    shapes = [CASES["medium"]] if quick else list(CASES.values())
    memory = {f"I={I} H={H}": memory_table(I, H) for (_, _, I, H) in shapes}
    blob = {"cases": {k: dict(zip("TBIH", v)) for k, v in cases.items()}, "threads": threads_list,
            "budget": budget, "rounds": rounds, "results": results, "memory": memory,
            "targets": target_rows(results), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "loadavg": os.getloadavg()[0]}
    tag = "reduced-quick" if quick else "reduced"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{tag}.json"), "w") as f:
        json.dump(blob, f, indent=1, default=float)
    md = markdown(blob)
    with open(os.path.join(out, f"{tag}.md"), "w") as f:
        f.write(md)
    return blob


def _merge(parts: List[dict]) -> dict:
    """One competitor's rounds: all per-call times pooled (their median), the error of the
    first round (every round computes the same y)."""
    first = parts[0]
    if "skipped" in first:
        return {"skipped": first["skipped"]}
    times = [t for p in parts for t in p["timings"]["inference"]["times"]]
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times),
            "round_medians_s": [p["timings"]["inference"]["median"] for p in parts],
            "max_abs_err": first.get("max_abs_err"), "path": first.get("path"),
            "version": first.get("version"), "threads": first.get("threads"),
            "background_load": statistics.mean(p.get("background_load", 0.0) for p in parts)}


def target_rows(results) -> List[dict]:
    rows = []
    for cname, fr_c, peer, bound in TARGETS:
        for th, rs in results.get(cname, {}).items():
            a, b = rs.get(fr_c, {}), rs.get(peer, {})
            if "median_s" not in a or "median_s" not in b:
                rows.append({"case": cname, "threads": th, "fusedrnn": fr_c, "peer": peer,
                             "bound": bound, "ratio": None, "met": None})
                continue
            ratio = b["median_s"] / a["median_s"]
            acc = None  # accuracy: no larger than the peer of the same precision
            if peer != "fr_f32":
                acc = a["max_abs_err"] <= b["max_abs_err"]
            rows.append({"case": cname, "threads": th, "fusedrnn": fr_c, "peer": peer,
                         "bound": bound, "ratio": ratio, "met": ratio >= bound,
                         "accuracy_met": acc})
    return rows


def summary(cname: str, th: int, rs: Dict[str, dict]) -> str:
    base = rs["fr_f32"].get("median_s")
    base2 = rs.get("fr_f32_avx2", {}).get("median_s")
    parts = []
    for c, r in rs.items():
        if "median_s" in r:
            vs2 = f", {base2 / r['median_s']:.2f}x f32 AVX2" if base2 else ""
            parts.append(f"{c} {r['median_s'] * 1e3:.3f} ms ({base / r['median_s']:.2f}x{vs2})")
        else:
            parts.append(f"{c} skipped")
    return f"reduced {cname} {th} thr: " + ", ".join(parts)


def markdown(blob: dict) -> str:
    lines = [f"## Reduced precision: inference, one LSTM layer ({blob['date']}, "
             f"load average {blob['loadavg']:.1f})", "",
             "Median per call; `vs f32` is fusedrnn float32's time over the row's (> 1: faster), "
             "`vs f32 AVX2` the same for fusedrnn float32 on AVX2 (its micro-kernel and OpenBLAS "
             "forced onto their AVX2 kernels, the like-for-like base of the AVX2 paths); "
             "error: max |y - y_float32| over the whole output, the same weights.", ""]
    for cname, dims in blob["cases"].items():
        for th, rs in blob["results"][cname].items():
            lines += [f"### {cname} (T={dims['T']} B={dims['B']} I={dims['I']} H={dims['H']}), "
                      f"{th} thread{'s' if int(th) > 1 else ''}", "",
                      "| competitor | ms | vs f32 | vs f32 AVX2 | max abs error of y | path |",
                      "| --- | ---: | ---: | ---: | ---: | --- |"]
            base = rs["fr_f32"]["median_s"]
            base2 = rs.get("fr_f32_avx2", {}).get("median_s")
            for c, r in rs.items():
                label = COMPETITORS[c][0]
                if "median_s" not in r:
                    lines.append(f"| {label} | skipped: {r['skipped']} | | | | |")
                    continue
                vs2 = f"{base2 / r['median_s']:.2f}x" if base2 else ""
                lines.append(f"| {label} | {r['median_s'] * 1e3:.3f} | {base / r['median_s']:.2f}x "
                             f"| {vs2} | {r['max_abs_err']:.1e} | {r.get('path') or ''} |")
            lines.append("")
    lines += ["### Targets", "", "| case | threads | fusedrnn | against | speed ratio | bound | met "
              "| error <= peer's |", "| --- | ---: | --- | --- | ---: | ---: | --- | --- |"]
    for t in blob["targets"]:
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        acc = {None: "", True: "yes", False: "**no**"}[t.get("accuracy_met")]
        lines.append(f"| {t['case']} | {t['threads']} | {COMPETITORS[t['fusedrnn']][0]} | "
                     f"{COMPETITORS[t['peer']][0]} | {ratio} | {t['bound']:g}x | {met} | {acc} |")
    lines += ["", "### Weight memory (one layer: W_x and W_v; int8 with its row scales)", "",
              "| layer | precision | GEMM weights (bytes) | vs float32 | packed panels (bytes) "
              "| vs float32 | all parameters (bytes) | vs float32 |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for shape, rows in blob["memory"].items():
        for r in rows:
            pk = "" if r["packed_bytes"] is None else f"{r['packed_bytes']:,}"
            pr = "" if r["packed_ratio"] is None else f"{r['packed_ratio']:.3f}x"
            lines.append(f"| {shape} | {r['precision']} | {r['gemm_bytes']:,} | "
                         f"{r['gemm_ratio']:.3f}x | {pk} | {pr} | {r['all_bytes']:,} | "
                         f"{r['all_ratio']:.3f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit("run it as: python bench/run.py --reduced [--quick]")
