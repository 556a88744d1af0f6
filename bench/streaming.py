"""The streaming section: the latency of one frame at a time (one thread, float32).

Per case (I = 40, H and B below, `frames` frames), each competitor in its own process:

  forward   fusedrnn `layer.forward(x[n:n+1], state=state, training=False)` per frame
  whole     one fusedrnn `layer.forward(x, training=False)` over all frames, per frame
  stream    fusedrnn `stream = layer.stream(batch=B)`, `stream.step(x[n])` per frame
  context   the same stream of an LSTM with context=(2, 4) (a look-ahead of 4 frames)
  snapshot  the stream with weights="snapshot" (no weight tracking at all)
  wide      a plain stream of an LSTM with I = 7 * 40 (the context window's weights, no window)
  ctxwhole  one forward of the context LSTM over all frames, per frame
  frtorch   `fusedrnn.torch.LSTM.stream(B).step(frame)` on torch tensors
  torch     `torch.nn.LSTM` called per frame with its (h, c)
  ort       ONNX Runtime's LSTM node per frame, T = 1, with initial_h / initial_c as inputs

A fusedrnn without `stream` reports n/a for stream, context and frtorch. Every frame is timed
on its own (time.perf_counter around the call); the rows give medians and 99th percentiles.
The first `CHECK_FRAMES` frames run untimed first, from a fresh state, and their outputs are
compared with the ones the parent checked (warm-up and check in one)."""
from __future__ import annotations

import dataclasses
import gc
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from build import fr_threads, kernel_id
from cases import SEED, Case
from problems import make_fr, make_torch, maxabs, onnx_lstm_model, ort_session, params_of
from timing import time_stats

SECTION = "streaming"
I_STREAM = 40
CONTEXT = (2, 4)
SIZES = [(128, 1), (128, 8), (512, 1), (512, 8)]     # (H, B)
FRAMES, QUICK_FRAMES = 10_000, 300
MEMORY_FRAMES = 1_000_000                            # stream.step calls of the memory check
CHECK_FRAMES = 64
COMPETITORS = ("fusedrnn", "frtorch", "torch", "ort")
BUILD_COMPETITORS = ("fusedrnn", "frtorch")
# measurement -> (competitor, mode of its worker), in table order
MEASUREMENTS: Dict[str, Tuple[str, str]] = {
    "forward": ("fusedrnn", "forward"), "whole": ("fusedrnn", "whole"),
    "stream": ("fusedrnn", "stream"), "snapshot": ("fusedrnn", "snapshot"),
    "context": ("fusedrnn", "context"), "wide": ("fusedrnn", "wide"),
    "ctxwhole": ("fusedrnn", "ctxwhole"),
    "frtorch": ("frtorch", "stream"), "torch": ("torch", "frame"), "ort": ("ort", "frame")}
LABEL = {"forward": "fusedrnn forward per frame", "whole": "fusedrnn whole forward, per frame",
         "stream": "fusedrnn stream", "snapshot": "snapshot stream",
         "context": f"context {CONTEXT} stream",
         "wide": f"stream, I = {sum(CONTEXT) + 1} x {I_STREAM}",
         "ctxwhole": f"context {CONTEXT} whole forward, per frame",
         "frtorch": "fusedrnn.torch stream", "torch": "torch per frame", "ort": "ORT per frame"}
WHOLE = ("whole", "ctxwhole")   # one call over all frames: no per-frame percentiles


@dataclass(frozen=True)
class StreamCase:
    H: int
    B: int
    I: int = I_STREAM
    frames: int = FRAMES
    memory_frames: int = 0   # > 0: also the resident-set growth over this many stream steps

    @property
    def name(self) -> str:
        return f"streaming / H={self.H} B={self.B}"

    def dims(self) -> str:
        return f"I={self.I} H={self.H} B={self.B}, {self.frames} frames"

    def lstm(self) -> Case:
        """The plain float32 LSTM of the matrix with T = frames (for the shared builders)."""
        return Case("streaming", "plain", self.frames, self.B, self.I, self.H)

    def job_key(self, competitor: str) -> str:
        return f"stream|{competitor}|{self.frames},{self.B},{self.I},{self.H}|t1"


