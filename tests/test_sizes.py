"""Issue 7 (robustness), sizes: a size whose byte count overflows, or that
does not fit in memory, raises ValueError or MemoryError and never crashes.

Every case runs in a child process whose address space is capped at
AS_LIMIT_GB (RLIMIT_AS), so nothing here can really allocate tens of GB on the
24 GB machine, whatever the kernel's overcommit policy: an allocation past the
cap fails at once and NumPy raises MemoryError. Zero-stride views
(np.broadcast_to) give huge inputs that cost no memory. Skipped under ASan
(its shadow memory needs an unlimited address space)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fusedrnn import _kernel

AS_LIMIT_GB = 6

needs_cap = pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", "") or not sys.platform.startswith("linux"),
    reason="needs RLIMIT_AS (Linux, no ASan)")

PRELUDE = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT_GB} << 30, {AS_LIMIT_GB} << 30))
import numpy as np
import fusedrnn as fr
def expect(name, fn, *errors):
    print("START", name, flush=True)
    try:
        fn()
    except errors as exc:
        print("RAISED", name, type(exc).__name__, str(exc)[:200].replace(chr(10), " "), flush=True)
        return
    print("RETURNED", name, flush=True)
"""

CONSTRUCTORS = [
    "fr.LSTM(1, 2**31)",                       # W_x (2**33, 1): 32 GB in float32
    "fr.LSTM(2**31, 1)",
    "fr.LSTM(1, 2**31, dtype=np.float64)",
    "fr.LSTM(2**20, 2**20)",                   # 4 TB of weights
    "fr.LSTM(1, 2**40)",                       # (2**42, 2**40): the byte count overflows
    "fr.LSTM(2**62, 2**62)",
    "fr.LSTM(8, 2**31, proj_size=1)",
    "fr.LSTM(1, 2**62, peepholes='full')",
    "fr.RNN(1, 2**31)",
    "fr.RNN(2**31, 2**31, state_feedback=True)",
    "fr.LSTM(2**64, 1)",
]
# A hidden size past 2**64 - 1 is no size NumPy can hold: currently a TypeError
# from NumPy's sqrt in the initialisation ("loop of ufunc does not support
# argument 0 of type int"): a documented error class, if not a clear message.
BEYOND_INT64 = ["fr.RNN(1, 2**64)", "fr.LSTM(1, 2**64)", "fr.LSTM(3, 2**70)"]

FORWARDS = {
    # T*B = 2**32 rows (beyond a BLAS int): the input copy alone is 16 GB
    "rows-beyond-int": "lstm = fr.LSTM(1, 2); x = np.broadcast_to(np.float32(1), (2**20, 2**12, 1))\n"
                       "expect(NAME, lambda: lstm.forward(x), ValueError, MemoryError)",
    "rows-beyond-int-inference": "lstm = fr.LSTM(1, 2); x = np.broadcast_to(np.float32(1), (2**20, 2**12, 1))\n"
                                 "expect(NAME, lambda: lstm.forward(x, training=False), ValueError, MemoryError)",
    "rnn-rows-beyond-int": "rnn = fr.RNN(1, 2); x = np.broadcast_to(np.float32(1), (2**31, 2, 1))\n"
                           "expect(NAME, lambda: rnn.forward(x), ValueError, MemoryError)",
    # 2**62 bools cast to float32: the byte count (2**64) overflows
    "bytes-overflow": "lstm = fr.LSTM(2**20, 2); x = np.broadcast_to(np.True_, (2**21, 2**21, 2**20))\n"
                      "expect(NAME, lambda: lstm.forward(x), ValueError, MemoryError)",
    # the activations of a training forward do not fit (a few GB), the input does (4 MB)
    "acts-too-big": "lstm = fr.LSTM(1, 512); x = np.zeros((2**20, 1, 1), np.float32)\n"
                    "expect(NAME, lambda: lstm.forward(x), ValueError, MemoryError)",
    "state-huge-batch": "lstm = fr.LSTM(1, 2); x = np.broadcast_to(np.float32(1), (1, 2**33, 1))\n"
                        "expect(NAME, lambda: lstm.forward(x, state=lstm.initial_state(2**33)), ValueError, MemoryError)",
    "initial-state-huge": "lstm = fr.LSTM(1, 2)\n"
                          "expect(NAME, lambda: lstm.initial_state(2**62), ValueError, MemoryError)",
    "lengths-huge-T": "rnn = fr.RNN(1, 2); x = np.broadcast_to(np.float64(1), (2**33, 1, 1))\n"
                      "expect(NAME, lambda: rnn.forward(x, lengths=[1]), ValueError, MemoryError)",
    "cap-works": "expect(NAME, lambda: np.ones(8 << 30, np.uint8), MemoryError)",
}


@pytest.fixture(scope="module")
def child_results() -> dict:
    """Run every case in one capped child process (imports are the slow part);
    {case: "RAISED <type> <message>" | "RETURNED" | "DIED ..."}."""
    body = []
    for expr in CONSTRUCTORS:
        body.append(f"expect({expr!r}, lambda: {expr}, ValueError, MemoryError)")
    for expr in BEYOND_INT64:
        body.append(f"expect({expr!r}, lambda: {expr}, ValueError, MemoryError, TypeError)")
    for name, code in FORWARDS.items():
        body.append(code.replace("NAME", repr(name)))
    proc = subprocess.run([sys.executable, "-c", PRELUDE + "\n".join(body)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    results, current = {}, None
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "START":
            current = rest
            results[current] = "STARTED"
        elif word in ("RAISED", "RETURNED") and current is not None:
            results[current] = word + " " + rest[len(current):].strip()
    if proc.returncode != 0 and current is not None:
        results[current] = f"DIED with status {proc.returncode}: {proc.stderr[-2000:]}"
    for case, outcome in results.items():
        print(f"{case}: {outcome}")  # shown with pytest -s
    return results


def check(results: dict, case: str) -> None:
    outcome = results.get(case, "NOT RUN (an earlier case killed the child)")
    assert outcome.startswith("RAISED"), f"{case}: {outcome}"


@needs_cap
@pytest.mark.parametrize("expr", CONSTRUCTORS + BEYOND_INT64)
def test_constructor_with_huge_sizes_raises(child_results, expr):
    check(child_results, expr)


@needs_cap
@pytest.mark.parametrize("case", sorted(FORWARDS))
def test_forward_with_huge_sizes_raises(child_results, case):
    check(child_results, case)


def test_size_functions_refuse_overflow():
    """The kernel's own size functions: overflowing products and GEMM
    dimensions past 2**31 - 1 are a ValueError "too large" (more cases:
    test_errors.py::test_overflowing_sizes, test_properties.py)."""
    for fn in (_kernel.lstm_sizes, _kernel.rnn_sizes):
        for args in [(2**31, 1, 1, 1, 0), (2**16, 2**15, 1, 1, 0), (1, 1, 2**31, 1, 0),
                     (2**62, 2**62, 2**62, 2**62, 1), (2**31 - 1, 2**31 - 1, 1, 1, 0)]:
            with pytest.raises(ValueError, match="too large"):
                fn(*args)
        fn(2**31 - 1, 1, 1, 1, 0)           # the largest row count is accepted
    with pytest.raises(ValueError, match="too large"):
        _kernel.lstm_sizes(1, 1, 1, 2**29, 0)  # 4H = 2**31 gate rows
    with pytest.raises(OverflowError):
        _kernel.lstm_sizes(2**63, 1, 1, 1, 0)  # not even an int64 (Cython's conversion)
