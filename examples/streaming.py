"""Streaming inference: a recurrent model on live input, one frame at a time.

A synthetic 16 kHz signal (a tone sweeping up and down, bursts of a second tone
and noise) is cut into 25 ms frames every 10 ms, and each frame becomes 40
log band energies, as a keyword spotter or an online speech model would see it.
An LSTM (I = 40, H = 128, B = 1, float32, one thread, random weights: the
latency does not depend on them) gets one frame at a time. Per frame, the
latency of the model call is measured for

- fusedrnn per-frame forward: `lstm.forward(x[n:n+1], state=state, training=False)`
- fusedrnn stream: `stream = lstm.stream(1)`, then `stream.step(frame, out=out)`;
  it checks before every step that the layer's weights are unchanged, and
  `lstm.stream(1, weights="snapshot")` (a copy of the weights, no check)
- fusedrnn stream with a look-ahead window, `context=(2, 4)`: the output of
  frame n comes with frame n + 4 (40 ms of algorithmic delay)
- the `fusedrnn.torch` module's stream, with tensors
- `torch.nn.LSTM` with the same weights, called per frame with its (h, c)

and reported as p50 / p99 / max with a latency histogram. The streamed outputs
are checked against one `forward` over the whole sequence.

    python examples/streaming.py              # 10,000 frames per method
    python examples/streaming.py --quick      # a few seconds (CI)
    python examples/streaming.py --realtime   # frames paced at 10 ms, as they would arrive

Writes examples/figures/streaming_latency.png and the table
examples/figures/streaming_latency.md (or --out DIR; --quick runs write to a new
temporary directory unless --out is given).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import fusedrnn as fr

HERE = os.path.dirname(os.path.abspath(__file__))
RATE, HOP, WIN, BANDS = 16000, 160, 400, 40          # 16 kHz, 10 ms hop, 25 ms window, 40 bands


def output_dir(out: Optional[str], quick: bool) -> str:
    """--out if given, else examples/figures (full run) or a new temporary directory (--quick)."""
    if out is not None:
        return out
    return tempfile.mkdtemp(prefix="fusedrnn-example-") if quick else os.path.join(HERE, "figures")


def signal(n_frames: int, seed: int) -> np.ndarray:
    """Samples of the synthetic signal covering n_frames frames."""
    rng = np.random.default_rng(seed)
    n = (n_frames - 1) * HOP + WIN
    t = np.arange(n) / RATE
    f = 300 + 250 * (1 + np.sin(2 * np.pi * 0.2 * t))            # the sweep, 300-800 Hz
    sweep = np.sin(2 * np.pi * np.cumsum(f) / RATE)
    bursts = (np.sin(2 * np.pi * 0.7 * t) > 0.6) * np.sin(2 * np.pi * 2500 * t)
    return (0.6 * sweep + 0.4 * bursts + 0.1 * rng.standard_normal(n)).astype(np.float32)


def features(samples: np.ndarray, n: int) -> np.ndarray:
    """Frame n: log energies of 40 bands of the Hann-windowed spectrum, (1, 40) float32."""
    frame = samples[n * HOP:n * HOP + WIN] * np.hanning(WIN)
    power = np.abs(np.fft.rfft(frame)) ** 2                       # 201 bins
    bands = np.add.reduceat(power[1:201], np.arange(0, 200, 200 // BANDS))
    return np.log(bands + 1e-6).astype(np.float32)[None, :]


def percentiles(us: np.ndarray) -> Dict[str, float]:
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99)),
            "max": float(us.max()), "mean": float(us.mean())}


def timed_loop(frames: List[np.ndarray], call: Callable[[Any], Any], realtime: bool) -> np.ndarray:
    """Per-frame latency (us) of call(frame), frames as they arrive (paced every 10 ms
    with realtime)."""
    lat = np.empty(len(frames))
    start = time.perf_counter()
    clock = time.perf_counter
    for n, frame in enumerate(frames):
        if realtime:
            due = start + n * HOP / RATE
            while clock() < due:
                time.sleep(max(0.0, min(due - clock() - 2e-4, 0.005)))
        t0 = clock()
        call(frame)
        lat[n] = (clock() - t0) * 1e6
    return lat


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds (CI)")
    ap.add_argument("--frames", type=int, default=None, help="frames per method (default 10000)")
    ap.add_argument("--hidden", type=int, default=128, help="LSTM hidden size H")
    ap.add_argument("--rounds", type=int, default=None, help="rounds over the methods, pooled")
    ap.add_argument("--realtime", action="store_true", help="pace the frames at 10 ms")
    ap.add_argument("--no-torch", action="store_true", help="leave out the PyTorch rows")
    ap.add_argument("--out", default=None,
                    help="directory of the PNG and the table (default: examples/figures; with "
                         "--quick a new temporary directory)")
    args = ap.parse_args(argv)
    args.out = output_dir(args.out, args.quick)
    n_frames = args.frames or (300 if args.quick else 10000)
    rounds = args.rounds or (1 if args.quick else 3)
    threads = fr.get_num_threads()
    fr.set_num_threads(1)
    try:
        return run(args, n_frames, rounds)
    finally:
        fr.set_num_threads(threads)   # the setting is process-wide (e.g. under pytest)


def run(args: argparse.Namespace, n_frames: int, rounds: int) -> Dict[str, Any]:
    H = args.hidden
    samples = signal(n_frames, seed=0)
    frames = [features(samples, n) for n in range(n_frames)]
    x = np.stack(frames)                                          # (T, 1, 40)
    x = (x - x.mean()) / x.std()
    frames = [np.ascontiguousarray(f) for f in x]
    lstm = fr.LSTM(BANDS, H, peepholes=None, seed=0)              # torch.nn.LSTM has no peepholes
    ctx = fr.LSTM(BANDS, H, peepholes=None, context=(2, 4), seed=0)

    # the streamed outputs equal one forward over the whole sequence
    whole, _ = lstm.forward(x, training=False)
    stream = lstm.stream(1)
    streamed = np.stack([stream.step(f) for f in frames])
    whole_ctx, _ = ctx.forward(x, training=False)
    cstream = ctx.stream(1)
    got = [y for y in (cstream.step(f) for f in frames) if y is not None]
    streamed_ctx = np.concatenate([np.stack(got), cstream.flush()])
    diff = max(float(np.abs(streamed - whole).max()), float(np.abs(streamed_ctx - whole_ctx).max()))
    whole_us = np.inf
    for _ in range(5):          # the best of a few: a busy host only ever adds time
        t0 = time.perf_counter()
        lstm.forward(x, training=False)
        whole_us = min(whole_us, (time.perf_counter() - t0) / n_frames * 1e6)

    methods: Dict[str, Callable[[], Callable[[Any], Any]]] = {}

    def per_frame_forward() -> Callable[[Any], Any]:
        box = [lstm.initial_state(1)]

        def call(f: np.ndarray) -> None:
            _, box[0] = lstm.forward(f[None], state=box[0], training=False)
        return call

    def stream_step(layer: Any, weights: str = "live") -> Callable[[], Callable[[Any], Any]]:
        def make() -> Callable[[Any], Any]:
            s, out = layer.stream(1, weights=weights), np.empty((1, H), np.float32)
            return lambda f: s.step(f, out=out)
        return make

    methods["fusedrnn forward per frame"] = per_frame_forward
    methods["fusedrnn stream"] = stream_step(lstm)
    methods["fusedrnn stream, snapshot weights"] = stream_step(lstm, "snapshot")
    methods["fusedrnn stream, context (2, 4)"] = stream_step(ctx)
    torch_frames = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            import fusedrnn.torch as frt
            torch.set_num_threads(1)
            torch_frames = [torch.from_numpy(f) for f in frames]
            module = frt.LSTM.from_fusedrnn(lstm)
            tlstm = lstm.to_torch()

            def frt_stream() -> Callable[[Any], Any]:
                s, out = module.stream(1), torch.empty(1, H)
                return lambda f: s.step(f, out=out)

            def torch_per_frame() -> Callable[[Any], Any]:
                box = [(torch.zeros(1, 1, H), torch.zeros(1, 1, H))]

                def call(f: Any) -> None:
                    with torch.inference_mode():
                        _, box[0] = tlstm(f[None], box[0])
                return call

            methods["fusedrnn.torch stream"] = frt_stream
            methods["torch.nn.LSTM per frame"] = torch_per_frame

    lat: Dict[str, List[np.ndarray]] = {m: [] for m in methods}
    for r in range(rounds):
        order = list(methods) if r % 2 == 0 else list(methods)[::-1]
        for name in order:
            inputs = torch_frames if ("torch" in name and torch_frames is not None) else frames
            lat[name].append(timed_loop(inputs, methods[name](), args.realtime))
    stats = {m: percentiles(np.concatenate(v)) for m, v in lat.items()}

    base = stats["fusedrnn stream"]["p50"]
    lines = [f"LSTM I = {BANDS}, H = {H}, B = 1, float32, 1 thread, {n_frames} frames x {rounds} "
             f"round(s){', paced at 10 ms' if args.realtime else ''}; one whole-sequence forward "
             f"(best of 5): {whole_us:.1f} us per frame", "",
             "| per frame | p50 (us) | p99 (us) | max (us) | p50 / stream's |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for m, s in stats.items():
        lines.append(f"| {m} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.0f} | "
                     f"{s['p50'] / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    print(f"streamed outputs vs one forward over the whole sequence: max |diff| = {diff:.1e}")

    os.makedirs(args.out, exist_ok=True)
    table_path = os.path.join(args.out, "streaming_latency.md")
    with open(table_path, "w") as fh:
        fh.write(table + "\n")
    figure = plot(lat, stats, whole_us, os.path.join(args.out, "streaming_latency.png"), H)
    print(f"wrote {figure} and {table_path}")
    return {"stats": stats, "whole_us": whole_us, "max_diff": diff, "figure": figure,
            "table": table_path, "frames": n_frames, "streamed": streamed, "whole": whole}


def plot(lat: Dict[str, List[np.ndarray]], stats: Dict[str, Dict[str, float]], whole_us: float,
         path: str, H: int) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    every = np.concatenate([np.concatenate(v) for v in lat.values()])
    bins = np.geomspace(max(every.min() * 0.8, 0.1), every.max() * 1.2, 90)
    for m, v in lat.items():
        us = np.concatenate(v)
        ax.hist(us, bins=bins, histtype="step", linewidth=1.6,
                label=f"{m}: p50 {stats[m]['p50']:.1f}, p99 {stats[m]['p99']:.1f} us")
    ax.axvline(whole_us, color="k", linestyle=":", linewidth=1,
               label=f"one whole-sequence forward, per frame ({whole_us:.1f} us)")
    ax.set(xscale="log", yscale="log", xlabel="latency of one frame (us)", ylabel="frames",
           title=f"Per-frame latency, LSTM I = {BANDS}, H = {H}, B = 1, one thread")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