def cases(quick: bool, frames: Optional[int] = None, memory_frames: Optional[int] = None,
          pattern: Optional[str] = None) -> List[StreamCase]:
    """The section's cases whose name matches `pattern`; the first also measures memory over
    `memory_frames` steps."""
    n = frames or (QUICK_FRAMES if quick else FRAMES)
    mem = (10 * n if quick else MEMORY_FRAMES) if memory_frames is None else memory_frames
    chosen = [StreamCase(H, B, frames=n) for H, B in SIZES]
    chosen = [c for c in chosen if pattern is None or re.search(pattern, c.name)]
    return [dataclasses.replace(c, memory_frames=mem) if i == 0 else c for i, c in enumerate(chosen)]


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    ratio: str     # a key of row["ratios"]
    bound: float
    upper: bool    # ratio <= bound, else ratio >= bound

    def ok(self, r: float) -> bool:
        return r <= self.bound if self.upper else r >= self.bound

    def text(self) -> str:
        return f"{self.ratio} {'<=' if self.upper else '>='} {self.bound:g}"


TARGETS = [Target("stream/whole", 1.5, True), Target("torch/stream", 15, False),
           Target("ORT/stream", 3, False), Target("fr.torch/stream", 3, True),
           Target("context/stream", 1.5, True)]
MEMORY_LIMIT_MB = 5.0
RATIOS = {"stream/whole": ("stream", "whole"), "torch/stream": ("torch", "stream"),
          "ORT/stream": ("ort", "stream"), "fr.torch/stream": ("frtorch", "stream"),
          "context/stream": ("context", "stream"), "forward/stream": ("forward", "stream"),
          "snapshot/whole": ("snapshot", "whole"), "context/wide": ("context", "wide"),
          "context/ctx whole": ("context", "ctxwhole")}


# ---------------------------------------------------------------------------- problem and check
def has_stream(obj) -> bool:
    return hasattr(obj, "stream")


def _emitted(out) -> List[np.ndarray]:
    """The frames a step or flush returned: none (None or empty), one (B, R) or several (n, B, R)."""
    if out is None:
        return []
    a = np.array(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float64)  # a copy
    if a.size == 0:
        return []
    return [a] if a.ndim == 2 else list(a)


def run_stream(stream, frames: np.ndarray, flush: bool = True) -> np.ndarray:
    """Outputs (n, B, R) of stream.step over frames (n, B, I), then what flush returns."""
    out: List[np.ndarray] = []
    for f in frames:
        out += _emitted(stream.step(f))
    if flush and hasattr(stream, "flush"):
        out += _emitted(stream.flush())
    return np.stack(out)


def outputs(step: Callable[[int], object], n: int) -> np.ndarray:
    """(n, B, R): what step(0), ..., step(n - 1) return."""
    return np.stack([np.array(step(k), np.float64) for k in range(n)])


# Each competitor's frame step, made fresh (from a zero state) by its factory: once for the
# check (and warm-up) over the first frames, once for the timing.
def forward_steps(layer, x: np.ndarray) -> Callable[[int], np.ndarray]:
    state: list = [None]

    def step(k: int) -> np.ndarray:
        y, state[0] = layer.forward(x[k:k + 1], state=state[0], training=False)
        return y[0]
    return step


def torch_steps(module, x) -> Callable[[int], object]:
    hc: list = [None]

    def step(k: int):
        y, hc[0] = module(x[k:k + 1], hc[0])
        return y[0]
    return step


def ort_steps(sess, x: np.ndarray, B: int, H: int) -> Callable[[int], np.ndarray]:
    zero = np.zeros((1, B, H), np.float32)
    feed = {"initial_h": zero, "initial_c": zero}

    def step(k: int) -> np.ndarray:
        feed["X"] = x[k:k + 1]
        y, feed["initial_h"], feed["initial_c"] = sess.run(None, feed)
        return y[0, 0]
    return step


def ort_frame_session(params: Mapping[str, np.ndarray], case: "StreamCase"):
    return ort_session(onnx_lstm_model(params, 1, case.B, case.I, case.H, False, True), 1)


def context_layer(case: "StreamCase", params: Optional[Mapping[str, np.ndarray]] = None):
    import fusedrnn as fr
    ctx = fr.LSTM(case.I, case.H, context=CONTEXT, dtype=np.float32, seed=SEED)
    for k, v in (params or {}).items():
        ctx.params[k][...] = v
    return ctx


def wide_layer(case: "StreamCase"):
    """A plain LSTM whose input is the context window (I = K * 40): the weights of the
    context LSTM without its window."""
    import fusedrnn as fr
    return fr.LSTM((sum(CONTEXT) + 1) * case.I, case.H, dtype=np.float32, seed=SEED)


def snapshot_stream(layer, B: int):
    """layer.stream(B, weights="snapshot"), None for an installation without it."""
    try:
        return layer.stream(batch=B, weights="snapshot")
    except TypeError:
        return None


