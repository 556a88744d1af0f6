#!/usr/bin/env python3
"""Benchmark: fusedrnn's LSTM against torch.nn.LSTM on the CPU, one problem size.

    python bench/bench_lstm.py                     # T=100 B=32 I=256 H=256 float32, 2 threads
    python bench/bench_lstm.py --threads 1 --H 512
    python bench/bench_lstm.py --quick             # smoke run: T=20 B=4 I=H=64, 5 repeats

Two measurements per competitor, each the median of `--repeats` timed calls
(time.perf_counter around one call, after `--warmup` untimed calls):

  inference   one forward over the whole sequence, nothing kept for a backward
              (fusedrnn: forward(x, training=False); torch: under torch.inference_mode()).
  train_step  zero the weight gradients, forward storing activations, backward of a
              fixed random dE/dy down to dx and the weight gradients
              (fusedrnn: zero_grad + forward + backward(dy);
               torch: zero_grad(set_to_none=True) + forward + y.backward(dy), x.requires_grad).

Before anything is timed, the parent process builds the torch module, maps it with
fr.LSTM.from_torch, and checks that both give the same output (and gradients);
it refuses to time on a mismatch. The checked weights and data are then written to a
temporary .npz and every competitor is timed in its own subprocess
(`--worker NAME --problem FILE`, one JSON line on stdout) with the same thread count,
so the thread pools of different libraries never share a process.

To add a competitor: write a `bench_<name>(case, settings, problem) -> dict` worker
function, give it its weights in `write_problem`, and register it in COMPETITORS.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

# What is timed, in table order, with the label printed in the table.
MEASUREMENTS = {
    "inference": "inference forward",
    "train_step": "training step (fwd + bwd)",
}
BASELINE = "fusedrnn"  # ratios are other / baseline: > 1 means the baseline is faster
TOLERANCE = 1e-4       # on max |y_fusedrnn - y_torch| (and on relative gradient errors)
SEED = 0
NOISY_IQR = 0.2        # warn when a timing's IQR exceeds this fraction of its median (n >= 10)


# ---------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One problem: sequence length T, batch B, input size I, hidden size H, dtype."""

    T: int = 100
    B: int = 32
    I: int = 256
    H: int = 256
    dtype: str = "float32"

    def label(self) -> str:
        return f"T={self.T} B={self.B} I={self.I} H={self.H} {self.dtype}"


@dataclass(frozen=True)
class Settings:
    """How a case is timed (the same for every competitor)."""

    threads: int = 2
    repeats: int = 20
    warmup: int = 3


QUICK_CASE = Case(T=20, B=4, I=64, H=64)
QUICK_REPEATS = 5


