"""The benchmark scripts run: a one-case slice of bench/run.py (with a second installation
timed beside it), its GRU row and bench/bench_lstm.py end to end (worker processes, the check before timing,
the JSON and Markdown outputs); the check refuses to time competitors that disagree; compare.py
flags the rows that got slower. Nothing here asserts a speed."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("threadpoolctl")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
TOL = 1e-4


def bench_module(name: str):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return __import__(name)


def run_script(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One case, one thread, two rounds, with this interpreter's installation as the baseline."""
    out = tmp_path_factory.mktemp("bench")
    run_script("bench/run.py", "--quick", "--cases", "^small / plain$", "--threads", "1",
               "--budget", "0.01", "--rounds", "2", "--min-rep", "2", "--max-rep", "3",
               "--no-progress", "--out", str(out), "--tag", "smoke", "--baseline", sys.executable)
    return out


def test_run_one_case(smoke_run):
    tmp_path = smoke_run
    blob = json.loads((tmp_path / "smoke.json").read_text())
    assert [c["name"] for c in blob["cases"]] == ["small / plain"]
    # every competitor was checked against fusedrnn before timing, within the tolerance
    checks = blob["checks"]["small / plain"]
    assert any(k.startswith("torch") for k in checks) and any(k.startswith("ORT") for k in checks)
    assert any(k.startswith("oracle") for k in checks)
    assert all(0 <= v <= TOL for v in checks.values()), checks
    assert [(r["mode"], r["threads"]) for r in blob["rows"]] == [("inference", 1), ("train", 1)]
    for row in blob["rows"]:
        med = row["median_s"]
        expected = {"fusedrnn", "torch", "oracle", "floor", "ort"}
        if row["mode"] != "inference":  # ORT: inference only
            expected.remove("ort")
        assert {c for c, t in med.items() if t is not None} == expected
        # the JSON keeps 4 digits
        assert row["ratios"]["torch"] == pytest.approx(med["torch"] / med["fusedrnn"], rel=1e-3)
    for r in blob["results"].values():
        for t in r["timings"].values():
            assert 2 <= t["n"] <= 3 and len(t["times"]) == t["n"] and len(t["round_medians"]) == 2
    md = (tmp_path / "smoke.md").read_text()
    assert "| small plain | T=100 B=1 I=64 H=128 | inference | 1 |" in md


def test_baseline_run(smoke_run):
    """The baseline's file has its own fusedrnn and floor measurements and the shared others;
    each build's output was compared with the checked one."""
    own = json.loads((smoke_run / "smoke.json").read_text())
    base = json.loads((smoke_run / "smoke-baseline.json").read_text())
    assert sorted(own["results"]) == sorted(base["results"])
    for key, r in own["results"].items():
        b = base["results"][key]
        if r["competitor"] in ("fusedrnn", "floor"):
            assert b["timings"]["inference"]["times"] != r["timings"]["inference"]["times"]
        else:
            assert b == r
        if r["competitor"] == "fusedrnn":
            assert r["check_y_abs"] <= TOL and b["check_y_abs"] <= TOL
    assert base["machine"]["fusedrnn_python"] == sys.executable
    table = (smoke_run / "smoke-compare.md").read_text()
    assert table.count("| small plain | T=100 B=1 I=64 H=128 |") == 2


