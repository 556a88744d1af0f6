"""Timing: per-call wall times of a function, their statistics, the pooling of rounds, and
how busy the rest of the machine is."""
from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Callable, List, Optional, Tuple

BUSY_BACKGROUND = 0.1  # a job is flagged when other processes used > 10% of the machine

def measure(fn: Callable[[], object], budget: float, min_rep: int, max_rep: int,
            warmup: Optional[int] = None) -> dict:
    """Per-call wall times of fn (seconds). Warm-up: one call, plus more while cheap (up to
    10% of the budget, at most 4), or exactly `warmup` calls. Repeats: budget / (fastest
    warm-up call), clamped to [min_rep, max_rep]. GC off while timing."""
    warm: List[float] = []
    for _ in range(5 if warmup is None else warmup):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
        if warmup is None and sum(warm) > 0.1 * budget:
            break
    est = min(warm) if warm else budget
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

