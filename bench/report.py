"""The report of a run: machine information, one row per (case, threads, mode) with its
ratios and targets, the Markdown tables, the ratio plot and the JSON file."""
from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
from typing import Any, Dict, List, Mapping, Optional

from cases import COMPETITOR_LABEL, COMPETITORS, MODES, Case, case_label, targets_of
from timing import BUSY_BACKGROUND

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NOISY_IQR = 0.2     # a measurement is flagged noisy when its IQR exceeds 20% of its median


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                          check=True).stdout


def git_revision(repo: str = REPO) -> str:
    """Short commit of the checkout `repo` (default: this script's), "+dirty" with local changes."""
    try:
        rev = _git(repo, "rev-parse", "--short", "HEAD").strip()
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def git_info(repo: str = REPO) -> dict:
    """The checkout's short description, commit and modified tracked files."""
    git: Dict[str, Any] = {"describe": git_revision(repo)}
    try:
        git["commit"] = _git(repo, "rev-parse", "HEAD").strip()
        st = _git(repo, "status", "--porcelain", "--untracked-files=no")
        git["modified"] = [ln[3:] for ln in st.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        pass
    return git


def machine_info() -> dict:
    import importlib.metadata as md
    info: Dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                            "platform": platform.platform(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU family", "Model", "CPU(s)", "Thread(s) per core",
                "Core(s) per socket", "L2 cache", "L3 cache", "Hypervisor vendor")
        info["lscpu"] = {k.strip(): v.strip() for k, v in
                         (ln.split(":", 1) for ln in lscpu.splitlines() if ":" in ln) if k.strip() in keep}
        flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "")
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    except OSError:
        pass
    versions = {}
    for pkg in ("numpy", "scipy", "torch", "onnxruntime", "onnx", "threadpoolctl", "fusedrnn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    info["git"] = git_info()
    return info


def build_info(info: dict, worker: Mapping[str, Any]) -> dict:
    """The machine information of a run of another fusedrnn installation, from what its worker
    reported: its interpreter, package directory, version and checkout (when it is one)."""
    return {**info, "versions": {**info["versions"], "fusedrnn": worker.get("fusedrnn_version")},
            "git": git_info(worker["fusedrnn"]) if worker.get("fusedrnn") else {"describe": "unknown"},
            "fusedrnn_path": worker.get("fusedrnn"),
            "fusedrnn_python": worker.get("python")}


# ============================================================================ report
def fmt_ms(t: Optional[float]) -> str:
    if t is None:
        return "—"
    ms = 1e3 * t
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def build_rows(cases: List[Case], threads_list: List[int], results: Mapping[str, dict]) -> List[dict]:
    """One row per (case, threads, mode): medians, ratios, targets."""
    rows = []
    for case in cases:
        for threads in threads_list:
            for mode in MODES:
                med: Dict[str, Optional[float]] = {}
                for comp in COMPETITORS:
                    r = results.get(f"{case.job_key(comp)}|t{threads}")
                    t = r["timings"].get(mode) if r and case.runs(comp) else None
                    med[comp] = t["median"] if t else None
                if med["fusedrnn"] is None:
                    continue
                fr_t = med["fusedrnn"]
                ratios = {c: (med[c] / fr_t if med[c] else None) for c in ("torch", "ort", "oracle")}
                ratios["floor"] = fr_t / med["floor"] if med["floor"] else None
                checks = []
                for tg in targets_of(case, mode):
                    r = ratios.get(tg.against)
                    checks.append({"target": tg.text(), "ratio": r,
                                   "met": None if r is None else tg.ok(r)})
                fr_r = results.get(f"{case.job_key('fusedrnn')}|t{threads}") or {}
                packed = fr_r.get("packed_max_rows")
                rows.append({"packed": bool(packed) and case.B <= packed,
                             "case": case.name, "cell": case.cell, "size": case.size,
                             "variant": case.variant,
                             "dims": case.dims(), "dtype": case.dtype, "threads": threads,
                             "mode": mode, "median_s": med, "ratios": ratios, "targets": checks})
    return rows


def _table(rows: List[dict]) -> List[str]:
    """The Markdown table of `rows` and the count of targets met under it."""
    head = ["case", "dims", "mode", "thr", "fusedrnn ms", "torch ms", "ORT ms", "oracle ms",
            "floor ms", "torch/fr", "ORT/fr", "oracle/fr", "fr/floor", "target", "met"]
    L = ["| " + " | ".join(head) + " |",
         "| " + " | ".join(["---"] * 4 + ["---:"] * 9 + ["---", "---"]) + " |"]
    met = total = 0

    def rt(x):
        return "—" if x is None else f"{x:.2f}"

    for r in rows:
        m = r["median_s"]
        ra = r["ratios"]
        tg = "; ".join(c["target"] for c in r["targets"]) or ""
        marks = []
        for c in r["targets"]:
            total += 1
            if c["met"]:
                met += 1
            marks.append("n/a" if c["met"] is None else "yes" if c["met"] else "**NO**")
        L.append("| " + " | ".join([
            case_label(r["size"], r["variant"], r.get("cell", "lstm")),
            r["dims"] + ("" if r["dtype"] == "float32" else " f64"),
            MODES[r["mode"]], str(r["threads"]),
            fmt_ms(m["fusedrnn"]), fmt_ms(m["torch"]), fmt_ms(m["ort"]), fmt_ms(m["oracle"]),
            fmt_ms(m["floor"]), rt(ra["torch"]), rt(ra["ort"]), rt(ra["oracle"]),
            rt(ra["floor"]) + (" (p)" if r.get("packed") and ra["floor"] is not None else ""),
            tg, " / ".join(marks)]) + " |")
    L.append("")
    L.append(f"**Targets met: {met} of {total}.**")
    return L


def markdown(info: dict, settings: dict, rows: List[dict], memory: Mapping[str, dict],
             checks: Mapping[str, dict], results: Mapping[str, dict], elapsed: float) -> str:
    L: List[str] = []
    g = info["git"]
    L.append(f"# fusedrnn benchmark ({'quick' if settings['quick'] else 'full'} run)")
    L.append("")
    L.append(f"- CPU: {info['cpu']} ({info.get('lscpu', {}).get('CPU(s)', info['cpu_count'])} CPUs, "
             f"SIMD: {', '.join(info.get('simd', []))}), {info['platform']}")
    v = info["versions"]
    L.append(f"- fusedrnn {v['fusedrnn']} at git {g['describe']}"
             + (f" (modified: {', '.join(g['modified'])})" if g.get("modified") else "")
             + f"; GEMM backend `{settings.get('gemm', '?')}`"
             + f"; Python {info['python']}, NumPy {v['numpy']}, SciPy {v['scipy']}, torch {v['torch']}, "
             f"onnxruntime {v['onnxruntime']}")
    L.append(f"- {settings['date']}, {elapsed / 60:.1f} min; load average before: "
             f"{settings['load_before']:.2f}, after: {settings['load_after']:.2f}"
             + ("  **(machine busy when started: timings may be disturbed)**"
                if settings["load_before"] >= 0.5 else ""))
    if settings.get("pause_when_busy"):
        L.append(f"- before each case the run waited (up to {settings['pause_when_busy']:g} s) for "
                 f"other processes to use < 15% of the machine: {settings['waited_s']:.0f} s in all")
    rounds = settings.get("rounds", 1)
    L.append(f"- medians of adaptive repeats (budget {settings['budget']:g} s per measurement, "
             f"{settings['min_rep']}..{settings['max_rep']} calls"
             + (f", in {rounds} rounds: the competitors of a case take turns" if rounds > 1 else "")
             + "); threads: "
             f"{', '.join(map(str, settings['threads']))}")
    L.append("- ratios: `X/fr` = X's median / fusedrnn's (> 1: fusedrnn faster); "
             "`fr/floor` = fusedrnn's median / the GEMM floor's (1 = nothing but the GEMMs)")
    L.append("")
    if not rows:  # only the streaming section ran
        return "\n".join(L)
    lstm = [r for r in rows if r.get("cell", "lstm") == "lstm"]
    gru = [r for r in rows if r.get("cell") == "gru"]
    if lstm:
        L += _table(lstm)
    if gru:
        L.append("")
        L.append("## GRU")
        L.append("")
        L.append("`fr.GRU` (linear_before_reset=True, mapped with `fr.GRU.from_torch`) against "
                 "`torch.nn.GRU` and ONNX Runtime's GRU node (linear_before_reset=1); the floor "
                 "is the GRU's GEMMs (3H gate columns).")
        L.append("")
        L += _table(gru)
    if any(r.get("packed") for r in rows):
        L.append("")
        L.append("(p): at this batch size and thread count fusedrnn runs its per-step recurrent "
                 "GEMMs on its own packed-weight micro-kernel (the `packed_max_rows` setting), not "
                 "on the BLAS; the floor is the same GEMMs through the BLAS (`_kernel.gemm`), so "
                 "there it is not a lower bound and fr/floor < 1 is possible.")
    noisy = [f"{r['case']} {COMPETITOR_LABEL[r['competitor']]} {r['threads_requested']} thr "
             f"{MODES[mode]} ({100 * t['iqr_rel']:.0f}%)"
             for r in results.values() for mode, t in r["timings"].items()
             if t["n"] >= 10 and t["iqr_rel"] > NOISY_IQR]
    if noisy:
        L.append("")
        L.append(f"Noisy measurements (IQR > {100 * NOISY_IQR:.0f}% of the median): " + "; ".join(noisy))
    bg = [r["background_load"] for r in results.values() if "background_load" in r]
    busy = [f"{r['case']} {COMPETITOR_LABEL[r['competitor']]} {r['threads_requested']} thr "
            f"({100 * r['background_load']:.0f}%)"
            for r in results.values() if r.get("background_load", 0) > BUSY_BACKGROUND]
    if bg:
        L.append("")
        L.append(f"Other processes used on average {100 * statistics.mean(bg):.0f}% of the machine "
                 f"while the jobs ran (from /proc/stat minus the worker's own CPU time)"
                 + (f"; above {100 * BUSY_BACKGROUND:.0f}% during {len(busy)} of {len(bg)} jobs: "
                    + "; ".join(busy) if busy else "."))
    L.append("")
    L.append("## Memory (fusedrnn, per call, all cells)")
    L.append("")
    L.append("Training: bytes kept for the backward = the kernel's activation store + the outputs y; "
             "minimum = gates (4H) + state (H) per step and row (+ v (H) with projection; the GRU: "
             "r, z, n and W_hn h[n-1] + b_hn, and h). "
             "Inference: the kernel workspace, against B·H (summed over cells), and its size for "
             "T = 100000 (it is bounded in T: the input GEMM runs in chunks of about 256 rows).")
    L.append("")
    L.append("| case | dims | train: stored MB | train: minimum MB | stored / minimum | "
             "inference workspace KB | / (B·H) | at T = 100000, KB |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, mem in memory.items():
        case = next(c for c in settings["_cases"] if c.name == name)
        L.append(f"| {case.label()} | {case.dims()} | "
                 f"{mem['train_stored_bytes'] / 2**20:.2f} | {mem['train_min_bytes'] / 2**20:.2f} | "
                 f"{mem['train_ratio']:.2f} | {mem['infer_workspace_bytes'] / 2**10:.1f} | "
                 f"{mem['infer_ratio_to_BH']:.1f} | "
                 f"{mem['infer_workspace_limit_bytes'] / 2**10:.1f} |")
    L.append("")
    L.append("## Correctness checks before timing (largest difference per case)")
    L.append("")
    for name, d in checks.items():
        L.append(f"- {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()))
    floor_over = sorted({r.get("python_call_overhead_s", 0) for k, r in results.items()
                         if k.startswith("floor|")})
    if floor_over:
        L.append("")
        L.append(f"The GEMM floor is timed through `fusedrnn._kernel.gemm` called from Python; the "
                 f"Python cost of a call ({1e6 * floor_over[0]:.1f}-{1e6 * floor_over[-1]:.1f} µs, "
                 "the median of a 1x1x1 call) times the number of calls is subtracted (the raw "
                 "time is `raw_median` in the JSON). It matters only for the smallest cases.")
    return "\n".join(L) + "\n"


TICKS = [2.0 ** k for k in range(-8, 10)] + [0.75, 1.1, 1.2, 1.5, 3, 6, 12]


def plot(rows: List[dict], path: str, threads_list: List[int]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["small", "sweep B=1", "sweep B=4", "sweep B=16", "medium", "sweep B=64", "large"]
    labels = {"small": "small\nB=1 H=128", "sweep B=1": "B=1", "sweep B=4": "B=4",
              "sweep B=16": "B=16", "medium": "medium\nB=32", "sweep B=64": "B=64",
              "large": "large\nB=64 H=1024"}
    plain = [r for r in rows if r["variant"] == "plain" and r.get("cell", "lstm") == "lstm"]
    sizes = [s for s in order if any(r["size"] == s for r in plain)]
    if not sizes:
        return
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    styles = {1: "-", 2: "--"}
    for col, mode in enumerate(MODES):
        for row, kinds in enumerate([("torch", "ort", "oracle"), ("floor",)]):
            ax = axes[row][col]
            for comp, color in zip(kinds, ("C0", "C1", "C2") if row == 0 else ("C3",)):
                for th in threads_list:
                    xs, ys, packed = [], [], []
                    for i, s in enumerate(sizes):
                        r = next((r for r in plain if r["size"] == s and r["threads"] == th
                                  and r["mode"] == mode), None)
                        if r and r["ratios"][comp] is not None:
                            xs.append(i)
                            ys.append(r["ratios"][comp])
                            packed.append(bool(r.get("packed")))
                    if xs:
                        name = "fr / GEMM floor" if comp == "floor" else f"{COMPETITOR_LABEL[comp]} / fr"
                        ax.plot(xs, ys, styles.get(th, ":"), marker="o", color=color,
                                label=f"{name}, {th} thread{'s' if th > 1 else ''}")
                        if comp == "floor" and any(packed):  # hollow: fr on its packed kernel
                            ax.plot([x for x, p in zip(xs, packed) if p],
                                    [y for y, p in zip(ys, packed) if p], "o", color=color,
                                    markerfacecolor="white", zorder=3,
                                    label="hollow: fr's per-step GEMMs on its packed kernel"
                                    if th == threads_list[0] else None)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ticks = [t for t in TICKS if lo <= t <= hi]
            if len(ticks) > 8:
                ticks = [t for t in ticks if math.log2(t).is_integer()]
            ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}x"))
            ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if row == 1:  # the floor targets: medium 1.1 / 1.2, large 1.15
                ax.axhline({"inference": 1.1, "train": 1.2}[mode], color="C3", lw=0.8, ls=":",
                           label="medium target")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{MODES[mode]}: " + ("competitor / fusedrnn (> 1: fusedrnn faster)"
                                               if row == 0 else "fusedrnn / BLAS GEMM floor (1 = GEMMs only)"),
                         fontsize=10)
            ax.legend(fontsize=8)
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels([labels[s] for s in sizes], fontsize=8)
    fig.suptitle("fusedrnn LSTM, plain float32: ratio of medians vs size "
                 "(sweep: T=100 I=H=256; small T=100 I=64 H=128; large T=50 I=512 H=1024)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dump_json(blob: dict) -> str:
    """Indented JSON with every list of numbers on one line (raw times rounded to 0.1 µs)."""
    def rounded(o):
        if isinstance(o, dict):
            return {k: rounded(v) for k, v in o.items()}
        if isinstance(o, list):
            return [rounded(v) for v in o]
        if isinstance(o, float) and math.isfinite(o) and abs(o) < 1e3:
            return float(f"{o:.4g}") if abs(o) >= 1 else round(o, 7) if abs(o) > 1e-3 else float(f"{o:.4g}")
        return o
    text = json.dumps(rounded(blob), indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
