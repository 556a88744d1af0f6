"""A few seconds of training: an LSTM learns to recall its input from `delay`
steps ago (a memory task a feed-forward model cannot solve), and the loss falls.

    python -m fusedrnn.demo [--seconds 5] [--delay 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional

import numpy as np

import fusedrnn as fr
from fusedrnn import _kernel

ISA_NAMES = {0: "baseline C", 1: "AVX2+FMA", 2: "AVX-512"}


def kernel_summary() -> str:
    """What runs a peephole LSTM's GEMMs here: the packed micro-kernel with the tiles picked
    for this CPU, on fr.get_num_threads() threads. The RNN, full peepholes and calls shorter
    than 8 steps use fr.get_gemm() ("blas": SciPy's BLAS, or the "portable" loops)."""
    isa = _kernel.get_isa()
    n = fr.get_num_threads()
    return (f"packed micro-kernel, {ISA_NAMES.get(isa, f'ISA level {isa}')} tiles, "
            f"{n} thread{'s' if n > 1 else ''} (RNN, full peepholes: {fr.get_gemm()})")


def build(hidden: int, seed: int) -> fr.Sequential:
    """LSTM(1 -> hidden, diagonal peepholes) with a Linear read-out to one value per step."""
    return fr.Sequential(fr.LSTM(1, hidden, peepholes=True, dtype=np.float32, seed=seed),
                         fr.Linear(hidden, 1, seed=seed + 1))


def batch(rng: np.random.Generator, T: int, B: int, delay: int):
    """x (T, B, 1) uniform in [-1, 1]; target[n] = x[n - delay]; mask (T, B): steps n >= delay."""
    x = rng.uniform(-1, 1, (T, B, 1)).astype(np.float32)
    target = np.zeros_like(x)
    target[delay:] = x[:-delay]
    mask = np.zeros((T, B), bool)
    mask[delay:] = True
    return x, target, mask


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--delay", type=int, default=8, help="how many steps back to recall")
    ap.add_argument("--threads", type=int, default=1,
                    help="cores for the kernel (a model this small runs fastest on one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 1 <= args.delay < 40:
        ap.error("--delay must be in 1..39")

    T, B, H = 40, 32, 64
    threads = fr.get_num_threads()
    # The per-step GEMMs of a model this small are far too small to share between cores.
    fr.set_num_threads(args.threads)
    try:
        rng = np.random.default_rng(args.seed)
        model = build(H, args.seed)
        opt = fr.optim.Adam(model, lr=1e-2)
        print(f"fusedrnn {fr.__version__}: LSTM(1 -> {H}, peepholes) learns to output its input "
              f"from {args.delay} steps ago (T={T}, B={B})\n  kernel: {kernel_summary()}")
        start, step, losses = time.perf_counter(), 0, []
        while (time.perf_counter() - start < args.seconds if args.steps is None
               else step < args.steps):
            x, target, mask = batch(rng, T, B, args.delay)
            y, _ = model.forward(x)                       # (T, B, 1)
            loss, dy = fr.mse_loss(y, target, mask=mask)  # over the steps n >= delay
            model.zero_grad()
            model.backward(dy)
            opt.step()
            losses.append(loss)
            step += 1
            if step == 1 or step % 100 == 0:
                print(f"  step {step:5d}  {time.perf_counter() - start:5.1f} s  "
                      f"loss {np.mean(losses[-20:]):.5f}")
        first, last = np.mean(losses[:10]), np.mean(losses[-10:])
        print(f"done: {step} steps in {time.perf_counter() - start:.1f} s, "
              f"loss {first:.4f} -> {last:.4f} (a model that ignores the input scores ~0.333)")
        return {"losses": losses, "model": model}
    finally:
        fr.set_num_threads(threads)


if __name__ == "__main__":
    main()
