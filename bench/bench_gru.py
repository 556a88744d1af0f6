#!/usr/bin/env python3
"""Benchmark: fusedrnn's GRU against torch.nn.GRU and ONNX Runtime's GRU on the CPU.

    python bench/bench_gru.py                  # small, medium, large, float64 medium; 2 threads
    python bench/bench_gru.py --cases medium --threads 1
    python bench/bench_gru.py --quick          # smoke run: tiny shapes, 1 round, 2 repeats

The layers: a torch.nn.GRU (seed 0) mapped with fr.GRU.from_torch (linear_before_reset=True,
torch's formulation), and for ONNX Runtime that GRU exported with fr.onnx.export (a standard
GRU node, linear_before_reset=1). Before timing, the outputs of the three must agree and the
gradients of fusedrnn and torch must agree. All competitors run in this one process with the
same thread count, and take turns: `--rounds` rounds, each timing every competitor on a case
for `--repeats` calls; a figure is the median over all of a competitor's calls, so the ratios
come from one run on one (possibly loaded) machine, measured side by side. With more than one
thread, a library's idle thread pool (torch's OpenMP, fusedrnn's team) may still spin while
another library runs in the same process: on a busy host prefer --threads 1 (and
OMP_WAIT_POLICY=PASSIVE), or the run.py suite, whose competitors run in separate processes.

  inference  one forward over the whole sequence (torch: inference_mode; ORT: session.run)
  train      zero the weight gradients, forward keeping activations, backward of a fixed dE/dy
             down to dx and the weight gradients (fusedrnn and torch; ORT has no training)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report import cpu_model, git_revision  # noqa: E402

# name -> (T, B, I, H, dtype)
CASES: Dict[str, Tuple[int, int, int, int, str]] = {
    "small": (100, 1, 64, 128, "float32"),
    "medium": (100, 32, 256, 256, "float32"),
    "large": (50, 64, 512, 1024, "float32"),
    "float64 medium": (100, 32, 256, 256, "float64"),
}
QUICK: Dict[str, Tuple[int, int, int, int, str]] = {
    "small": (10, 1, 8, 16, "float32"), "float64 small": (10, 4, 8, 16, "float64")}
MODES = ("inference", "train")
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


def competitors(T: int, B: int, I: int, H: int, dtype: str, threads: int
                ) -> Dict[str, Dict[str, Callable[[], object]]]:
    """{competitor: {mode: a call to time}} after checking that they compute the same."""
    import torch
    import fusedrnn as fr
    torch.manual_seed(0)
    tdt = getattr(torch, dtype)
    module = torch.nn.GRU(I, H, dtype=tdt)
    layer = fr.GRU.from_torch(module)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    xt_train = xt.clone().requires_grad_()

    # the check before timing: outputs of all three, gradients of fusedrnn and torch
    y, _ = layer.forward(x)
    dx, _ = layer.backward(dy)
    y_t, _ = module(xt_train)
    y_t.backward(dyt)
    tol = TOLERANCE[dtype]
    err = float(np.max(np.abs(y - y_t.detach().numpy())))
    gerr = float(np.max(np.abs(dx - xt_train.grad.numpy())) / np.max(np.abs(dx)))
    if err > tol or gerr > tol:
        raise SystemExit(f"fusedrnn and torch disagree: max |y| diff {err:.2e}, relative dx "
                         f"diff {gerr:.2e} (tolerance {tol:g})")

    def fr_inference():
        layer.forward(x, training=False)

    def fr_train():
        layer.zero_grad()
        layer.forward(x)
        layer.backward(dy)

    def torch_inference():
        with torch.inference_mode():
            module(xt)

    def torch_train():
        module.zero_grad(set_to_none=True)
        xt_train.grad = None
        out, _ = module(xt_train)
        out.backward(dyt)

    out = {"fusedrnn": {"inference": fr_inference, "train": fr_train},
           "torch": {"inference": torch_inference, "train": torch_train}}
    if dtype == "float32":  # ONNX Runtime's GRU kernel is float32 only
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy pool
        sess = ort.InferenceSession(fr.onnx.to_model(layer).SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        Y = sess.run(["Y"], {"X": x})[0]
        ort_err = float(np.max(np.abs(Y - y)))
        if ort_err > tol:
            raise SystemExit(f"fusedrnn and ONNX Runtime disagree: max |y| diff {ort_err:.2e}")
        out["ort"] = {"inference": lambda: sess.run(["Y"], {"X": x})}
    return out


def time_calls(fn: Callable[[], object], n: int) -> List[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(cases: Dict[str, Tuple[int, int, int, int, str]], threads: int, rounds: int,
        repeats: int) -> List[dict]:
    import torch
    import fusedrnn as fr
    torch.set_num_threads(threads)
    fr.set_num_threads(threads)
    rows = []
    for name, (T, B, I, H, dtype) in cases.items():
        calls = competitors(T, B, I, H, dtype, threads)
        times: Dict[Tuple[str, str], List[float]] = {}
        for fns in calls.values():  # warm-up: one untimed call of each
            for fn in fns.values():
                fn()
        for _ in range(rounds):     # the competitors take turns
            for comp, fns in calls.items():
                for mode, fn in fns.items():
                    times.setdefault((comp, mode), []).extend(time_calls(fn, repeats))
        for mode in MODES:
            med = {c: statistics.median(times[(c, mode)]) for c in calls if (c, mode) in times}
            rows.append({"case": name, "dims": f"T={T} B={B} I={I} H={H} {dtype}", "mode": mode,
                         "ms": {c: 1e3 * m for c, m in med.items()},
                         "ratio": {c: m / med["fusedrnn"] for c, m in med.items() if c != "fusedrnn"}})
        for r in rows[-len(MODES):]:  # progress, as each case ends
            print(f"{name} {r['mode']}: " + ", ".join(f"{c} {t:.3f} ms" for c, t in r["ms"].items()),
                  file=sys.stderr, flush=True)
    return rows


def markdown(rows: List[dict], threads: int, rounds: int, repeats: int, load: float) -> str:
    lines = [f"GRU (linear_before_reset=True), CPU: {cpu_model()}, {threads} thread(s), "
             f"git {git_revision()}; {rounds} rounds x {repeats} calls per competitor, medians; "
             f"1-min load average at the start {load:.2f}",
             "",
             "| case | mode | fusedrnn (ms) | torch (ms) | ORT (ms) | torch / fusedrnn | ORT / fusedrnn |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ms, ratio = r["ms"], r["ratio"]
        cell = lambda d, k, f: f.format(d[k]) if k in d else "-"
        lines.append(f"| {r['case']} ({r['dims']}) | {r['mode']} | {ms['fusedrnn']:.3f} | "
                     f"{cell(ms, 'torch', '{:.3f}')} | {cell(ms, 'ort', '{:.3f}')} | "
                     f"{cell(ratio, 'torch', '{:.2f}x')} | {cell(ratio, 'ort', '{:.2f}x')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per competitor per round")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 1 round, 2 repeats")
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    cases = dict(QUICK if args.quick else CASES)
    if args.cases:
        names = [c.strip() for c in args.cases.split(",")]
        unknown = [n for n in names if n not in cases]
        if unknown:
            ap.error(f"unknown cases {unknown}; known: {list(cases)}")
        cases = {n: cases[n] for n in names}
    rounds, repeats = (1, 2) if args.quick else (args.rounds, args.repeats)
    load = os.getloadavg()[0]
    rows = run(cases, args.threads, rounds, repeats)
    text = markdown(rows, args.threads, rounds, repeats, load)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
