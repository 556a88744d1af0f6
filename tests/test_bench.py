"""The benchmark scripts run: a one-case slice of bench/run.py and bench/bench_lstm.py end to
end (worker processes, the check before timing, the JSON and Markdown outputs), and the check
refuses to time competitors that disagree. Nothing here asserts a speed."""
from __future__ import annotations

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


def test_run_one_case(tmp_path):
    run_script("bench/run.py", "--quick", "--cases", "^small / plain$", "--threads", "1",
               "--budget", "0.01", "--min-rep", "2", "--max-rep", "3", "--no-progress",
               "--out", str(tmp_path), "--tag", "smoke")
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
        expected = {"fusedrnn", "torch", "oracle", "floor"} | ({"ort"} if row["mode"] == "inference" else set())
        assert {c for c, t in med.items() if t is not None} == expected
        assert row["ratios"]["torch"] == pytest.approx(med["torch"] / med["fusedrnn"], rel=1e-3)  # JSON: 4 digits
    for r in blob["results"].values():
        for t in r["timings"].values():
            assert 2 <= t["n"] <= 3 and len(t["times"]) == t["n"]
    md = (tmp_path / "smoke.md").read_text()
    assert "| small plain | T=100 B=1 I=64 H=128 | inference | 1 |" in md


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
