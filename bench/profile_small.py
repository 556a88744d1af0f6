#!/usr/bin/env python3
"""CPU-time profile of one-thread inference at a small size (default T=100, B=1, I=64, H=128):
fr.GRU and fr.LSTM against torch.nn.GRU / torch.nn.LSTM and ONNX Runtime's GRU / LSTM node,
and the int8 LSTM (`lstm.quantize("int8")`) against ONNX Runtime's int8 LSTM (the exported
model through `quantize_dynamic`, a DynamicQuantizeLSTM node, as bench/reduced.py), all in
this one process, taking turns call by call, timed with time.process_time (CPU time,
which a shared host inflates far less than wall time), plus fusedrnn's breakdown: the kernel
call alone on preallocated buffers (with the packed weights an inference call keeps), at T and
at T = 1 (the fixed cost of a call, the rest divided by T - 1 is the cost of a step).

    python bench/profile_small.py                     # small, 1 thread, 2000 calls per row
    python bench/profile_small.py --T 100 --B 1 --I 64 --H 128 --calls 500

Prints a Markdown table of medians (µs) and the ratios against fusedrnn. One thread only:
the competitors share this process, and idle thread pools would spin in it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import Case  # noqa: E402
from problems import make_torch, onnx_model, ort_session  # noqa: E402


def calls(T: int, B: int, I: int, H: int) -> Dict[str, Callable[[], object]]:
    """{row: one call}, every fusedrnn row checked against torch first."""
    import torch
    import fusedrnn as fr
    torch.set_num_threads(1)
    fr.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    xt = torch.from_numpy(x)
    out: Dict[str, Callable[[], object]] = {}
    for cell, cls in (("gru", fr.GRU), ("lstm", fr.LSTM)):
        case = Case("small", "plain", T, B, I, H, cell=cell)
        module = make_torch(case)
        layer = cls.from_torch(module)
        y, _ = layer.forward(x, training=False)
        with torch.inference_mode():
            y_t = module(xt)[0].numpy()
        assert np.max(np.abs(y - y_t)) < 1e-4, cell
        sess = ort_session(onnx_model(case, layer.params), 1)
        assert np.max(np.abs(sess.run(["Y"], {"X": x})[0][:, 0] - y)) < 1e-4, cell

        def fr_call(layer=layer):
            layer.forward(x, training=False)

        def torch_call(module=module):
            with torch.inference_mode():
                module(xt)

        out[f"fusedrnn {cell}"] = fr_call
        out[f"torch {cell}"] = torch_call
        out[f"ORT {cell}"] = lambda sess=sess: sess.run(["Y"], {"X": x})
        # the kernel alone, on buffers made once (no validation, allocation or state copies)
        for steps in (T, 1):
            xs = np.ascontiguousarray(x[:steps])
            out[f"kernel {cell} T={steps}"] = layer_kernel_call(layer, xs, steps, B, H)
        if cell == "lstm":
            out.update(int8_calls(case, layer, x))
    return out


def int8_calls(case: Case, layer, x: np.ndarray) -> Dict[str, Callable[[], object]]:
    """The int8 LSTM rows: fusedrnn's quantized layer and ORT's DynamicQuantizeLSTM of the
    same float weights (each checked near the float layer)."""
    import tempfile
    from reduced import ort_int8_model
    q = layer.quantize("int8")
    y_f, _ = layer.forward(x, training=False)
    assert np.max(np.abs(q.forward(x, training=False)[0] - y_f)) < 5e-2
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(ort_int8_model(onnx_model(case, layer.params), tmp), 1)
    assert np.max(np.abs(sess.run(["Y"], {"X": x})[0][:, 0] - y_f)) < 5e-2
    return {"fusedrnn int8": lambda: q.forward(x, training=False),
            "ORT int8": lambda: sess.run(["Y"], {"X": x})}


def layer_kernel_call(layer, xs: np.ndarray, steps: int, B: int, H: int) -> Callable[[], object]:
    """The cell's kernel call through the layer's own _kernel_forward, on buffers made once,
    with the packed weights an inference forward keeps (where the call packs: T >= 8)."""
    from fusedrnn import _kernel
    cfg = layer._cell_config(steps, B, xs.shape[2], None, False)
    work = np.empty(cfg.sizes()[2], np.float32)
    y = np.empty((steps, B, H), np.float32)
    s_T, o_T = np.empty((B, H), np.float32), np.empty((B, H), np.float32)
    z = np.zeros((B, H), np.float32)
    p = layer._cell_dict(layer.params, 0, 0)
    if hasattr(layer, "_pack_weights") and _kernel.packs_weights(steps, B):  # kept packs
        packed = layer._pack_weights(cfg, p)
        return lambda: layer._kernel_forward(cfg, y, s_T, o_T, None, work, xs, z, z, p, packed)
    return lambda: layer._kernel_forward(cfg, y, s_T, o_T, None, work, xs, z, z, p)


def profile(fns: Dict[str, Callable[[], object]], n: int) -> Dict[str, float]:
    """Median CPU seconds per call of each row, the rows taking turns call by call."""
    for fn in fns.values():
        for _ in range(20):
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    clock = time.process_time
    for _ in range(n):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--I", type=int, default=64)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    fns = calls(args.T, args.B, args.I, args.H)
    # process_time ticks coarsely on some kernels: time groups of calls when a call is short
    group = 10
    grouped = {k: (lambda fn=fn: [fn() for _ in range(group)]) for k, fn in fns.items()}
    med = {k: v / group for k, v in profile(grouped, max(1, args.calls // group)).items()}
    load = os.getloadavg()[0]
    print(f"T={args.T} B={args.B} I={args.I} H={args.H} float32, 1 thread, CPU time "
          f"(process_time), medians of {args.calls // group} groups of {group} calls taking "
          f"turns; load average {load:.1f}\n")
    print("| row | µs per call | / fusedrnn of its cell |")
    print("| --- | ---: | ---: |")
    for k, v in med.items():
        cell = k.split()[1]
        print(f"| {k} | {1e6 * v:.1f} | {v / med['fusedrnn ' + cell]:.2f} |")
    for cell in ("gru", "lstm"):
        kT, k1 = med[f"kernel {cell} T={args.T}"], med[f"kernel {cell} T=1"]
        step = (kT - k1) / max(1, args.T - 1)
        print(f"\n{cell}: kernel per step {1e6 * step:.2f} µs, fixed per kernel call "
              f"{1e6 * (k1 - step):.1f} µs, Python layer around it "
              f"{1e6 * (med['fusedrnn ' + cell] - kT):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
