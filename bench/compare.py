#!/usr/bin/env python3
"""Compare two runs of bench/run.py row by row: the medians of each build, their ratio, and the
rows that got more than 3% slower.

    python bench/compare.py before.json after.json          # a Markdown table on stdout
    python bench/compare.py before.json after.json --competitors fusedrnn,floor --threshold 0.05

Meant for two runs on one host in one sitting; `run.py --baseline PYTHON` makes such a pair,
interleaved, and writes this comparison itself. A row is flagged when after / before exceeds
1 + threshold; `noise` is the larger spread of the two runs' round medians ((max - min) /
median; the interquartile range for a run of one round), so a flagged row within it is
likely host noise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streaming  # noqa: E402
from cases import COMPETITOR_LABEL, MODES, Case  # noqa: E402

THRESHOLD = 0.03
BUILD = ("fusedrnn", "frtorch")  # the columns that time the fusedrnn installation
Key = Tuple[str, int, str, str]  # (case, threads, mode, competitor)


def _noise(timing: Mapping) -> Optional[float]:
    rm = timing.get("round_medians") or []
    if len(rm) > 1:
        return (max(rm) - min(rm)) / timing["median"]
    return timing.get("iqr_rel")


def measurements(blob: Mapping) -> Dict[Key, dict]:
    """Every median of a run: (case, threads, mode, competitor) -> median (s), noise, labels;
    in the streaming section the mode is the measurement (stream, forward, ...)."""
    cases = {c["name"]: Case(*(c[f] for f in ("size", "variant", "T", "B", "I", "H")),
                             cell=c.get("cell", "lstm"))
             for c in blob["cases"]}
    out: Dict[Key, dict] = {}
    for row in blob["rows"]:
        case = cases[row["case"]]
        for comp, med in row["median_s"].items():
            if med is None:
                continue
            r = blob["results"].get(f"{case.job_key(comp)}|t{row['threads']}", {})
            timing = r.get("timings", {}).get(row["mode"], {})
            out[(row["case"], row["threads"], row["mode"], comp)] = {
                "median": med, "noise": _noise(timing) if timing else None,
                "label": case.label(),
                "dims": row["dims"] + ("" if row["dtype"] == "float32" else " f64"),
                "mode": MODES.get(row["mode"], row["mode"])}
    section = blob.get("streaming", {})
    for row in section.get("rows", []):
        for m, med in row["median_s"].items():
            if med is None:
                continue
            key, mode = row["sources"][m]
            timing = section["results"][key]["timings"][mode]
            out[(row["case"], row["threads"], m, streaming.MEASUREMENTS[m][0])] = {
                "median": med, "noise": _noise(timing), "label": row["case"],
                "dims": row["dims"], "mode": streaming.LABEL[m]}
    return out


def compare(before: Mapping, after: Mapping, competitors: Sequence[str] = BUILD,
            threshold: float = THRESHOLD) -> List[dict]:
    """One entry per measurement of `competitors` present in both runs, in the after run's order."""
    b, a = measurements(before), measurements(after)
    rows = []
    for key, m in a.items():
        if key[3] not in competitors or key not in b:
            continue
        ratio = m["median"] / b[key]["median"]
        noises = [n for n in (b[key]["noise"], m["noise"]) if n is not None]
        noise = max(noises) if noises else None
        rows.append({"case": key[0], "threads": key[1], "mode": key[2], "competitor": key[3],
                     "label": m["label"], "dims": m["dims"], "mode_label": m["mode"],
                     "before_s": b[key]["median"], "after_s": m["median"], "ratio": ratio,
                     "noise": noise, "slower": ratio > 1 + threshold,
                     "beyond_noise": noise is not None and ratio - 1 > noise})
    return rows


def _time(t: float) -> str:
    if t < 1e-4:
        return f"{1e6 * t:.2f} µs"
    ms = 1e3 * t
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms" if ms < 100 else f"{ms:.1f} ms"


def _build(blob: Mapping) -> str:
    m = blob["machine"]
    return (f"fusedrnn {m['versions'].get('fusedrnn')} at git {m['git'].get('describe', '?')}"
            + (f" ({m['fusedrnn_path']})" if m.get("fusedrnn_path") else ""))


def markdown(rows: List[dict], before: Mapping, after: Mapping, threshold: float = THRESHOLD) -> str:
    L = ["## Before / after", "",
         f"- before: {_build(before)}, {before['settings']['date']}",
         f"- after: {_build(after)}, {after['settings']['date']}"]
    if before["machine"]["cpu"] != after["machine"]["cpu"]:
        L.append(f"- **different CPUs** ({before['machine']['cpu']} / {after['machine']['cpu']}): "
                 "the times do not compare")
    L.append(f"- after / before > 1: the after build is slower; flagged above {1 + threshold:g}; "
             "noise: the larger spread of the two runs' round medians")
    L += ["", "| case | dims | mode | thr | competitor | before | after | after / before | "
          "noise | |", "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        flag = ("**slower**" if r["beyond_noise"] else "slower, within noise") if r["slower"] else ""
        noise = "—" if r["noise"] is None else f"{100 * r['noise']:.0f}%"
        L.append(f"| {r['label']} | {r['dims']} | {r['mode_label']} | {r['threads']} | "
                 f"{COMPETITOR_LABEL.get(r['competitor'], r['competitor'])} | {_time(r['before_s'])} | "
                 f"{_time(r['after_s'])} | {r['ratio']:.3f} | {noise} | {flag} |")
    L.append("")
    if rows:
        ratios = [r["ratio"] for r in rows]
        gmean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        slower = [r for r in rows if r["slower"]]
        L.append(f"{len(rows)} rows; after / before: geometric mean {gmean:.3f}, "
                 f"{min(ratios):.3f} to {max(ratios):.3f}; more than {100 * threshold:g}% slower: "
                 f"{len(slower)}"
                 + (" (" + "; ".join(f"{r['label']} {r['mode_label']} {r['threads']} thr "
                                     f"{r['ratio']:.3f}" for r in slower) + ")" if slower else "")
                 + ".")
    else:
        L.append("No rows in common.")
    return "\n".join(L) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="the JSON of the run before (e.g. results/latest-baseline.json)")
    p.add_argument("after", help="the JSON of the run after (e.g. results/latest.json)")
    p.add_argument("--competitors", default=",".join(BUILD),
                   help="comma-separated columns to compare (default %(default)s: the fusedrnn "
                        "build's; also floor, torch, ort, oracle)")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help="flag rows slower by more than this fraction (default %(default)s)")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--fail-slower", action="store_true",
                   help="exit with status 1 when a row is flagged beyond its noise")
    args = p.parse_args(argv)
    with open(args.before) as f:
        before = json.load(f)
    with open(args.after) as f:
        after = json.load(f)
    rows = compare(before, after, [c.strip() for c in args.competitors.split(",") if c.strip()],
                   args.threshold)
    text = markdown(rows, before, after, args.threshold)
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if args.fail_slower and any(r["slower"] and r["beyond_noise"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
