"""A character-level language model on Alice's Adventures in Wonderland.

The text (public domain, examples/data/README.md) is read as one long stream
of characters, cut into B parallel streams, and a Vanilla LSTM with a linear
read-out learns p(next character | characters so far) by truncated BPTT
(`fr.train.tbptt`): windows of K steps, the state (s, v) carried from one
window into the next, no gradient across the window boundary. The loss is the
softmax cross-entropy per step (`fr.cross_entropy`). After training the model
samples new text one character at a time, feeding its own output back.

    python examples/char_lm.py              # ~2 minutes on 2 cores
    python examples/char_lm.py --quick      # a few seconds (CI)

Writes examples/figures/char_lm.png and examples/figures/char_lm_precision.md (or --out DIR;
--quick runs write to a new temporary directory unless --out is given) and prints samples;
--checkpoint PATH saves the model and its vocabulary with fr.save.

At the end the trained model is also evaluated in reduced precision (`model.quantize("bf16")`
and `model.quantize("int8")`, inference only): char_lm_precision.md is the validation bits per
character in float32, bf16 and int8 and their difference relative to float32.
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

HERE = os.path.dirname(os.path.abspath(__file__))


def output_dir(out: Optional[str], quick: bool) -> str:
    """Where the outputs go: `--out` if given, else examples/figures for a full run and a
    new temporary directory for a --quick one (which leaves the committed figures alone)."""
    if out is not None:
        return out
    return tempfile.mkdtemp(prefix="fusedrnn-example-") if quick else os.path.join(HERE, "figures")
TEXT = os.path.join(HERE, "data", "alice.txt")


class Vocabulary:
    """Characters <-> indices 0..V-1 (sorted, so the mapping is reproducible)."""

    def __init__(self, chars: List[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def of(cls, text: str) -> "Vocabulary":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def decode(self, idx: Any) -> str:
        return "".join(self.chars[int(i)] for i in idx)

    def one_hot(self, idx: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(...) indices -> (..., V) one-hot inputs x[n] of the LSTM."""
        out = np.zeros(idx.shape + (len(self.chars),), dtype)
        np.put_along_axis(out, idx[..., None], 1.0, axis=-1)
        return out