def check(case: StreamCase, tol: float) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """Every competitor over the first CHECK_FRAMES frames against one fusedrnn forward over
    them. Returns (differences, arrays for the workers); raises on a mismatch."""
    import torch
    import fusedrnn as fr
    torch.set_num_threads(1)
    K = min(CHECK_FRAMES, case.frames)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((case.frames, case.B, case.I)).astype(np.float32)
    module = make_torch(case.lstm())
    layer = fr.LSTM.from_torch(module)
    ctx = context_layer(case)
    y_ref, _ = layer.forward(x[:K], training=False)
    yc_ref, _ = ctx.forward(x[:K], training=False)
    diffs = {"fusedrnn forward per frame (abs)": maxabs(outputs(forward_steps(layer, x), K), y_ref)}
    with torch.inference_mode():
        diffs["torch per frame (abs)"] = maxabs(outputs(torch_steps(module, torch.from_numpy(x)), K), y_ref)
    sess = ort_frame_session(layer.params, case)
    diffs["ORT per frame (abs)"] = maxabs(outputs(ort_steps(sess, x, case.B, case.H), K), y_ref)
    del sess
    if has_stream(layer):
        diffs["fusedrnn stream (abs)"] = maxabs(run_stream(layer.stream(batch=case.B), x[:K]), y_ref)
        diffs[f"context {CONTEXT} stream (abs)"] = maxabs(run_stream(ctx.stream(batch=case.B), x[:K]), yc_ref)
        import fusedrnn.torch as frt
        tmod = frt.LSTM.from_fusedrnn(layer)
        if has_stream(tmod):
            with torch.inference_mode():
                ys = run_stream(tmod.stream(case.B), torch.from_numpy(x[:K]))
            diffs["fusedrnn.torch stream (abs)"] = maxabs(ys, y_ref)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise RuntimeError(f"{case.name}: competitors disagree (> {tol:g}): {bad}; not timing")
    arrays = {"x": x, "check.y": np.array(y_ref), "check.y_context": np.array(yc_ref)}
    for k, v in module.state_dict().items():
        arrays["torch." + k] = v.detach().numpy()
    for k, v in layer.params.items():
        arrays["fusedrnn." + k] = v
    for k, v in ctx.params.items():
        arrays["context." + k] = v
    return diffs, arrays


# ---------------------------------------------------------------------------- timing
def per_frame(step: Callable[[int], object], n: int) -> dict:
    """Per-frame wall times of step(0), ..., step(n - 1) (seconds), GC off."""
    times = [0.0] * n
    clock = time.perf_counter
    gc_on = gc.isenabled()
    gc.disable()
    try:
        for k in range(n):
            t0 = clock()
            step(k)
            times[k] = clock() - t0
    finally:
        if gc_on:
            gc.enable()
    return {**time_stats(times), "warmup": 0, "warmup_times": []}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stream_memory(stream, x: np.ndarray, steps: int) -> dict:
    """The resident set before and after `steps` stream steps (after 1000 to settle)."""
    n = len(x)
    for k in range(min(1000, steps)):
        stream.step(x[k % n])
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    for k in range(steps):
        stream.step(x[k % n])
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    return {"steps": steps, "rss_before_bytes": before, "rss_after_bytes": after,
            "growth_bytes": after - before, "elapsed_s": elapsed}


