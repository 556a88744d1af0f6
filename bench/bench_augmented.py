#!/usr/bin/env python3
"""The cost of the paper's augmented LSTM next to the plain LSTM, same process,
same BLAS threads:

    python bench/bench_augmented.py [--T 100 --B 32 --I 256 --H 256 --threads 2]

Configurations: plain (no peepholes), diagonal peepholes, and the augmented
configuration (projection P = H/2 + context window (2, 2) + diagonal peepholes),
plus full peepholes. Each: inference forward and training step (forward +
backward), medians of --repeats calls. Ratios are against the plain LSTM."""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fusedrnn as fr


def median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--I", type=int, default=256)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    from threadpoolctl import threadpool_limits

    configs = {
        "plain": dict(peepholes=None),
        "diagonal peepholes": dict(peepholes="diagonal"),
        "augmented: proj H/2 + context (2,2) + peepholes": dict(
            peepholes="diagonal", proj_size=a.H // 2, context=(2, 2)),
        "full peepholes": dict(peepholes="full"),
    }
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.T, a.B, a.I)).astype(a.dtype)
    print(f"fusedrnn {fr.__version__}: T={a.T} B={a.B} I={a.I} H={a.H} {a.dtype}, "
          f"{a.threads} BLAS thread(s), median of {a.repeats}")
    print("| configuration | inference (ms) | training step (ms) | vs plain (inf / train) |")
    print("| --- | ---: | ---: | ---: |")
    base = None
    with threadpool_limits(a.threads, "blas"):
        for name, opts in configs.items():
            lstm = fr.LSTM(a.I, a.H, dtype=a.dtype, seed=0, **opts)
            dy = rng.standard_normal((a.T, a.B, lstm.output_size)).astype(a.dtype)

            def step():
                lstm.zero_grad()
                lstm.forward(x)
                lstm.backward(dy)

            t_inf = median_ms(lambda: lstm.forward(x, training=False), a.repeats, a.warmup)
            t_train = median_ms(step, a.repeats, a.warmup)
            base = base or (t_inf, t_train)
            print(f"| {name} | {t_inf:.2f} | {t_train:.2f} | "
                  f"{t_inf / base[0]:.2f}x / {t_train / base[1]:.2f}x |")


if __name__ == "__main__":
    main()
