"""Denoising a chaotic time series: the augmented LSTM with look-ahead against the Vanilla LSTM.

The series is the x-component of the Lorenz system (σ = 10, ρ = 28, β = 8/3),
integrated with RK4 at dt = 0.01 and sampled every 0.05 time units, normalised
to zero mean and unit variance. The model observes y[n] = x[n] + ε[n] with white
Gaussian noise of standard deviation 0.3 (relative to the clean series) and must
estimate the clean x[n] at every step (MSE): a denoising / smoothing task.

- Vanilla LSTM (peepholes, no context): causal, it sees y[0..n] only.
- Augmented LSTM (Sherstinsky 2020, §3a): an external-input context window
  context=(2, 4), so each step reads y[n-2..n+4] directly (four frames of
  look-ahead: a non-causal filter, i.e. a fixed-lag smoother with a latency of
  4 samples), plus a projection (H = 64, P = 16; fewer parameters than the
  Vanilla LSTM with H = 64).

Both have a fr.Linear read-out, are trained from the same seeds with fr.optim.Adam
(cosine-decayed learning rate, gradient clipping) by truncated BPTT
(fr.train.tbptt: B parallel streams, windows of K steps, the state carried; for
the context window the state also carries the past frames and the next four
frames are passed as x_future). The noise is redrawn every epoch (seeded), so
the models cannot memorise it. Evaluation is on the held-out last 20% of the
trajectory with its own noise draw, against two baselines: the noisy input
itself and a centred moving average (its width chosen on the training part).

    python examples/timeseries_lookahead.py            # ~30 s on 2 cores
    python examples/timeseries_lookahead.py --quick    # a few seconds (CI)

Writes examples/figures/timeseries_lookahead.png and the error table
examples/figures/timeseries_lookahead.md (or --out DIR; --quick runs write to a new
temporary directory unless --out is given). The table file also holds both trained models'
held-out RMSE in reduced precision (`model.quantize("bf16")` / `model.quantize("int8")`,
inference only) next to float32, with the difference relative to float32.

The kernels run with one BLAS thread (fr.set_num_threads(1), --threads): at
these sizes (B = 32, H = 64) a GEMM is a few microseconds of work, and a second
BLAS thread costs more in synchronisation than it saves, much more so on a
machine whose other core is busy.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import fusedrnn as fr

HERE = os.path.dirname(os.path.abspath(__file__))


def output_dir(out: Optional[str], quick: bool) -> str:
    """Where the outputs go: `--out` if given, else examples/figures for a full run and a
    new temporary directory for a --quick one (which leaves the committed figures alone)."""
    if out is not None:
        return out
    return tempfile.mkdtemp(prefix="fusedrnn-example-") if quick else os.path.join(HERE, "figures")
KINDS = ("vanilla", "augmented")
LABELS = {"noisy": "noisy input y[n]", "moving_average": "centred moving average",
          "vanilla": "Vanilla LSTM (causal)", "augmented": "augmented LSTM (look-ahead)"}
COLORS = {"vanilla": "tab:red", "augmented": "tab:blue"}


# -- data ----------------------------------------------------------------------------------------
def lorenz_x(n: int, sample_dt: float = 0.05, dt: float = 0.01, burn_in: float = 20.0,
             sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> np.ndarray:
    """n samples of the Lorenz x-component, one every `sample_dt` time units, by RK4
    at step dt from (1, 1, 1) after a burn-in onto the attractor (float64, (n,))."""
    sub = int(round(sample_dt / dt))
    skip = int(round(burn_in / dt))
    h, h2, h6 = dt, dt / 2, dt / 6

    def f(x: float, y: float, z: float) -> Tuple[float, float, float]:
        return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

    x, y, z = 1.0, 1.0, 1.0
    out = np.empty(n)
    for i in range(skip + n * sub):
        a = f(x, y, z)
        b = f(x + h2 * a[0], y + h2 * a[1], z + h2 * a[2])
        c = f(x + h2 * b[0], y + h2 * b[1], z + h2 * b[2])
        d = f(x + h * c[0], y + h * c[1], z + h * c[2])
        x += h6 * (a[0] + 2 * b[0] + 2 * c[0] + d[0])
        y += h6 * (a[1] + 2 * b[1] + 2 * c[1] + d[1])
        z += h6 * (a[2] + 2 * b[2] + 2 * c[2] + d[2])
        j = i - skip + 1
        if j > 0 and j % sub == 0:
            out[j // sub - 1] = x
    return out


def make_data(length: int, batch: int, noise: float, seed: int) -> Dict[str, Any]:
    """The clean series split 80/20 and normalised with the training part's
    statistics; the training part cut into `batch` parallel streams (T, B, 1),
    the held-out part one stream with a fixed noise draw."""
    x = lorenz_x(length)
    split = int(0.8 * length)
    mean, std = x[:split].mean(), x[:split].std()
    x = ((x - mean) / std).astype(np.float32)
    T = split // batch
    # (T, B, 1): column b is one contiguous piece of the training part
    x_train = x[:T * batch].reshape(batch, T).T[:, :, None].copy()
    x_test = x[split:]
    rng = np.random.default_rng(seed + 12345)
    y_test = (x_test + noise * rng.standard_normal(x_test.shape)).astype(np.float32)
    return {"x_train": x_train, "x_test": x_test, "y_test": y_test}


# -- models --------------------------------------------------------------------------------------
def build(kind: str, args: argparse.Namespace) -> fr.Sequential:
    """Vanilla: LSTM(1 -> H_v, diagonal peepholes) -> Linear(H_v -> 1).
    Augmented: LSTM(1 -> H, diagonal peepholes, context window, projection to P)
    -> Linear(P -> 1). Same seeds for both."""
    if kind == "vanilla":
        cell = fr.LSTM(1, args.vanilla_hidden, peepholes="diagonal", seed=args.seed)
        out = args.vanilla_hidden
    else:
        cell = fr.LSTM(1, args.hidden, peepholes="diagonal", proj_size=args.proj,
                       context=tuple(args.context), seed=args.seed)
        out = args.proj or args.hidden
    return fr.Sequential(cell, fr.Linear(out, 1, seed=args.seed + 1))


def predict(model: fr.Sequential, y: np.ndarray) -> np.ndarray:
    """The model's estimate of x over one long stream y (N,), inference only."""
    out, _ = fr.train.windowed_forward(model, y[:, None, None], window=1000)
    return out[:, 0, 0].astype(np.float64)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def train(kind: str, data: Dict[str, Any], args: argparse.Namespace, epochs: int
          ) -> Tuple[fr.Sequential, fr.train.History, List[Tuple[int, float]], float]:
    """Train one model; returns (model, history, [(step, held-out RMSE)], seconds).

    Every epoch draws fresh noise for the training streams (the same draws for
    both models) and makes one tbptt pass over them; the learning rate follows
    a cosine from lr down to 0 over the epochs."""
    model = build(kind, args)
    opt = fr.optim.Adam(model, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    x_train = data["x_train"]
    history: Optional[fr.train.History] = None
    curve: List[Tuple[int, float]] = []
    every = max(1, epochs // 20)
    t0 = time.perf_counter()
    bar = None
    if not args.no_progress:
        from tqdm import tqdm  # type: ignore[import-untyped]
        bar = tqdm(total=epochs, desc=f"{kind:9s}", unit="epoch", dynamic_ncols=True)
    try:
        for epoch in range(epochs):
            y_train = (x_train + args.noise * rng.standard_normal(x_train.shape)).astype(np.float32)
            opt.lr = 0.5 * args.lr * (1 + math.cos(math.pi * epoch / epochs))
            history, _ = fr.train.tbptt(model, y_train, x_train, fr.mse_loss, window=args.window,
                                        optimizer=opt, clip_norm=args.clip, progress=False,
                                        history=history)
            if (epoch + 1) % every == 0 or epoch + 1 == epochs:
                curve.append((len(history), rmse(predict(model, data["y_test"]), data["x_test"])))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(history.loss[-10:]):.4f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    assert history is not None
    return model, history, curve, time.perf_counter() - t0


def moving_average(y: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` (odd) samples; at the ends, the mean of
    the samples that exist."""
    k = np.ones(width)
    return np.convolve(y, k, "same") / np.convolve(np.ones_like(y), k, "same")


def best_width(x: np.ndarray, y: np.ndarray) -> int:
    """The odd width of the centred moving average with the lowest RMSE on (y, x)."""
    return min(range(1, 32, 2), key=lambda w: rmse(moving_average(y, w), x))


# -- report --------------------------------------------------------------------------------------
def table(results: Dict[str, Any], args: argparse.Namespace) -> str:
    """The error table in Markdown."""
    L_past, L_future = args.context
    w = results["ma_width"]
    sees = {"noisy": "y[n]", "moving_average": f"y[n-{w // 2} .. n+{w // 2}] (width {w})",
            "vanilla": "y[0 .. n]",
            "augmented": f"y[0 .. n+{L_future}] (window n-{L_past} .. n+{L_future})"}
    params = results["params"]
    detail = {"noisy": "", "moving_average": "width chosen on the training part",
              "vanilla": f"H = {args.vanilla_hidden}, {params['vanilla']} parameters",
              "augmented": f"H = {args.hidden}, P = {args.proj}, context = ({L_past}, {L_future}), "
                           f"{params['augmented']} parameters"}
    base = results["rmse"]["noisy"]
    lines = ["| estimate of x[n] | sees | held-out RMSE | relative to the noisy input | model |",
             "| --- | --- | ---: | ---: | --- |"]
    for key in ("noisy", "moving_average", "vanilla", "augmented"):
        r = results["rmse"][key]
        lines.append(f"| {LABELS[key]} | {sees[key]} | {r:.4f} | {r / base:.3f} | {detail[key]} |")
    return "\n".join(lines)


PRECISIONS = ("float32", "bf16", "int8")


def precision_rmse(model: fr.Sequential, data: Dict[str, Any]) -> Dict[str, float]:
    """Held-out RMSE of a trained model in float32 and with its LSTM weight products in
    bf16 and int8 (`model.quantize`; the Linear read-out stays float32)."""
    return {precision: rmse(predict(model if precision == "float32"
                                    else model.quantize(precision), data["y_test"]),
                            data["x_test"])
            for precision in PRECISIONS}


def precision_table(results: Dict[str, Any]) -> str:
    """The held-out RMSE of each model per precision in Markdown, with the difference of
    bf16 and int8 relative to float32."""
    lines = ["| model | float32 RMSE | bf16 RMSE | bf16 vs float32 | int8 RMSE | int8 vs float32 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        r = results["precision"][kind]
        cells = [f"{r['float32']:.4f}"]
        for precision in PRECISIONS[1:]:
            cells += [f"{r[precision]:.4f}", f"{r[precision] / r['float32'] - 1:+.3%}"]
        lines.append(f"| {LABELS[kind]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Dict[str, Any], data: Dict[str, Any], args: argparse.Namespace,
         path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.15, 1), width_ratios=(1.4, 1))
    # predictions against the truth on a held-out stretch
    ax = fig.add_subplot(grid[0, :])
    x, y = data["x_test"], data["y_test"]
    a = min(200, len(x) // 4)
    b = min(a + 300, len(x))
    n = np.arange(a, b)
    ax.plot(n, y[a:b], ".", color="grey", ms=3.5, alpha=0.6, label="noisy input y[n]")
    ax.plot(n, x[a:b], color="black", lw=2.2, label="truth x[n]")
    for kind in KINDS:
        ax.plot(n, results["pred"][kind][a:b], color=COLORS[kind], lw=1.3,
                label=f"{LABELS[kind]}  (RMSE {results['rmse'][kind]:.3f})")
    ax.set(xlabel="held-out step n (Δt = 0.05)", ylabel="x (normalised)",
           title=f"Denoising the Lorenz x-component (noise σ = {args.noise} of the signal's std): "
                 "held-out predictions")
    ax.legend(fontsize=9, ncol=2, loc="upper left")
    ax.grid(alpha=0.3)

    # loss curves
    ax = fig.add_subplot(grid[1, 0])
    for kind in KINDS:
        hist = results["history"][kind]
        loss = np.asarray(hist.loss)
        k = max(1, min(20, len(loss) // 5))
        ax.semilogy(np.arange(k - 1, len(loss)), np.convolve(loss, np.ones(k) / k, "valid"),
                    color=COLORS[kind], lw=1.4, alpha=0.8,
                    label=f"{kind}: training MSE (per window)")
        steps, held = zip(*results["curve"][kind])
        ax.semilogy(steps, np.square(held), "o--", color=COLORS[kind], ms=3.5,
                    label=f"{kind}: held-out MSE")
    ax.axhline(results["rmse"]["noisy"] ** 2, color="grey", ls=":", lw=1, label="noisy input")
    ax.set(xlabel="optimizer step (tbptt window)", ylabel="MSE against the clean x",
           title="Training (smoothed) and held-out loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")

    # error table as bars
    ax = fig.add_subplot(grid[1, 1])
    keys = ("noisy", "moving_average", "vanilla", "augmented")
    vals = [results["rmse"][k] for k in keys]
    bars = ax.bar(range(len(keys)), vals,
                  color=["grey", "tab:olive", COLORS["vanilla"], COLORS["augmented"]])
    ax.bar_label(bars, fmt="%.3f", fontsize=9)
    ax.set_xticks(range(len(keys)),
                  ["noisy\ninput", f"moving avg.\n(width {results['ma_width']})",
                   "Vanilla LSTM\n(causal)", f"augmented LSTM\ncontext {tuple(args.context)}"],
                  fontsize=9)
    ax.set(ylabel="held-out RMSE", title="Held-out error", ylim=(0, max(vals) * 1.15))
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Any = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI (a few seconds)")
    ap.add_argument("--epochs", type=int, default=None, help="passes over the training streams")
    ap.add_argument("--length", type=int, default=None, help="samples of the series (80%% train)")
    ap.add_argument("--noise", type=float, default=0.3, help="noise std relative to the signal's")
    ap.add_argument("--hidden", type=int, default=64, help="augmented LSTM: cell size H")
    ap.add_argument("--proj", type=int, default=16, help="augmented LSTM: projection size P")
    ap.add_argument("--context", type=int, nargs=2, default=[2, 4], metavar=("L_PAST", "L_FUTURE"),
                    help="augmented LSTM: input context window")
    ap.add_argument("--vanilla-hidden", type=int, default=64, help="Vanilla LSTM: cell size")
    ap.add_argument("--batch", type=int, default=32, help="parallel training streams B")
    ap.add_argument("--window", type=int, default=50, help="truncated-BPTT window K")
    ap.add_argument("--lr", type=float, default=1e-2, help="initial Adam learning rate")
    ap.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    ap.add_argument("--threads", type=int, default=1, help="fr.set_num_threads (see the docstring)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    ap.add_argument("--out", default=None,
                    help="directory of the PNG and the table (default: examples/figures; with "
                         "--quick a new temporary directory)")
    args = ap.parse_args(argv)
    args.out = output_dir(args.out, args.quick)
    epochs = args.epochs or (30 if args.quick else 300)
    length = args.length or (4000 if args.quick else 20000)

    threads = fr.get_num_threads()
    fr.set_num_threads(args.threads)
    try:
        return run(args, epochs, length)
    finally:
        fr.set_num_threads(threads)   # the setting is process-wide (e.g. under pytest)


def run(args: argparse.Namespace, epochs: int, length: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    data = make_data(length, args.batch, args.noise, args.seed)
    T, B, _ = data["x_train"].shape
    n_windows = len(fr.train.window_slices(T, args.window))
    print(f"Lorenz x: {length} samples ({time.perf_counter() - t0:.1f} s); training "
          f"{T} steps x {B} streams ({n_windows} windows of {args.window} per epoch, {epochs} "
          f"epochs), held-out {len(data['x_test'])} steps; noise σ = {args.noise}")

    results: Dict[str, Any] = {"rmse": {}, "pred": {}, "history": {}, "curve": {},
                               "params": {}, "seconds": {}, "precision": {}}
    x_test, y_test = data["x_test"], data["y_test"]
    results["rmse"]["noisy"] = rmse(y_test, x_test)
    x_flat = data["x_train"][:, :, 0].T.ravel()                  # the training part, in order
    noise_rng = np.random.default_rng(args.seed + 777)
    y_flat = x_flat + args.noise * noise_rng.standard_normal(x_flat.shape)
    results["ma_width"] = w = best_width(x_flat, y_flat)
    results["rmse"]["moving_average"] = rmse(moving_average(y_test, w), x_test)

    for kind in KINDS:
        model, history, curve, secs = train(kind, data, args, epochs)
        results["pred"][kind] = predict(model, y_test)
        results["rmse"][kind] = rmse(results["pred"][kind], x_test)
        results["history"][kind], results["curve"][kind] = history, curve
        results["params"][kind] = sum(p.size for p in model.params.values())
        results["seconds"][kind] = secs
        results[f"model_{kind}"] = model
        results["precision"][kind] = precision_rmse(model, data)
        print(f"{kind:9s}  {model[0]!r}\n           training MSE "
              f"{np.mean(history.loss[:n_windows]):.4f}"
              f" -> {np.mean(history.loss[-n_windows:]):.4f}, held-out RMSE "
              f"{results['rmse'][kind]:.4f}   ({secs:.1f} s)", flush=True)

    md = table(results, args)
    md_precision = precision_table(results)
    print("\n" + md + "\n\n" + md_precision + "\n")
    os.makedirs(args.out, exist_ok=True)
    table_path = os.path.join(args.out, "timeseries_lookahead.md")
    cmd = "python examples/timeseries_lookahead.py" + (" --quick" if args.quick else "")
    with open(table_path, "w", encoding="utf-8") as f:
        f.write(f"# Denoising the Lorenz x-component: held-out error\n\n"
                f"`{cmd}` (seed {args.seed}): {length} samples (Δt = 0.05), noise σ = "
                f"{args.noise} of the signal's std, {epochs} epochs x {n_windows} tbptt windows "
                f"of {args.window} steps x {B} streams, Adam lr {args.lr} (cosine), clip "
                f"{args.clip}. Held-out: the last {len(x_test)} steps with their own noise.\n\n"
                f"{md}\n\n"
                f"## In reduced precision\n\n"
                f"The trained models quantized for inference (`model.quantize(\"bf16\")`, "
                f"`model.quantize(\"int8\")`: the LSTM's weight products reduced, the read-out "
                f"float32), on the same held-out steps.\n\n{md_precision}\n")
    fig_path = os.path.join(args.out, "timeseries_lookahead.png")
    plot(results, data, args, fig_path)
    results["figure"], results["table"], results["markdown"] = fig_path, table_path, md
    print(f"wrote {fig_path} and {table_path} in {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