def work_fusedrnn(case: StreamCase, problem: Mapping[str, np.ndarray], job: Mapping) -> dict:
    import fusedrnn as fr
    from threadpoolctl import threadpool_limits
    x, n, K = problem["x"], case.frames, min(CHECK_FRAMES, case.frames)
    layer = make_fr(case.lstm(), params_of(problem, "fusedrnn"))
    checks: Dict[str, float] = {}
    timings: Dict[str, dict] = {}
    out: dict = {"version": fr.__version__, "has_stream": has_stream(layer)}
    with threadpool_limits(1, "blas"):
        out["threads"] = fr_threads(1)
        checks["forward"] = maxabs(outputs(forward_steps(layer, x), K), problem["check.y"])
        timings["forward"] = per_frame(forward_steps(layer, x), n)
        whole = job["timer"](lambda: layer.forward(x, training=False))
        timings["whole"] = {**whole, "times": [t / n for t in whole["times"]]}
        if out["has_stream"]:
            ctx = context_layer(case, params_of(problem, "context"))
            for name, lay, want in (("stream", layer, "check.y"), ("context", ctx, "check.y_context")):
                checks[name] = maxabs(run_stream(lay.stream(batch=case.B), x[:K]), problem[want])
                stream = lay.stream(batch=case.B)
                timings[name] = per_frame(lambda k, s=stream: s.step(x[k]), n)
            # the breakdown: no weight tracking; the context's weights without its window; the
            # context LSTM over the whole sequence
            snap = snapshot_stream(layer, case.B)
            if snap is not None:
                checks["snapshot"] = maxabs(run_stream(snapshot_stream(layer, case.B), x[:K]),
                                            problem["check.y"])
                timings["snapshot"] = per_frame(lambda k: snap.step(x[k]), n)
            wide = wide_layer(case)
            xw = np.ascontiguousarray(np.concatenate([x] * (sum(CONTEXT) + 1), axis=2))
            checks["wide"] = maxabs(run_stream(wide.stream(batch=case.B), xw[:K]),
                                    wide.forward(xw[:K], training=False)[0])
            ws = wide.stream(batch=case.B)
            timings["wide"] = per_frame(lambda k: ws.step(xw[k]), n)
            cw = job["timer"](lambda: ctx.forward(x, training=False))
            timings["ctxwhole"] = {**cw, "times": [t / n for t in cw["times"]]}
            if case.memory_frames and job.get("round", 0) == 0:
                out["memory"] = stream_memory(layer.stream(batch=case.B), x, case.memory_frames)
    return {**out, "checks": checks, "check_y_abs": max(checks.values()), "timings": timings,
            **kernel_id()}


def work_frtorch(case: StreamCase, problem: Mapping[str, np.ndarray], job: Mapping) -> dict:
    import torch
    import fusedrnn.torch as frt
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(1)
    x = torch.from_numpy(problem["x"])
    module = frt.LSTM.from_fusedrnn(make_fr(case.lstm(), params_of(problem, "fusedrnn")))
    out: dict = {"version": torch.__version__, "has_stream": has_stream(module)}
    timings: Dict[str, dict] = {}
    with threadpool_limits(1, "blas"), torch.inference_mode():
        out["threads"] = {**fr_threads(1), "intra-op": [torch.get_num_threads()]}
        if out["has_stream"]:
            K = min(CHECK_FRAMES, case.frames)
            out["check_y_abs"] = maxabs(run_stream(module.stream(case.B), x[:K]), problem["check.y"])
            stream = module.stream(case.B)
            timings["stream"] = per_frame(lambda k: stream.step(x[k]), case.frames)
    return {**out, "timings": timings}


def work_torch(case: StreamCase, problem: Mapping[str, np.ndarray], job: Mapping) -> dict:
    import torch
    torch.set_num_threads(1)
    module = make_torch(case.lstm(), params_of(problem, "torch"))
    x = torch.from_numpy(problem["x"])
    with torch.inference_mode():
        agree = maxabs(outputs(torch_steps(module, x), min(CHECK_FRAMES, case.frames)), problem["check.y"])
        timings = {"frame": per_frame(torch_steps(module, x), case.frames)}
    return {"version": torch.__version__, "check_y_abs": agree,
            "threads": {"intra-op": [torch.get_num_threads()]}, "timings": timings}


def work_ort(case: StreamCase, problem: Mapping[str, np.ndarray], job: Mapping) -> dict:
    import onnxruntime as ort
    x = problem["x"]
    sess = ort_frame_session(params_of(problem, "fusedrnn"), case)
    try:
        agree = maxabs(outputs(ort_steps(sess, x, case.B, case.H), min(CHECK_FRAMES, case.frames)),
                       problem["check.y"])
        timings = {"frame": per_frame(ort_steps(sess, x, case.B, case.H), case.frames)}
        n = sess.get_session_options().intra_op_num_threads
    finally:
        del sess  # destroys ORT's (spinning) thread pool before the next job
    return {"version": ort.__version__, "check_y_abs": agree, "threads": {"intra-op": [n]},
            "timings": timings}


WORKERS = {"fusedrnn": work_fusedrnn, "frtorch": work_frtorch, "torch": work_torch, "ort": work_ort}


# ---------------------------------------------------------------------------- results
def finish(result: dict) -> dict:
    """After the rounds are pooled: the 99th percentile and the largest frame time of every
    measurement, and the per-frame times dropped (10,000 a measurement)."""
    for t in result["timings"].values():
        s = sorted(t.pop("times"))
        t["p99"] = s[min(len(s) - 1, int(0.99 * len(s)))]
        t["max"] = s[-1]
        t.pop("warmup_times", None)
    return result