# ---------------------------------------------------------------------------- timing
def time_calls(fn: Callable[[], object], settings: Settings) -> Dict[str, float]:
    """Per-call wall times of `fn` in seconds: median, min, quartiles (GC off while timing)."""
    for _ in range(settings.warmup):
        fn()
    times: List[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(settings.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    times.sort()
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"median": statistics.median(times), "min": times[0], "q1": q1, "q3": q3,
            "n": len(times)}


# ---------------------------------------------------------------------------- problem
def make_data(case: Case) -> Dict[str, np.ndarray]:
    """The input sequence x (T, B, I) and the fixed dE/dy (T, B, H)."""
    rng = np.random.default_rng(SEED)
    dt = np.dtype(case.dtype)
    return {"x": rng.standard_normal((case.T, case.B, case.I)).astype(dt),
            "dy": rng.standard_normal((case.T, case.B, case.H)).astype(dt)}


def make_torch_module(case: Case):
    import torch
    torch.manual_seed(SEED)
    return torch.nn.LSTM(case.I, case.H, dtype=getattr(torch, case.dtype))


def check_agreement(case: Case, module, layer, data: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Run both implementations once (inference and a training step) on the same
    weights and data; max abs differences of y, relative ones of the gradients."""
    import torch

    def rel(a, b) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))

    x, dy = data["x"], data["dy"]
    with torch.inference_mode():
        y_ref = module(torch.from_numpy(x))[0].numpy()
    y_inf, _ = layer.forward(x, training=False)

    xt = torch.from_numpy(x.copy()).requires_grad_()
    module.zero_grad(set_to_none=True)
    y_t, _ = module(xt)
    y_t.backward(torch.from_numpy(dy))
    layer.zero_grad()
    y_tr, _ = layer.forward(x)
    dx, _ = layer.backward(dy)

    g = layer.grads
    return {
        "y inference (abs)": float(np.max(np.abs(y_inf - y_ref))),
        "y training (abs)": float(np.max(np.abs(y_tr - y_t.detach().numpy()))),
        "dx (rel)": rel(dx, xt.grad.numpy()),
        "dW_x (rel)": rel(g["W_x"], module.weight_ih_l0.grad.numpy()),
        "dW_v (rel)": rel(g["W_v"], module.weight_hh_l0.grad.numpy()),
        "db (rel)": rel(g["b"], module.bias_ih_l0.grad.numpy()),
    }


def write_problem(path: str, module, layer, data: Mapping[str, np.ndarray]) -> None:
    """Save the checked weights (per competitor, `<name>.<param>`) and the data."""
    arrays = dict(data)
    for name, p in module.state_dict().items():
        arrays[f"torch.{name}"] = p.detach().numpy()
    for name, p in layer.params.items():
        arrays[f"fusedrnn.{name}"] = p
    np.savez(path, **arrays)


def load_problem(path: str) -> Dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def params_of(problem: Mapping[str, np.ndarray], competitor: str) -> Dict[str, np.ndarray]:
    prefix = competitor + "."
    return {k[len(prefix):]: v for k, v in problem.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------- competitors
# Each runs inside its own worker process and returns a JSON-able dict with the
# library version, the thread counts actually in effect, and one timing per MEASUREMENTS key.
def bench_fusedrnn(case: Case, settings: Settings, problem: Mapping[str, np.ndarray]) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    import fusedrnn as fr

    layer = fr.LSTM(case.I, case.H, peepholes=False, dtype=np.dtype(case.dtype), seed=SEED)
    for name, value in params_of(problem, "fusedrnn").items():
        layer.params[name][...] = value
    x, dy = problem["x"], problem["dy"]

    def inference():
        layer.forward(x, training=False)

    def train_step():
        layer.zero_grad()
        layer.forward(x)
        layer.backward(dy)

    with threadpool_limits(limits=settings.threads, user_api="blas"):
        blas = sorted({info["num_threads"] for info in threadpool_info()
                       if info["user_api"] == "blas"})
        timings = {"inference": time_calls(inference, settings),
                   "train_step": time_calls(train_step, settings)}
    return {"version": fr.__version__, "threads": {"blas": blas}, "timings": timings}


def bench_torch(case: Case, settings: Settings, problem: Mapping[str, np.ndarray]) -> dict:
    import torch

    torch.set_num_threads(settings.threads)
    module = torch.nn.LSTM(case.I, case.H, dtype=getattr(torch, case.dtype))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params_of(problem, "torch").items()})
    x = torch.from_numpy(problem["x"])
    x_train = x.clone().requires_grad_()
    dy = torch.from_numpy(problem["dy"])

    def inference():
        with torch.inference_mode():
            module(x)

    def train_step():
        module.zero_grad(set_to_none=True)
        x_train.grad = None
        y, _ = module(x_train)
        y.backward(dy)

    timings = {"inference": time_calls(inference, settings),
               "train_step": time_calls(train_step, settings)}
    return {"version": torch.__version__, "threads": {"intra-op": [torch.get_num_threads()]},
            "timings": timings}


COMPETITORS: Dict[str, Callable[[Case, Settings, Mapping[str, np.ndarray]], dict]] = {
    "fusedrnn": bench_fusedrnn,
    "torch": bench_torch,
}


# ---------------------------------------------------------------------------- processes
def worker_argv(name: str, problem_path: str, case: Case, settings: Settings) -> List[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--worker", name, "--problem", problem_path]
    for field, value in {**dataclasses.asdict(case), **dataclasses.asdict(settings)}.items():
        argv += [f"--{field}", str(value)]
    return argv


def run_worker(name: str, problem_path: str, case: Case, settings: Settings) -> dict:
    """Time one competitor in a fresh interpreter; its result is the last stdout line."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(settings.threads)
    proc = subprocess.run(worker_argv(name, problem_path, case, settings), env=env,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {name!r} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")
    result = json.loads(lines[-1])
    for pool, counts in result["threads"].items():
        if counts != [settings.threads]:
            raise RuntimeError(f"worker {name!r} ran {pool} with {counts} threads, "
                               f"not {settings.threads}")
    return result


def worker_main(name: str, case: Case, settings: Settings, problem_path: str) -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # only the JSON result goes to the real stdout
    result = COMPETITORS[name](case, settings, load_problem(problem_path))
    out.write(json.dumps({"competitor": name, **result}) + "\n")
    out.flush()


# ---------------------------------------------------------------------------- report
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def git_revision() -> str:
    """Short commit of the checkout this script lives in, "+dirty" with local changes."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def markdown_report(case: Case, settings: Settings, results: Mapping[str, dict]) -> str:
    others = [n for n in results if n != BASELINE]
    header = ["measurement"] + [f"{n} (ms)" for n in results] + [f"{n} / {BASELINE}" for n in others]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for key, label in MEASUREMENTS.items():
        med = {n: r["timings"][key]["median"] for n, r in results.items()}
        rows.append([label] + [f"{1e3 * med[n]:.3f}" for n in results]
                    + [f"{med[n] / med[BASELINE]:.2f}x" for n in others])
    versions = ", ".join(f"{n} {r['version']}" for n, r in results.items())
    versions = versions.replace(f"{BASELINE} {results[BASELINE]['version']}",
                                f"{BASELINE} {results[BASELINE]['version']} (git {git_revision()})")
    lines = [f"LSTM {case.label()} | CPU: {cpu_model()} | {settings.threads} thread(s)",
             f"median of {settings.repeats} calls after {settings.warmup} warm-up; {versions}",
             ""]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    noisy = [f"{n} {key} (IQR {100 * spread:.0f}% of median)"
             for n, r in results.items() for key, t in r["timings"].items()
             if t["n"] >= 10 and (spread := (t["q3"] - t["q1"]) / t["median"]) > NOISY_IQR]
    if noisy:
        lines += ["", "noisy timings, is the machine busy? " + "; ".join(noisy)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, help=f"sequence length (default {Case.T})")
    p.add_argument("--B", type=int, help=f"batch size (default {Case.B})")
    p.add_argument("--I", type=int, help=f"input size (default {Case.I})")
    p.add_argument("--H", type=int, help=f"hidden size (default {Case.H})")
    p.add_argument("--dtype", choices=("float32", "float64"), default=Case.dtype)
    p.add_argument("--threads", type=int, default=Settings.threads,
                   help="threads for every competitor (default %(default)s)")
    p.add_argument("--repeats", type=int, help=f"timed calls (default {Settings.repeats})")
    p.add_argument("--warmup", type=int, default=Settings.warmup,
                   help="untimed calls first (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_CASE.label()}, {QUICK_REPEATS} repeats "
                        "(explicit options still win)")
    p.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    p.add_argument("--worker", choices=sorted(COMPETITORS), help=argparse.SUPPRESS)
    p.add_argument("--problem", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("T", "B", "I", "H", "threads", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.worker and not args.problem:
        p.error("--worker needs --problem")
    return args


def case_and_settings(args: argparse.Namespace):
    base = QUICK_CASE if args.quick else Case()
    case = Case(**{f: getattr(args, f) if getattr(args, f) is not None else getattr(base, f)
                   for f in ("T", "B", "I", "H")}, dtype=args.dtype)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else Settings.repeats)
    return case, Settings(threads=args.threads, repeats=repeats, warmup=args.warmup)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    case, settings = case_and_settings(args)
    if args.worker:
        worker_main(args.worker, case, settings, args.problem)
        return 0

    import torch
    from threadpoolctl import threadpool_limits

    import fusedrnn as fr

    torch.set_num_threads(settings.threads)
    data = make_data(case)
    module = make_torch_module(case)
    layer = fr.LSTM.from_torch(module)
    with threadpool_limits(limits=settings.threads, user_api="blas"):
        diffs = check_agreement(case, module, layer, data)
    print("check fr.LSTM.from_torch(torch.nn.LSTM) vs torch.nn.LSTM: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        print(f"MISMATCH (> {TOLERANCE:g}): {bad}; not timing", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="bench_lstm_") as tmp:
        problem_path = os.path.join(tmp, "problem.npz")
        write_problem(problem_path, module, layer, data)
        results = {name: run_worker(name, problem_path, case, settings) for name in COMPETITORS}

    print()
    print(markdown_report(case, settings, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"case": dataclasses.asdict(case), "settings": dataclasses.asdict(settings),
                       "cpu": cpu_model(), "git": git_revision(), "check": diffs, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