def test_compare_flags_slower_rows(smoke_run):
    compare = bench_module("compare")
    before = json.loads((smoke_run / "smoke.json").read_text())
    after = copy.deepcopy(before)
    for row in after["rows"]:
        if row["mode"] == "inference":
            row["median_s"]["fusedrnn"] *= 1.10
    rows = compare.compare(before, after)
    assert [(r["mode"], r["competitor"]) for r in rows] == [("inference", "fusedrnn"), ("train", "fusedrnn")]
    assert rows[0]["ratio"] == pytest.approx(1.10) and rows[0]["slower"]
    assert rows[1]["ratio"] == 1.0 and not rows[1]["slower"]
    key = "fusedrnn|100,1,64,128,0|float32|L1D1|peep=0|t1"
    rm = before["results"][key]["timings"]["inference"]["round_medians"]
    assert rows[0]["noise"] == pytest.approx((max(rm) - min(rm)) / before["rows"][0]["median_s"]["fusedrnn"])
    text = compare.markdown(rows, before, after)
    assert "| 1.100 |" in text and "more than 3% slower: 1" in text
    assert f"| {compare._time(before['rows'][1]['median_s']['fusedrnn'])} |" in text
    assert [compare._time(t) for t in (2.5e-6, 4e-4, 0.0125, 0.25)] == \
        ["2.50 µs", "0.400 ms", "12.50 ms", "250.0 ms"]
    assert len(compare.compare(before, after, competitors=("fusedrnn", "torch"))) == 4
    path = smoke_run / "slower.json"
    path.write_text(json.dumps(after))
    proc = subprocess.run([sys.executable, "bench/compare.py", str(smoke_run / "smoke.json"), str(path),
                           "--threshold", "0.05", "--fail-slower"], cwd=REPO, capture_output=True, text=True)
    rows5 = compare.compare(before, after, threshold=0.05)
    assert proc.stdout == compare.markdown(rows5, before, after, 0.05)
    assert proc.returncode == (1 if rows[0]["beyond_noise"] else 0)


def test_bench_lstm(tmp_path):
    out = tmp_path / "lstm.json"
    proc = run_script("bench/bench_lstm.py", "--quick", "--threads", "1", "--repeats", "2",
                      "--warmup", "0", "--json", str(out))
    assert "| inference forward |" in proc.stdout and "| training step (fwd + bwd) |" in proc.stdout
    blob = json.loads(out.read_text())
    assert blob["case"] == {"T": 20, "B": 4, "I": 64, "H": 64, "dtype": "float32"}
    assert all(0 <= v <= TOL for v in blob["check"].values()), blob["check"]
    for name in ("fusedrnn", "torch"):
        timings = blob["results"][name]["timings"]
        assert sorted(timings) == ["inference", "train_step"]
        assert all(t["n"] == 2 and t["warmup"] == 0 for t in timings.values())


def test_gru_rows(tmp_path):
    """The GRU's small row of the matrix: fr.GRU, torch.nn.GRU, ORT's GRU node and the GEMM
    floor, each checked before timing (ORT's node is built from the weights independently of
    fr.onnx, with the oracle too), measured in rounds, and the GRU's own table and targets."""
    run_script("bench/run.py", "--quick", "--cases", "^gru small / plain$", "--threads", "1",
               "--budget", "0.01", "--rounds", "2", "--min-rep", "2", "--max-rep", "3",
               "--no-progress", "--out", str(tmp_path), "--tag", "gru")
    blob = json.loads((tmp_path / "gru.json").read_text())
    assert [(c["name"], c["cell"]) for c in blob["cases"]] == [("gru small / plain", "gru")]
    checks = blob["checks"]["gru small / plain"]
    for name in ("torch: y inference", "torch: dx", "torch: weight gradients", "ORT: y inference",
                 "oracle: y", "oracle: weight gradients"):
        assert any(k.startswith(name) for k in checks), (name, checks)
    assert all(0 <= v <= TOL for v in checks.values()), checks
    assert [(r["mode"], r["cell"]) for r in blob["rows"]] == [("inference", "gru"), ("train", "gru")]
    for row in blob["rows"]:
        measured = {c for c, t in row["median_s"].items() if t is not None}
        assert measured == ({"fusedrnn", "torch", "floor", "ort"} if row["mode"] == "inference"
                            else {"fusedrnn", "torch", "floor"})
        targets = {c["target"] for c in row["targets"]}
        assert targets == ({"torch >= 1.3x", "ORT >= 1x"} if row["mode"] == "inference"
                           else {"torch >= 1.5x"})
        assert all(c["met"] == (c["ratio"] >= float(c["target"].split(">= ")[1][:-1]))
                   for c in row["targets"])
    keys = sorted(blob["results"])
    assert all("|gru:100,1,64,128,0|" in k for k in keys) and len(keys) == 4
    floor = next(r for k, r in blob["results"].items() if k.startswith("floor|"))
    assert floor["gemm_calls"] == {"inference": 101, "train": 204}
    memory = blob["memory"]["gru small / plain"]
    assert memory["train_acts_bytes"] == 100 * 1 * 4 * 128 * 4   # (T, B, 4H) float32
    assert memory["train_min_bytes"] == 100 * 1 * 5 * 128 * 4
    md = (tmp_path / "gru.md").read_text()
    assert "## GRU" in md and "| GRU small plain | T=100 B=1 I=64 H=128 | inference | 1 |" in md
    assert "| small plain |" not in md