def build_rows(scases: List[StreamCase], results: Mapping[str, dict]) -> List[dict]:
    rows = []
    for case in scases:
        med: Dict[str, Optional[float]] = {}
        p99: Dict[str, Optional[float]] = {}
        sources: Dict[str, List[str]] = {}
        for m, (comp, mode) in MEASUREMENTS.items():
            key = case.job_key(comp)
            t = results.get(key, {}).get("timings", {}).get(mode)
            med[m] = t["median"] if t else None
            p99[m] = t["p99"] if t and m not in WHOLE else None
            if t:
                sources[m] = [key, mode]
        ratios = {name: (med[a] / med[b] if med[a] and med[b] else None)
                  for name, (a, b) in RATIOS.items()}
        checks = [{"target": tg.text(), "ratio": ratios[tg.ratio],
                   "met": None if ratios[tg.ratio] is None else tg.ok(ratios[tg.ratio])}
                  for tg in TARGETS]
        mem = results.get(case.job_key("fusedrnn"), {}).get("memory")
        memory = None
        if mem:
            memory = {**mem, "growth_mb": mem["growth_bytes"] / 2**20}
            checks.append({"target": f"memory growth over {mem['steps']} steps < {MEMORY_LIMIT_MB:g} MB",
                           "ratio": memory["growth_mb"], "met": memory["growth_mb"] < MEMORY_LIMIT_MB})
        rows.append({"case": case.name, "dims": case.dims(), "H": case.H, "B": case.B, "I": case.I,
                     "frames": case.frames, "threads": 1, "mode": "per frame", "median_s": med,
                     "p99_s": p99, "ratios": ratios, "targets": checks, "memory": memory,
                     "sources": sources})
    return rows


def _us(t: Optional[float], p: Optional[float] = None) -> str:
    if t is None:
        return "n/a"
    return f"{1e6 * t:.1f}" + (f" ({1e6 * p:.0f})" if p is not None else "")


def markdown(rows: List[dict], checks: Mapping[str, dict]) -> str:
    L = ["## Streaming (1 thread, float32)", "",
         "Per-frame medians in µs, the 99th percentile in brackets (whole forwards: one call "
         "over all frames, divided by their number); `n/a`: the fusedrnn installation has no "
         "`stream`.", ""]
    head = ["case"] + [LABEL[m] for m in MEASUREMENTS]
    L.append("| " + " | ".join(head) + " |")
    L.append("| " + " | ".join(["---"] + ["---:"] * len(MEASUREMENTS)) + " |")
    for r in rows:
        L.append("| " + " | ".join(
            [f"H={r['H']} B={r['B']}"] + [_us(r["median_s"][m], r["p99_s"][m]) for m in MEASUREMENTS])
            + " |")
    L += ["", "Ratios of the medians:", ""]
    L.append("| " + " | ".join(["case"] + list(RATIOS) + ["targets met"]) + " |")
    L.append("| " + " | ".join(["---"] + ["---:"] * len(RATIOS) + ["---"]) + " |")
    met = total = 0
    for r in rows:
        marks = []
        for c in r["targets"]:
            total += 1
            met += bool(c["met"])
            marks.append("n/a" if c["met"] is None else "yes" if c["met"] else "**NO**")
        L.append("| " + " | ".join(
            [f"H={r['H']} B={r['B']}"]
            + ["—" if v is None else f"{v:.2f}" for v in r["ratios"].values()]
            + [" / ".join(marks)]) + " |")
    L += ["", "Targets: " + "; ".join(t.text() for t in TARGETS)
          + f"; memory growth of a stream < {MEMORY_LIMIT_MB:g} MB. "
          f"**Streaming targets met: {met} of {total}.**"]
    for r in rows:
        if r["memory"]:
            m = r["memory"]
            L += ["", f"Memory: {m['steps']} `stream.step` calls at H={r['H']} B={r['B']}: resident "
                  f"set {m['rss_before_bytes'] / 2**20:.1f} -> {m['rss_after_bytes'] / 2**20:.1f} MB "
                  f"({m['growth_mb']:+.2f} MB) in {m['elapsed_s']:.1f} s."]
    L += ["", "Checked before timing (largest difference from one fusedrnn forward over the first "
          f"{CHECK_FRAMES} frames):", ""]
    for name, d in checks.items():
        L.append(f"- {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()))
    return "\n".join(L) + "\n"


def summary(case: StreamCase, results: Mapping[str, dict]) -> str:
    """One line of a case's medians (results: pooled and finished)."""
    row = build_rows([case], results)[0]
    return f"{case.name}: " + ", ".join(f"{m} {_us(v)} us" for m, v in row["median_s"].items())
