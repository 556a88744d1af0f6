#!/usr/bin/env python3
"""fusedrnn benchmark suite: fr.LSTM against torch.nn.LSTM, ONNX Runtime's LSTM
operator, the NumPy oracle and the GEMM floor, over sizes, variants and thread counts, fr.GRU
against torch.nn.GRU and ONNX Runtime's GRU, and the per-frame latency of streaming.

    python bench/run.py              # everything, ~20 min on a 2-core machine
    python bench/run.py --quick      # smoke subset, a few minutes
    python bench/run.py --cases medium --threads 2 --budget 3   # a slice of the matrix
    python bench/run.py --cases gru                             # the GRU rows only
    python bench/run.py --cases streaming                       # the streaming section only
    python bench/run.py --baseline ../before/.venv/bin/python   # another installation too, interleaved
    python bench/run.py --reduced    # the reduced-precision section (bf16, int8) only

Every competitor runs in its own worker process, one per (competitor, thread count), kept
alive for the whole run and fed one job per line (JSON in, JSON out), so the thread pools of
OpenBLAS, PyTorch and ONNX Runtime never share a process. Before a case is timed the parent
checks that the competitors compute the same thing (fusedrnn vs torch through from_torch,
vs ONNX Runtime, vs the NumPy oracle); it refuses to time on a mismatch.

Outputs (in --out, default bench/results/): <tag>.json (every measurement, every raw time,
machine info), <tag>.md (the tables), <tag>-ratios.png or ratios.png (ratio vs size); with
--baseline also <tag>-baseline.{json,md} and <tag>-compare.md. The tag is "latest" for a full
run (which also writes latest-full.json, the committed copy) and "quick" for --quick. See
bench/README.md for what every column means.

The parts: cases.py (the matrix and its targets), problems.py (weights, data, the check before
timing), streaming.py (the streaming section), timing.py, workers.py (the worker processes and
what each competitor times), build.py (what a worker reads of its fusedrnn), report.py (rows,
tables, plot, JSON), compare.py (two runs side by side); this file runs them.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the bench modules, also when imported

import compare  # noqa: E402
import reduced  # noqa: E402
import streaming  # noqa: E402
from cases import (BUILD_COMPETITORS, COMPETITOR_LABEL, COMPETITORS, FULL_MATRIX, MODES,  # noqa: E402
                   QUICK_MATRIX, Case, make_case)
from problems import check_case, memory_report  # noqa: E402
from report import build_info, build_rows, dump_json, fmt_ms, machine_info, markdown, plot  # noqa: E402
from timing import merge_rounds, wait_until_idle  # noqa: E402
from streaming import StreamCase  # noqa: E402
from workers import Worker, serve  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ALL_COMPETITORS = (COMPETITORS + tuple(c for c in streaming.COMPETITORS if c not in COMPETITORS)
                   + tuple(reduced.COMPETITORS))
BASELINE_SUFFIX = "|baseline"  # the result keys of --baseline's build
SETTLE_S = 0.15     # pause before each job: lets idle thread pools of the last worker sleep


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke subset (< 2 min): small sizes and "
                   "medium plain, short time budgets")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--cases", metavar="REGEX", help="only the cases whose name matches: 'size / variant' (small / plain, "
                   "sweep B=16 / plain, ...), 'gru size / variant' (gru medium / float64) or "
                   "'streaming / H=128 B=1'")
    p.add_argument("--budget", type=float, help="seconds of timed calls per measurement "
                   "(default 3; --quick 0.1)")
    p.add_argument("--rounds", type=int, help="the competitors of a case take turns this many "
                   "times, each with budget / rounds (default 3; --quick 1)")
    p.add_argument("--min-rep", type=int, help="minimum timed calls (default 7; --quick 3)")
    p.add_argument("--max-rep", type=int, help="maximum timed calls (default 200; --quick 30)")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    p.add_argument("--tag", help="output name (default: latest, or quick with --quick)")
    p.add_argument("--tol", type=float, default=1e-4, help="agreement tolerance (default 1e-4)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="wait up to S seconds for the 1-min load average to drop below 0.5")
    p.add_argument("--pause-when-busy", type=float, metavar="S",
                   help="before each case, wait up to S seconds while other processes use more "
                        "than 15%% of the machine (default 60; --quick 0)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (a line per case)")
    p.add_argument("--replot", metavar="JSON", help="only redraw the plot of a run's JSON "
                   "(next to it: ratios.png for latest*.json, else <name>-ratios.png)")
    p.add_argument("--baseline", metavar="PYTHON",
                   help="also time the fusedrnn of another installation, the one this Python "
                        "interpreter imports (e.g. an older commit's .venv/bin/python), interleaved "
                        "with this one's in every round; writes <tag>-baseline.{json,md} and the "
                        "comparison <tag>-compare.md (bench/compare.py)")
    p.add_argument("--frames", type=int, help="frames of each streaming case (default "
                   f"{streaming.FRAMES}; --quick {streaming.QUICK_FRAMES})")
    p.add_argument("--memory-frames", type=int, help="stream steps of the streaming memory check "
                   f"(default {streaming.MEMORY_FRAMES}; --quick 10 x --frames; 0: none)")
    p.add_argument("--reduced", action="store_true", help="only the reduced-precision section: "
                   "bf16 and int8 inference against ONNX Runtime, OpenVINO and torch "
                   "(bench/reduced.py)")
    p.add_argument("--reduced-competitors", metavar="LIST", help="comma-separated subset of "
                   f"the reduced section's competitors ({', '.join(reduced.COMPETITORS)})")
    p.add_argument("--serve", choices=ALL_COMPETITORS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass
        self.total, self.done = total, 0

    def set(self, text: str) -> None:
        if self.bar:
            self.bar.set_description_str(text)

    def step(self) -> None:
        self.done += 1
        if self.bar:
            self.bar.update(1)

    def write(self, line: str) -> None:
        if self.bar:
            self.bar.write(line, file=sys.stderr)
        else:
            print(f"[{self.done}/{self.total}] {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


@dataclass(frozen=True)
class Job:
    """One measurement of the plan: a competitor at a thread count on a case, of this
    installation's fusedrnn or (build "baseline") of --baseline's."""
    case: Union[Case, StreamCase]
    threads: int
    competitor: str
    key: str
    build: str = ""


def plan_jobs(cases: List[Case], scases: List[StreamCase], threads_list: List[int],
              baseline: bool) -> List[List[Job]]:
    """The unique jobs of every case, in groups that take their turns together: a competitor
    of the fusedrnn build with its baseline twin, else alone. Identical computations
    (`Case.job_key`) are measured once, in the first case that has them. The streaming
    cases run on one thread."""
    groups: List[List[Job]] = []
    seen = set()

    def add(case, th: int, comp: str, key: str, build_competitors: Sequence[str]) -> None:
        if key not in seen:
            seen.add(key)
            group = [Job(case, th, comp, key)]
            if baseline and comp in build_competitors:
                group.append(Job(case, th, comp, key + BASELINE_SUFFIX, "baseline"))
            groups.append(group)

    for case in cases:
        for th in threads_list:
            for comp in COMPETITORS:
                if case.runs(comp):
                    add(case, th, comp, f"{case.job_key(comp)}|t{th}", BUILD_COMPETITORS)
    for sc in scases:
        for comp in streaming.COMPETITORS:
            add(sc, 1, comp, sc.job_key(comp), streaming.BUILD_COMPETITORS)
    return groups


def run_case(case: Union[Case, StreamCase], groups: List[List[Job]],
             workers: Mapping[Tuple[str, int, str], Worker], job_fields: dict, rounds: int,
             tol: float, progress: Progress) -> Dict[str, dict]:
    """Time the jobs of one case. The competitors take turns, `rounds` times, each with its
    share of the budget: a slow spell of the host then hits all of them, not just one. The
    twins of a group swap their order every round."""
    parts: Dict[str, List[dict]] = {j.key: [] for g in groups for j in g}
    for rnd in range(rounds):
        for group in groups:
            for job in (group if rnd % 2 == 0 else group[::-1]):
                progress.set(f"{case.name} | {job.threads} thr | {COMPETITOR_LABEL[job.competitor]}"
                             + (f" ({job.build})" if job.build else "")
                             + (f" | round {rnd + 1}/{rounds}" if rounds > 1 else ""))
                time.sleep(SETTLE_S)
                worker = workers[(job.competitor, job.threads, job.build)]
                r = worker.run({**job_fields, "case": dataclasses.asdict(case), "round": rnd})
                if r.get("check_y_abs", 0.0) > tol:
                    raise RuntimeError(f"{case.name}: the fusedrnn of {worker.info.get('fusedrnn')} "
                                       f"differs from the checked output by {r['check_y_abs']:.2e} "
                                       f"(> {tol:g}); not timing")
                parts[job.key].append(r)
    results = {}
    for job in (j for g in groups for j in g):
        r = merge_rounds(parts[job.key])
        r.update(competitor=job.competitor, threads_requested=job.threads, case=case.name,
                 key=job.key, loadavg=os.getloadavg()[0])
        if job.build:
            r["build"] = job.build
        results[job.key] = streaming.finish(r) if isinstance(case, StreamCase) else r
        progress.step()
    return results


def case_summary(case: Case, threads_list: List[int], results: Mapping[str, dict]) -> str:
    summary = []
    for th in threads_list:
        fr_r = results.get(f"{case.job_key('fusedrnn')}|t{th}")
        to_r = results.get(f"{case.job_key('torch')}|t{th}")
        if fr_r and to_r:
            summary.append(f"{th} thr: " + ", ".join(
                f"{m} fr {fmt_ms(fr_r['timings'][m]['median'])} ms torch/fr "
                f"{to_r['timings'][m]['median'] / fr_r['timings'][m]['median']:.2f}"
                for m in MODES))
    return f"{case.name} ({case.dims()}): " + " | ".join(summary)


def split_builds(results: Mapping[str, dict]) -> Tuple[Dict[str, dict], Dict[str, dict]]:
    """(this installation's results, the baseline's): the baseline's are the same shared
    competitors with its own fusedrnn build's measurements in their place."""
    own = {k: r for k, r in results.items() if not k.endswith(BASELINE_SUFFIX)}
    base = {k: results.get(k + BASELINE_SUFFIX, r) for k, r in own.items()}
    return own, {k: {kk: v for kk, v in r.items() if kk != "build"} for k, r in base.items()}


