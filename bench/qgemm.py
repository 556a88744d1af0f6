"""Micro benchmark of the per-step GEMM: float32 (the packed micro-kernel) against the
reduced-precision kernels (bf16, int8), every ISA path this CPU runs, in one process.

    python bench/qgemm.py            # about a minute
    python bench/qgemm.py --quick    # a few seconds

Shapes are the LSTM's recurrent product of one step, C (M, 4H) = A (M, H) . W (H, 4H), for
M = 1, 8, 32 (batch rows) and H = 128, 256, 1024. It compiles bench/qgemm.c with the C
compiler (cc, or $CC) at -O3 without -march (paths are chosen at run time, as in the
package) and prints GFLOP/s and the speed-up over float32 per kernel. The reduced kernels'
times include rounding or quantising A, as a forward step does. On a loaded machine read
the ratios, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path) -> None:
    cc = os.environ.get("CC", "cc")
    csrc = ROOT / "csrc"
    cmd = [cc, "-std=c11", "-O3", "-DNDEBUG", f"-I{csrc}", str(ROOT / "bench" / "qgemm.c"),
           str(csrc / "qgemm.c"), str(csrc / "ukernel.c"), "-lm", "-o", str(out)]
    subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (noisier)")
    ap.add_argument("--ms", type=float, default=None, help="milliseconds per timed run")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per kernel (the fastest counts)")
    args = ap.parse_args(argv)
    # many short runs, the fastest kept: on a loaded machine some run undisturbed
    ms = args.ms if args.ms is not None else (1 if args.quick else 3)
    reps = args.reps if args.reps is not None else (5 if args.quick else 25)
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "qgemm_bench"
        build(exe)
        out = subprocess.run([str(exe), str(ms), str(reps)], check=True, capture_output=True,
                             text=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    base = {(r[0], r[1]): float(r[6]) for r in rows if r[3] == "float32"}
    print(f"{'M':>3} {'H':>5} {'kernel':>7} {'path':>11} {'us':>9} {'GFLOP/s':>8} {'vs f32':>7}")
    for M, K, N, kind, isa, us, gf in rows:
        if us == "skipped":
            print(f"{M:>3} {K:>5} {kind:>7} {isa:>11}   skipped (this CPU lacks it)")
            continue
        ratio = float(gf) / base[(M, K)]
        print(f"{M:>3} {K:>5} {kind:>7} {isa:>11} {float(us):9.2f} {float(gf):8.1f} {ratio:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