def test_gru_case_names():
    """--cases selects the GRU rows by name; the LSTM's result keys are unchanged."""
    cases = bench_module("cases")
    names = [cases.make_case(*m).name for m in cases.FULL_MATRIX]
    assert [n for n in names if n.startswith("gru ")] == [
        "gru small / plain", "gru medium / plain", "gru medium / float64", "gru large / plain"]
    lstm = cases.make_case("small", "plain")
    assert lstm.job_key("fusedrnn") == "fusedrnn|100,1,64,128,0|float32|L1D1|peep=0"
    gru = cases.make_case("medium", "float64", "gru")
    assert gru.gates == 3 and gru.dtype == "float64" and not gru.runs("ort")
    assert [t.bound for m in cases.MODES for t in cases.targets_of(gru, m)] == [1.3, 1.3]
    assert cases.targets_of(cases.make_case("medium", "float64"), "train")[0].bound == 1.4


def test_check_refuses_disagreeing_competitors(monkeypatch):
    import fusedrnn as fr
    cases, problems = bench_module("cases"), bench_module("problems")
    from_torch = fr.LSTM.from_torch

    def off(module):
        layer = from_torch(module)
        layer.params["W_v"][...] *= np.float32(1.01)  # a wrong recurrent weight
        return layer

    case = cases.Case("custom", "plain", 6, 2, 5, 4)
    diffs, arrays = problems.check_case(case, 1, TOL)
    assert max(diffs.values()) <= TOL and "fusedrnn.W_v" in arrays and "torch.weight_hh_l0" in arrays
    monkeypatch.setattr(fr.LSTM, "from_torch", staticmethod(off))
    with pytest.raises(RuntimeError, match="competitors disagree"):
        problems.check_case(case, 1, TOL)


def test_streaming_section(tmp_path):
    """A small streaming case: every competitor checked against one whole-sequence forward,
    per-frame medians and 99th percentiles, the memory check, and compare.py's rows of them."""
    import fusedrnn as fr
    import fusedrnn.torch as frt
    run_script("bench/run.py", "--quick", "--cases", "^streaming / H=128 B=8$", "--frames", "80",
               "--memory-frames", "400", "--budget", "0.01", "--no-progress", "--out", str(tmp_path),
               "--tag", "stream")
    blob = json.loads((tmp_path / "stream.json").read_text())
    assert blob["rows"] == [] and blob["cases"] == []
    section = blob["streaming"]
    streams = hasattr(fr.LSTM, "stream")
    fr_measured = {"forward", "whole"} \
        | ({"stream", "snapshot", "context", "wide", "ctxwhole"} if streams else set()) \
        | ({"frtorch"} if hasattr(frt.LSTM, "stream") else set())
    assert [r["case"] for r in section["rows"]] == ["streaming / H=128 B=8"]
    for row in section["rows"]:
        checks = section["checks"][row["case"]]
        assert all(0 <= v <= TOL for v in checks.values()), checks
        measured = {m for m, t in row["median_s"].items() if t is not None}
        assert measured == fr_measured | {"torch", "ort"}
        assert any(k.startswith("fusedrnn stream") for k in checks) == streams
        for m in measured - {"whole", "ctxwhole"}:
            assert row["p99_s"][m] >= row["median_s"][m] > 0
            key, mode = row["sources"][m]
            assert section["results"][key]["timings"][mode]["n"] == 80
        if not streams:  # an installation without the stream API: n/a, not a failure
            assert row["ratios"]["stream/whole"] is None and all(c["met"] is None for c in row["targets"])
    memory = section["rows"][0]["memory"]
    assert (memory is not None) == streams
    if streams:
        assert memory["steps"] == 400 and memory["rss_after_bytes"] > 0
    compare = bench_module("compare")
    rows = compare.compare(blob, blob)
    assert {r["mode"] for r in rows} == fr_measured
    assert all(r["ratio"] == 1.0 for r in rows)
    md = (tmp_path / "stream.md").read_text()
    assert "## Streaming (1 thread, float32)" in md and "| case | dims | mode |" not in md