def write_run(out: str, tag: str, info: dict, settings: dict, cases: List[Case],
              scases: List[StreamCase], results: Mapping[str, dict], checks: dict, memory: dict,
              loads: dict, waits: dict, elapsed: float,
              threads_list: List[int]) -> Tuple[dict, str, List[str]]:
    """<tag>.json and <tag>.md of one build's results; returns (the JSON blob, the Markdown,
    the names written)."""
    kernels = sorted({r["kernel_sha256"] for r in results.values() if "kernel_sha256" in r})
    if len(kernels) > 1:
        print(f"warning: the workers loaded different builds of the kernel ({kernels}): "
              "the C sources changed during the run", file=sys.stderr)
    gemm = sorted({r["gemm"] for r in results.values() if "gemm" in r})
    stream_results = {k: r for k, r in results.items() if k.startswith("stream|")}
    results = {k: r for k, r in results.items() if k not in stream_results}
    stream_checks = {c.name: checks[c.name] for c in scases}
    checks = {k: v for k, v in checks.items() if k not in stream_checks}
    settings = {**settings, "gemm": ",".join(gemm), "kernel_builds": kernels}
    rows = build_rows(cases, threads_list, results)
    md = markdown(info, {**settings, "_cases": cases}, rows, memory, checks, results, elapsed)
    blob = {"machine": info, "settings": settings, "elapsed_s": elapsed,
            "cases": [{**dataclasses.asdict(c), "name": c.name, "dtype": c.dtype, "P": c.P,
                       "layers": c.layers, "directions": c.D, "loadavg_at_start": loads.get(c.name),
                       "quiet_wait": waits.get(c.name)}
                      for c in cases],
            "checks": checks, "memory": memory, "rows": rows, "results": results}
    if scases:
        srows = streaming.build_rows(scases, stream_results)
        md += "\n" + streaming.markdown(srows, stream_checks)
        blob["streaming"] = {
            "cases": [{**dataclasses.asdict(c), "name": c.name, "loadavg_at_start": loads.get(c.name),
                       "quiet_wait": waits.get(c.name)} for c in scases],
            "checks": stream_checks, "rows": srows, "results": stream_results}
    written = []
    for name, text in ((f"{tag}.json", dump_json(blob)), (f"{tag}.md", md)):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
        written.append(name)
    return blob, md, written