def streams(ids: np.ndarray, batch: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cut a stream of N indices into B parallel streams: inputs (T, B) and the
    next-character targets (T, B), T = N // B - 1."""
    T = len(ids) // batch
    cols = ids[:T * batch].reshape(batch, T).T          # (T, B): column b is a contiguous piece
    return cols[:-1], cols[1:]


def build(vocab_size: int, hidden: int, layers: int, seed: int) -> fr.Sequential:
    """LSTM(V -> H) [-> LSTM(H -> H)] -> Linear(H -> V) logits."""
    parts: List[Any] = [fr.LSTM(vocab_size, hidden, seed=seed)]
    for k in range(1, layers):
        parts.append(fr.LSTM(hidden, hidden, seed=seed + k))
    parts.append(fr.Linear(hidden, vocab_size, seed=seed + layers))
    return fr.Sequential(*parts)


def sample(model: fr.Sequential, vocab: Vocabulary, prime: str, length: int,
           temperature: float, rng: np.random.Generator) -> str:
    """Feed `prime`, then draw `length` characters from softmax(logits / temperature),
    each fed back as the next input (inference: training=False, state carried)."""
    ids = vocab.encode(prime)
    logits, state = model.forward(vocab.one_hot(ids[:, None]), training=False)
    out = []
    z = logits[-1, 0]
    for _ in range(length):
        p = fr.losses.softmax(z.astype(np.float64) / temperature)
        c = int(rng.choice(len(p), p=p))
        out.append(c)
        logits, state = model.forward(vocab.one_hot(np.array([[c]])), state=state, training=False)
        z = logits[-1, 0]
    return prime + vocab.decode(out)


PRECISIONS = ("float32", "bf16", "int8")


def precision_table(model: fr.Sequential, x_val: np.ndarray, y_val: np.ndarray,
                    vocab: Vocabulary) -> Tuple[Dict[str, float], str]:
    """Validation bits per character of the trained model in float32 and with its LSTM
    weight products in bf16 and int8 (`model.quantize`; the Linear read-out stays float32),
    and the Markdown table of them with the difference relative to float32."""
    bpc = {}
    for precision in PRECISIONS:
        m = model if precision == "float32" else model.quantize(precision)
        nats = fr.train.evaluate(m, x_val, y_val, fr.cross_entropy, window=256,
                                 encode=vocab.one_hot)
        bpc[precision] = nats / np.log(2)
    lines = ["| precision | validation bits per character | relative to float32 |",
             "| --- | ---: | ---: |"]
    for precision in PRECISIONS:
        rel = bpc[precision] / bpc["float32"] - 1
        lines.append(f"| {precision} | {bpc[precision]:.4f} | {rel:+.3%} |")
    return bpc, "\n".join(lines)


def plot(history: fr.train.History, val: List[float], windows_per_epoch: int, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits = 1 / np.log(2)
    loss = np.asarray(history.loss) * bits
    k = max(1, min(25, len(loss) // 5))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(np.arange(len(loss)), loss, color="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(np.arange(k - 1, len(loss)), np.convolve(loss, np.ones(k) / k, "valid"),
            color="tab:blue", lw=1.8, label="training (per window)")
    ax.plot([(e + 1) * windows_per_epoch - 1 for e in range(len(val))], np.asarray(val) * bits,
            "o-", color="tab:orange", label="validation (per epoch)")
    ax.set(xlabel="window (optimizer step)", ylabel="cross-entropy (bits per character)",
           title="Character-level LSTM on Alice in Wonderland (truncated BPTT)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Any = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI (a few seconds)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--layers", type=int, default=1, help="stacked LSTM layers")
    ap.add_argument("--batch", type=int, default=32, help="parallel streams B")
    ap.add_argument("--window", type=int, default=32, help="truncated-BPTT window K")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    ap.add_argument("--checkpoint", default=None, help="save the trained model here (.npz)")
    ap.add_argument("--out", default=None,
                    help="directory of the PNG (default: examples/figures; with --quick "
                         "a new temporary directory)")
    args = ap.parse_args(argv)
    args.out = output_dir(args.out, args.quick)
    epochs = args.epochs or (1 if args.quick else 12)
    hidden = args.hidden or (64 if args.quick else 256)

    t0 = time.perf_counter()
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    if args.quick:
        text = text[:30000]
    vocab = Vocabulary.of(text)
    ids = vocab.encode(text)
    split = int(0.9 * len(ids))
    x_train, y_train = streams(ids[:split], args.batch)
    x_val, y_val = streams(ids[split:], 8)
    model = build(len(vocab), hidden, args.layers, args.seed)
    opt = fr.optim.Adam(model, lr=args.lr)
    n_windows = len(fr.train.window_slices(len(x_train), args.window))
    print(f"{len(text)} characters, vocabulary {len(vocab)}, {len(x_train)} steps x "
          f"{args.batch} streams, {n_windows} windows of {args.window} per epoch; model "
          f"{sum(p.size for p in model.params.values())} parameters")

    val: List[float] = []
    history: Optional[fr.train.History] = None
    rng = np.random.default_rng(args.seed)
    for epoch in range(epochs):
        history, _ = fr.train.tbptt(
            model, x_train, y_train, fr.cross_entropy, window=args.window, optimizer=opt,
            clip_norm=args.clip, encode=vocab.one_hot, progress=not args.no_progress,
            desc=f"epoch {epoch + 1}/{epochs}", history=history)
        val.append(fr.train.evaluate(model, x_val, y_val, fr.cross_entropy, window=256,
                                     encode=vocab.one_hot))
        last = np.mean(history.loss[-n_windows:])
        print(f"epoch {epoch + 1}: train {last:.3f} nats ({last / np.log(2):.2f} bits/char), "
              f"validation {val[-1]:.3f} nats ({val[-1] / np.log(2):.2f} bits/char)", flush=True)
    assert history is not None
    if args.checkpoint:
        fr.save(args.checkpoint, model, opt, metadata={"vocabulary": vocab.chars})
        model = fr.load(args.checkpoint)   # sample from the reloaded model
        print(f"saved and reloaded {args.checkpoint}")
    samples = [sample(model, vocab, prime, 200 if args.quick else 400, args.temperature, rng)
               for prime in ("Alice ", "The Queen ")]
    for s in samples:
        print("-" * 72 + "\n" + s)
    print("-" * 72)
    bpc, md = precision_table(model, x_val, y_val, vocab)
    print("\n" + md + "\n")
    os.makedirs(args.out, exist_ok=True)
    table_path = os.path.join(args.out, "char_lm_precision.md")
    cmd = "python examples/char_lm.py" + (" --quick" if args.quick else "")
    with open(table_path, "w", encoding="utf-8") as f:
        f.write(f"# Character LM: validation bits per character in reduced precision\n\n"
                f"`{cmd}` (seed {args.seed}): {args.layers} LSTM layer(s) of H = {hidden} and a "
                f"Linear read-out, {epochs} epoch(s); validation: the last 10% of the text "
                f"({len(x_val)} steps x 8 streams). bf16 / int8: `model.quantize(...)` of the "
                f"trained model (its LSTM weight products reduced, the read-out float32).\n\n"
                f"{md}\n")
    path = os.path.join(args.out, "char_lm.png")
    plot(history, val, n_windows, path)
    print(f"wrote {path} and {table_path} in {time.perf_counter() - t0:.1f} s")
    return {"history": history, "val": val, "samples": samples, "figure": path,
            "vocab": vocab, "model": model, "bpc": bpc, "precision_table": table_path}


if __name__ == "__main__":
    main(sys.argv[1:])
