"""A few seconds of training: an LSTM learns to recall its input from `delay`
steps ago (a memory task a feed-forward model cannot solve), and the loss falls.

    python -m fusedrnn.demo [--seconds 5] [--delay 8]
"""
from __future__ import annotations

import argparse
import time
from typing import Dict

import numpy as np

import fusedrnn as fr


def _adam_step(params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray], state: dict,
               lr: float = 1e-2, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    """One Adam update, in place (the optimisers proper live in a later module)."""
    state["t"] = state.get("t", 0) + 1
    for k, p in params.items():
        m = state.setdefault(("m", k), np.zeros_like(p))
        v = state.setdefault(("v", k), np.zeros_like(p))
        m[...] = b1 * m + (1 - b1) * grads[k]
        v[...] = b2 * v + (1 - b2) * grads[k] ** 2
        m_hat = m / (1 - b1 ** state["t"])
        v_hat = v / (1 - b2 ** state["t"])
        p -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(p.dtype)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="training time budget")
    ap.add_argument("--delay", type=int, default=8, help="how many steps back to recall")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    T, B, H = 40, 32, 64
    # A model this small runs fastest on one core: the per-step GEMMs are far too
    # small for a BLAS thread pool (whose spinning workers also suffer when the
    # machine is busy).
    fr.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    lstm = fr.LSTM(input_size=1, hidden_size=H, peepholes=True, dtype=np.float32, seed=args.seed)
    # Linear readout y = v W_o^T + b_o, trained together with the LSTM.
    head = {"W_o": (rng.standard_normal((1, H)) / np.sqrt(H)).astype(np.float32),
            "b_o": np.zeros(1, np.float32)}
    params = {**lstm.params, **head}
    opt_state: dict = {}
    print(f"fusedrnn {fr.__version__}: LSTM(1 -> {H}, peepholes) learns to output its input "
          f"from {args.delay} steps ago (T={T}, B={B}, GEMM: {fr.get_gemm()})")
    start, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - start < args.seconds:
        x = rng.uniform(-1, 1, (T, B, 1)).astype(np.float32)
        target = np.zeros_like(x)
        target[args.delay:] = x[:-args.delay]
        v, _ = lstm.forward(x)                          # (T, B, H)
        y = v @ head["W_o"].T + head["b_o"]             # (T, B, 1)
        err = y - target
        losses.append(float(np.mean(err[args.delay:] ** 2)))
        dy = np.zeros_like(err)
        dy[args.delay:] = 2 * err[args.delay:] / err[args.delay:].size
        lstm.zero_grad()
        lstm.backward(dy @ head["W_o"])                 # dE/dv (T, B, H)
        grads = {**lstm.grads,
                 "W_o": np.einsum("tbo,tbh->oh", dy, v),
                 "b_o": dy.sum(axis=(0, 1))}
        _adam_step(params, grads, opt_state)
        step += 1
        if step == 1 or step % 100 == 0:
            print(f"  step {step:5d}  {time.perf_counter() - start:5.1f} s  "
                  f"loss {np.mean(losses[-20:]):.5f}")
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"done: {step} steps in {time.perf_counter() - start:.1f} s, "
          f"loss {first:.4f} -> {last:.4f} (a model that ignores the input scores ~0.333)")


if __name__ == "__main__":
    main()