def run_reduced(args: argparse.Namespace, threads_list: List[int]) -> int:
    """The reduced-precision section alone (bench/reduced.py): its tables on stdout and in
    <out>/reduced[-quick].{json,md}."""
    competitors = None
    if args.reduced_competitors:
        competitors = [c.strip() for c in args.reduced_competitors.split(",") if c.strip()]
        unknown = [c for c in competitors if c not in reduced.COMPETITORS]
        if unknown or "fr_f32" not in competitors:
            sys.exit(f"--reduced-competitors: unknown {unknown}; fr_f32 (the reference) is needed")
    import fusedrnn  # noqa: F401  (the editable rebuild, if any, before the workers start)
    blob = reduced.run(threads_list, args.quick,
                       budget=args.budget if args.budget is not None else (0.05 if args.quick else 2.0),
                       rounds=args.rounds or (1 if args.quick else 3),
                       min_rep=args.min_rep or (2 if args.quick else 7),
                       max_rep=args.max_rep or (10 if args.quick else 200), out=args.out,
                       competitors=competitors, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(reduced.markdown(blob))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.serve:
        return serve(args.serve, threads_list[0])
    if args.replot:
        with open(args.replot) as f:
            blob = json.load(f)
        stem = os.path.splitext(os.path.basename(args.replot))[0]
        png = os.path.join(os.path.dirname(os.path.abspath(args.replot)),
                           "ratios.png" if stem.startswith("latest") else f"{stem}-ratios.png")
        plot(blob["rows"], png, blob["settings"]["threads"])
        print(f"wrote {os.path.relpath(png)}", file=sys.stderr)
        return 0
    if any(t < 1 for t in threads_list):
        sys.exit("--threads: counts must be >= 1")
    if args.baseline and not (os.path.isfile(args.baseline) and os.access(args.baseline, os.X_OK)):
        sys.exit(f"--baseline: {args.baseline} is not an executable Python interpreter")

    quick = args.quick
    if args.reduced:
        return run_reduced(args, threads_list)
    budget = args.budget if args.budget is not None else (0.1 if quick else 3.0)
    rounds = args.rounds or (1 if quick else 3)
    if rounds < 1:
        sys.exit("--rounds must be >= 1")
    min_rep = args.min_rep or (3 if quick else 7)
    max_rep = args.max_rep or (30 if quick else 200)
    tag = args.tag or ("quick" if quick else "latest")
    matrix = QUICK_MATRIX if quick else FULL_MATRIX
    cases = [make_case(*m) for m in matrix]
    if args.cases:
        cases = [c for c in cases if re.search(args.cases, c.name)]
    scases = streaming.cases(quick, args.frames, args.memory_frames, args.cases)
    if not cases and not scases:
        sys.exit("no case matches --cases")
    if (args.frames is not None and args.frames < 1) or (args.memory_frames or 0) < 0:
        sys.exit("--frames must be >= 1 and --memory-frames >= 0")

    if args.wait_quiet > 0:
        t_end = time.time() + args.wait_quiet
        while os.getloadavg()[0] >= 0.5 and time.time() < t_end:
            time.sleep(10)
    load_before = os.getloadavg()[0]
    if load_before >= 0.5:
        print(f"warning: 1-min load average {load_before:.2f} >= 0.5 at the start: something else "
              "is using the CPU, timings may be disturbed", file=sys.stderr)

    t_start = time.time()
    import fusedrnn  # noqa: F401  (triggers the editable rebuild, if any, before the workers start)
    info = machine_info()
    os.makedirs(args.out, exist_ok=True)

    groups = plan_jobs(cases, scases, threads_list, bool(args.baseline))
    jobs = [j for g in groups for j in g]
    needed = sorted({(j.competitor, j.threads, j.build) for j in jobs},
                    key=lambda p: (p[1], ALL_COMPETITORS.index(p[0]), p[2]))
    logdir = tempfile.mkdtemp(prefix="fusedrnn_bench_")
    # start all: they import in parallel
    workers = {p: Worker(p[0], p[1], logdir, python=args.baseline if p[2] else None, label=p[2])
               for p in needed}
    progress = Progress(len(jobs), not args.no_progress)
    results: Dict[str, dict] = {}
    checks: Dict[str, dict] = {}
    memory: Dict[str, dict] = {}
    loads: Dict[str, float] = {}
    waits: Dict[str, dict] = {}
    pause = args.pause_when_busy if args.pause_when_busy is not None else (0 if quick else 60)
    try:
        progress.set("starting workers")
        for w in workers.values():
            w.wait_ready()
        for case in [*cases, *scases]:
            if pause > 0:
                progress.set(f"{case.name}: waiting for a quiet machine")
                waited, busy = wait_until_idle(pause)
                waits[case.name] = {"waited_s": waited, "busy_share": busy}
            progress.set(f"{case.name}: checking")
            stream = isinstance(case, StreamCase)
            if stream:
                diffs, arrays = streaming.check(case, args.tol)
            else:
                diffs, arrays = check_case(case, max(threads_list), args.tol)
                memory[case.name] = memory_report(case)
            checks[case.name] = diffs
            loads[case.name] = os.getloadavg()[0]
            path = os.path.join(logdir, "problem.npz")
            np.savez(path, **arrays)
            gc.collect()
            job_fields = {"problem": path, "budget": budget / rounds,
                          "min_rep": max(1, -(-min_rep // rounds)), "max_rep": max(1, max_rep // rounds)}
            if stream:
                job_fields["section"] = streaming.SECTION
            case_groups = [g for g in groups if g[0].case is case]
            results.update(run_case(case, case_groups, workers, job_fields, rounds, args.tol, progress))
            progress.write(streaming.summary(case, results) if stream
                           else case_summary(case, threads_list, results))
    finally:
        progress.close()
        for w in workers.values():
            w.close()
    elapsed = time.time() - t_start
    shutil.rmtree(logdir, ignore_errors=True)

    settings = {"quick": quick, "threads": threads_list, "budget": budget, "rounds": rounds,
                "frames": scases[0].frames if scases else None,
                "memory_frames": scases[0].memory_frames if scases else None,
                "min_rep": min_rep,
                "max_rep": max_rep, "tol": args.tol, "cases_filter": args.cases,
                "date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_before": load_before,
                "load_after": os.getloadavg()[0],
                "argv": sys.argv[1:], "pause_when_busy": pause,
                "waited_s": sum(w["waited_s"] for w in waits.values())}
    own, base = split_builds(results)
    common = (checks, memory, loads, waits, elapsed, threads_list)
    if args.baseline:
        settings["baseline"] = args.baseline
    blob, md, written = write_run(args.out, tag, info, settings, cases, scases, own, *common)
    full = not quick and not args.cases and args.tag is None and threads_list == [1, 2]
    if full:
        shutil.copyfile(os.path.join(args.out, f"{tag}.json"), os.path.join(args.out, "latest-full.json"))
        written.append("latest-full.json")
    png = "ratios.png" if tag == "latest" else f"{tag}-ratios.png"
    try:
        plot(blob["rows"], os.path.join(args.out, png), threads_list)
        written.append(png)
    except ImportError as e:
        print(f"no plot ({e}): pip install matplotlib", file=sys.stderr)
    print(md)
    if args.baseline:
        worker_info = next(w.info for p, w in workers.items() if p[2])
        base_info = build_info(info, worker_info)
        base_blob, _, names = write_run(args.out, f"{tag}-baseline", base_info,
                                        {**settings, "this_build": REPO}, cases, scases, base,
                                        *common)
        written += names
        table = compare.markdown(compare.compare(base_blob, blob), base_blob, blob)
        with open(os.path.join(args.out, f"{tag}-compare.md"), "w") as f:
            f.write(table)
        written.append(f"{tag}-compare.md")
        print(table)
    print(f"{elapsed / 60:.1f} min; wrote " + ", ".join(os.path.join(os.path.relpath(args.out), w)
                                                       for w in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