def test_build_reads_the_installation(monkeypatch):
    """What a worker reports of its fusedrnn: the tuning settings (read without changing them,
    also the way an installation without fusedrnn._tuning is read) and the thread counts it
    set (through fusedrnn._tuning, or fr.set_num_threads without it)."""
    import fusedrnn as fr
    build = bench_module("build")
    first = build.tuning_settings()
    assert build.tuning_settings() == first and first["num_threads"] == fr.get_num_threads()
    threads = fr.get_num_threads()
    try:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "fusedrnn._tuning", None)   # as in a package without it
            old = build.tuning_settings()
            assert "num_threads" in old and all(first[k] == v for k, v in old.items())
            assert build.tuning_settings() == old
            assert build.fr_threads(1) == {"blas": [1], "fusedrnn": [1]}
            assert fr.get_num_threads() == 1
        fr.set_num_threads(threads)
        assert build.fr_threads(1) == {"blas": [1], "fusedrnn": [1]}
        assert build.tuning_settings()["num_threads"] == fr.get_num_threads() == 1
    finally:
        fr.set_num_threads(threads)
    info = build.kernel_id()
    assert info["tuning"] == first and info["packed_max_rows"] == first.get("packed_max_rows")


def test_reduced_section(tmp_path):
    """The reduced-precision section on a tiny case, fusedrnn's rows only (the peers import
    torch, ONNX Runtime, OpenVINO: the full run times them): every row measured with its error
    against the float32 forward, those errors within the documented bounds of each precision
    and not zero; the memory table's ratios from the stored arrays."""
    reduced = bench_module("reduced")
    names = ",".join(reduced.FR_COMPETITORS)
    run_script("bench/run.py", "--reduced", "--quick", "--threads", "1", "--budget", "0.01",
               "--reduced-competitors", names, "--out", str(tmp_path))
    blob = json.loads((tmp_path / "reduced-quick.json").read_text())
    rows = blob["results"]["small"]["1"]
    assert set(rows) == set(reduced.FR_COMPETITORS)
    assert rows["fr_f32"]["max_abs_err"] == 0.0
    bound = {"bf16": 2e-2, "int8": 5e-2}
    for name, r in rows.items():
        if "skipped" in r:   # the AVX2 rows on a CPU without AVX2, with the reason
            assert name.endswith("_avx2") and "AVX2" in r["skipped"]
            continue
        assert r["median_s"] > 0 and r["n"] >= 1
        precision = reduced.COMPETITORS[name][1]
        if precision != "f32":
            assert 1e-6 < r["max_abs_err"] < bound[precision], (name, r["max_abs_err"])
    if "skipped" not in rows["fr_int8_avx2"]:
        assert rows["fr_int8_avx2"]["path"] == "avx2" and rows["fr_bf16_avx2"]["path"] == "avx2"
    memory = {r["precision"]: r for r in next(iter(blob["memory"].values()))}
    assert memory["float32"]["gemm_ratio"] == 1.0
    assert memory["bf16"]["gemm_ratio"] == 0.5
    assert 0.25 < memory["int8"]["gemm_ratio"] <= 0.27
    md = (tmp_path / "reduced-quick.md").read_text()
    assert "fusedrnn int8, AVX2 path" in md and "Weight memory" in md
