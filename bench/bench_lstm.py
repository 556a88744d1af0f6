#!/usr/bin/env python3
"""Benchmark: fusedrnn's LSTM against torch.nn.LSTM on the CPU, one problem size.

    python bench/bench_lstm.py                     # T=100 B=32 I=256 H=256 float32, 2 threads
    python bench/bench_lstm.py --threads 1 --H 512
    python bench/bench_lstm.py --quick             # smoke run: T=20 B=4 I=H=64, 5 repeats

A one-size slice of the suite (run.py), with its problem, its correctness check and its worker
processes: the parent builds a torch.nn.LSTM (seed 0), maps it with fr.LSTM.from_torch and
refuses to time unless both (and ONNX Runtime) agree; then fusedrnn and torch are each timed in
their own process with the same thread count. Each number is the median of `--repeats` timed
calls after `--warmup` untimed ones:

  inference   one forward over the whole sequence, nothing kept for a backward
  train_step  zero the weight gradients, forward storing activations, backward of a fixed
              random dE/dy down to dx and the weight gradients
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from typing import Mapping, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import Case  # noqa: E402
from problems import check_case  # noqa: E402
from report import NOISY_IQR, cpu_model, git_revision  # noqa: E402
from workers import Worker  # noqa: E402

# What is timed, in table order: the suite's mode -> the name here and its label.
MEASUREMENTS = {"inference": ("inference", "inference forward"),
                "train": ("train_step", "training step (fwd + bwd)")}
COMPETITORS = ("fusedrnn", "torch")
BASELINE = "fusedrnn"  # ratios are other / baseline: > 1 means the baseline is faster
TOLERANCE = 1e-4       # on max |y_fusedrnn - y_torch| (and on relative gradient errors)
DEFAULT = {"T": 100, "B": 32, "I": 256, "H": 256}
QUICK = {"T": 20, "B": 4, "I": 64, "H": 64}
REPEATS, QUICK_REPEATS = 20, 5


def markdown_report(case: Case, threads: int, repeats: int, warmup: int,
                    results: Mapping[str, dict]) -> str:
    others = [n for n in results if n != BASELINE]
    header = ["measurement"] + [f"{n} (ms)" for n in results] + [f"{n} / {BASELINE}" for n in others]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for mode, (_, label) in MEASUREMENTS.items():
        med = {n: r["timings"][mode]["median"] for n, r in results.items()}
        rows.append([label] + [f"{1e3 * med[n]:.3f}" for n in results]
                    + [f"{med[n] / med[BASELINE]:.2f}x" for n in others])
    versions = ", ".join(f"{n} {r['version']}" + (f" (git {git_revision()})" if n == BASELINE else "")
                         for n, r in results.items())
    lines = [f"LSTM T={case.T} B={case.B} I={case.I} H={case.H} {case.dtype} | CPU: {cpu_model()} | "
             f"{threads} thread(s)",
             f"median of {repeats} calls after {warmup} warm-up; {versions}", ""]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    noisy = [f"{n} {MEASUREMENTS[mode][0]} (IQR {100 * t['iqr_rel']:.0f}% of median)"
             for n, r in results.items() for mode, t in r["timings"].items()
             if t["n"] >= 10 and t["iqr_rel"] > NOISY_IQR]
    if noisy:
        lines += ["", "noisy timings, is the machine busy? " + "; ".join(noisy)]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for dim, what in (("T", "sequence length"), ("B", "batch size"), ("I", "input size"),
                      ("H", "hidden size")):
        p.add_argument(f"--{dim}", type=int, help=f"{what} (default {DEFAULT[dim]})")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for every competitor (default %(default)s)")
    p.add_argument("--repeats", type=int, help=f"timed calls (default {REPEATS})")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: T={QUICK['T']} B={QUICK['B']} I={QUICK['I']} H={QUICK['H']}, "
                        f"{QUICK_REPEATS} repeats (explicit options still win)")
    p.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    args = p.parse_args(argv)
    for name in ("T", "B", "I", "H", "threads", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else DEFAULT
    dims = {d: getattr(args, d) or base[d] for d in DEFAULT}
    case = Case("custom", "float64" if args.dtype == "float64" else "plain", **dims)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    try:
        diffs, arrays = check_case(case, args.threads, TOLERANCE)
    except RuntimeError as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        return 1
    print("check fr.LSTM.from_torch(torch.nn.LSTM) vs torch.nn.LSTM: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))

    job = {"case": dataclasses.asdict(case), "budget": 0.0, "min_rep": repeats,
           "max_rep": repeats, "warmup": args.warmup}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_lstm_") as tmp:
        job["problem"] = os.path.join(tmp, "problem.npz")
        np.savez(job["problem"], **arrays)
        for name in COMPETITORS:
            worker = Worker(name, args.threads, tmp)
            try:
                results[name] = worker.run(job)
            finally:
                worker.close()

    print()
    print(markdown_report(case, args.threads, repeats, args.warmup, results))
    if args.json:
        for r in results.values():
            r["timings"] = {MEASUREMENTS[m][0]: t for m, t in r["timings"].items()}
        settings = {"threads": args.threads, "repeats": repeats, "warmup": args.warmup}
        with open(args.json, "w") as f:
            json.dump({"case": {**dims, "dtype": case.dtype}, "settings": settings, "cpu": cpu_model(),
                       "git": git_revision(), "check": diffs, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
