"""Vanishing gradients: the canonical RNN against the Vanilla LSTM on delayed recall.

Task: a sequence of T = delay + 1 steps of random values x ~ U(-1, 1)
(channel 0); a marker (channel 1) flags step 0. At the last step the model
must output the value of step 0 (mean squared error, so E only has a term at
n = T-1; predicting 0 scores 1/3). Every value in between is a distractor. A
real value (not a bit) has to be stored: an RNN that only latches its sign into
an attractor still scores 1/12. Both models read out through
a fr.Linear; they are trained with Adam and global gradient clipping at growing
delays.

Then, for the longest delay, the norm of ψ[n] = ∂E/∂s[n] (Sherstinsky 2020,
§4 and §5) is computed with the NumPy oracle `fusedrnn.reference` and plotted
against n, at initialisation and after training. The loss enters at n = T-1
only; going back in time ψ is multiplied by the step Jacobians. The canonical
RNN's ψ shrinks geometrically (products of diag(G'(s)) W_r^T factors), so the
value at n = 0 sends no usable gradient; the LSTM's ψ is carried by the cell
state (f_ψ[n] ∋ g_cs[n] ⊙ ψ[n], forget gate near 1) and survives the delay.
(An RNN that failed to learn may end near the edge of chaos, where its ψ
decays less, but erratically: the exploding side of the same products.)

    python examples/vanishing_gradients.py            # ~1-2 minutes on 2 cores
    python examples/vanishing_gradients.py --quick    # a few seconds (CI)

Writes examples/figures/vanishing_gradients.png (or --out DIR;
--quick runs write to a new temporary directory unless --out is given).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

# Small matrices: one BLAS thread is faster than two fighting over them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import fusedrnn as fr  # noqa: E402
from fusedrnn import reference  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def output_dir(out: Optional[str], quick: bool) -> str:
    """Where the outputs go: `--out` if given, else examples/figures for a full run and a
    new temporary directory for a --quick one (which leaves the committed figures alone)."""
    if out is not None:
        return out
    return tempfile.mkdtemp(prefix="fusedrnn-example-") if quick else os.path.join(HERE, "figures")
KINDS = ("RNN", "LSTM")


def make_batch(rng: np.random.Generator, delay: int, batch: int) -> Tuple[np.ndarray, np.ndarray]:
    """x (T, B, 2) with T = delay + 1: channel 0 ~ U(-1, 1), channel 1 the marker
    at n = 0. Returns x and the target (B, 1) = x[0, :, 0]."""
    T = delay + 1
    x = np.zeros((T, batch, 2), np.float32)
    x[:, :, 0] = rng.uniform(-1.0, 1.0, size=(T, batch))
    x[0, :, 1] = 1.0
    return x, x[0, :, :1].copy()


def build(kind: str, hidden: int, seed: int, forget_bias: float = 3.0) -> fr.Sequential:
    """The recurrent layer (2 -> H) and a fr.Linear read-out (H -> 1).

    The LSTM's control-state (forget) gate bias b_cs starts at `forget_bias`
    (Gers et al. 2000; Keras' unit_forget_bias uses 1): g_cs = σ(b_cs) near 1
    lets the cell state, and ψ through f_ψ, pass from the first step. The
    canonical RNN keeps its default initialisation: it has no such gate."""
    if kind == "RNN":
        cell: Any = fr.RNN(2, hidden, seed=seed)
    else:
        cell = fr.LSTM(2, hidden, peepholes=True, seed=seed)
        cell.paper_params["b_cs"][...] = forget_bias   # a view: writes the fused storage
    return fr.Sequential(cell, fr.Linear(hidden, 1, seed=seed + 1))


def last_step_loss(y: np.ndarray, target: np.ndarray) -> Tuple[float, np.ndarray]:
    """E = MSE of y[T-1] against the target; dE/dy is zero except at n = T-1."""
    loss, d_last = fr.mse_loss(y[-1], target)
    dy = np.zeros_like(y)
    dy[-1] = d_last
    return loss, dy


def train(kind: str, delay: int, steps: int, batch: int, hidden: int, lr: float,
          seed: int, forget_bias: float = 3.0
          ) -> Tuple[fr.Sequential, fr.Sequential, List[float]]:
    """Train one model; returns (the model at initialisation, the trained model, losses)."""
    rng = np.random.default_rng(seed + 1000 * delay)
    model = build(kind, hidden, seed, forget_bias)
    initial = build(kind, hidden, seed, forget_bias)  # the same initialisation, kept untrained
    opt = fr.optim.Adam(model, lr=lr)
    losses = []
    for _ in range(steps):
        x, target = make_batch(rng, delay, batch)
        model.zero_grad()
        y, _ = model.forward(x)
        loss, dy = last_step_loss(y, target)
        model.backward(dy)
        fr.clip_grad_norm(model, 1.0)
        opt.step()
        losses.append(loss)
    return initial, model, losses


# -- ψ[n] = ∂E/∂s[n] with the oracle ---------------------------------------------------------
def psi_norms(model: fr.Sequential, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """‖ψ[n]‖ for n = 0..T-1 (T,), the mean over the batch of the norms of `psi`."""
    return np.linalg.norm(psi(model, x, target), axis=2).mean(axis=1)


def psi(model: fr.Sequential, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """ψ[n] = ∂E/∂s[n] (T, B, H) for E = last_step_loss, in float64 with fusedrnn.reference.

    The chunked-BPTT argument gives ψ exactly: for the suffix window n+1..T-1
    started from the state (s[n], o[n]) of the full forward, the oracle's
    backward returns f_ψ[n+1] = ∂E/∂s[n] and f_χ[n+1] = ∂E/∂o[n] through the
    future steps (o = r for the RNN, v for the LSTM). Adding the path through
    o[n] (E has no term at n < T-1) gives ψ[n] = f_ψ[n+1] + J[n] ⊙ f_χ[n+1] with the
    diagonal J[n] = ∂o[n]/∂s[n]:
        RNN:  G'(s[n]) = 1 - r[n]²
        LSTM: g_cr[n] (1 - r[n]²) + w_scr ⊙ r[n] g_cr[n] (1 - g_cr[n])  (readout peephole)
    """
    cell, head = model[0], model[1]
    p = {k: v.astype(np.float64) for k, v in cell.params.items()}
    lstm = isinstance(cell, fr.LSTM)
    fwd, bwd = ((reference.lstm_forward, reference.lstm_backward) if lstm
                else (reference.rnn_forward, reference.rnn_backward))
    x64 = x.astype(np.float64)
    T, B, _ = x.shape
    o_seq, _, _, cache = fwd(x64, p, None, None)
    # dE/do[T-1] from the loss through the read-out (E only has a term at T-1)
    y_last = o_seq[-1] @ head.params["W"].T.astype(np.float64) + head.params["b"]
    _, dy_last = fr.mse_loss(y_last, target.astype(np.float64))
    chi_last = dy_last @ head.params["W"].astype(np.float64)          # (B, H)
    if lstm:
        s, o = cache["s"][1:], cache["v"][1:]                         # s[n], v[n] for n = 0..T-1
        g_cr, r = cache["g_cr"], cache["r"]
        J = g_cr * (1 - r ** 2)
        if "w_s" in p:
            J = J + p["w_s"][2] * r * g_cr * (1 - g_cr)
    else:
        s, o = cache["s"][1:], cache["r"][1:]
        J = 1 - o ** 2
    out = np.empty(s.shape)
    for n in range(T):
        if n == T - 1:
            f_psi, f_chi = np.zeros_like(chi_last), chi_last
        else:
            suffix = x64[n + 1:]
            _, _, _, c = fwd(suffix, p, s[n], o[n])
            d_out = np.zeros(suffix.shape[:2] + (chi_last.shape[1],))
            d_out[-1] = chi_last
            _, f_psi, f_chi, _ = bwd(d_out, None, None, c)
        out[n] = f_psi + J[n] * f_chi
    return out


# -- plotting ----------------------------------------------------------------------------------
def smooth(values: List[float], k: int) -> np.ndarray:
    """Moving average over k points."""
    a = np.asarray(values, float)
    k = max(1, min(k, len(a)))
    return np.convolve(a, np.ones(k) / k, mode="valid")


def plot(results: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delays = results["delays"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(delays)))
    ax = axes[0]
    for c, d in zip(colors, delays):
        for kind, ls in zip(KINDS, ("--", "-")):
            L = results["losses"][kind][d]
            ax.plot(smooth(L, 20), ls, color=c, lw=1.4, label=f"{kind}, delay {d}")
    ax.axhline(1 / 3, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="training step", ylabel="loss E (MSE at the last step)", ylim=(0, 0.5),
           title="Training loss (RNN dashed, LSTM solid)")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    w = 0.38
    idx = np.arange(len(delays))
    for i, (kind, col) in enumerate(zip(KINDS, ("tab:red", "tab:blue"))):
        final = [float(np.mean(results["losses"][kind][d][-50:])) for d in delays]
        bars = ax.bar(idx + (i - 0.5) * w, final, w, color=col, label=kind)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.axhline(1 / 3, color="grey", lw=0.8, ls=":", label="predict 0")
    ax.set_xticks(idx, [str(d) for d in delays])
    ax.set(xlabel="delay (steps between the value and the answer)", ylabel="final loss",
           title="Loss after training")
    ax.legend(fontsize=8)

    ax = axes[2]
    d = delays[-1]
    n = np.arange(d + 1)
    for kind, col in zip(KINDS, ("tab:red", "tab:blue")):
        for stage, ls, lw in (("init", "-", 2.0), ("trained", "--", 1.0)):
            norms = results["psi"][kind][stage]
            ax.semilogy(n, norms / norms[-1], ls, color=col, lw=lw, label=f"{kind} ({stage})")
    ax.set(xlabel="time step n (the loss is at n = T-1)",
           ylabel="‖ψ[n]‖ / ‖ψ[T-1]‖,  ψ[n] = ∂E/∂s[n]",
           title=f"Gradient reaching step n (delay {d})\nat initialisation (solid), "
                 "after training (dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Any = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI (a few seconds)")
    ap.add_argument("--delays", type=int, nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=None, help="training steps per model and delay")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--forget-bias", type=float, default=3.0,
                    help="initial b_cs of the LSTM (0 = PyTorch's default init)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="directory of the PNG (default: examples/figures; with --quick "
                         "a new temporary directory)")
    args = ap.parse_args(argv)
    args.out = output_dir(args.out, args.quick)
    delays = args.delays or ([4, 16] if args.quick else [5, 10, 20, 40, 80])
    steps = args.steps or (150 if args.quick else 2000)

    t0 = time.perf_counter()
    results: Dict[str, Any] = {"delays": delays, "losses": {k: {} for k in KINDS},
                               "psi": {k: {} for k in KINDS}}
    for d in delays:
        for kind in KINDS:
            t = time.perf_counter()
            initial, model, losses = train(kind, d, steps, args.batch, args.hidden, args.lr,
                                           args.seed, args.forget_bias)
            results["losses"][kind][d] = losses
            print(f"delay {d:3d}  {kind:4s}  loss {np.mean(losses[:20]):.3f} -> "
                  f"{np.mean(losses[-50:]):.3f}   ({time.perf_counter() - t:.1f} s)", flush=True)
            if d == delays[-1]:
                x, target = make_batch(np.random.default_rng(args.seed + 7), d, args.batch)
                results["psi"][kind]["init"] = psi_norms(initial, x, target)
                results["psi"][kind]["trained"] = psi_norms(model, x, target)
    for kind in KINDS:
        ratios = {st: results["psi"][kind][st][0] / results["psi"][kind][st][-1]
                  for st in ("init", "trained")}
        print(f"{kind:4s} ‖ψ[0]‖ / ‖ψ[T-1]‖ (delay {delays[-1]}): {ratios['init']:.1e} at "
              f"initialisation, {ratios['trained']:.1e} after training")
    path = os.path.join(args.out, "vanishing_gradients.png")
    plot(results, path)
    results["figure"] = path
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
