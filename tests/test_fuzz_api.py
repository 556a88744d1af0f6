"""Issue 7 (robustness): the fuzz target tests/fuzz/fuzz_api.py, driven by
hypothesis inside the normal suite (random byte strings, bounded count), so a
machine without atheris still runs it. The coverage-guided run is
`python tests/fuzz/fuzz_api.py -max_total_time=60` (a CI step)."""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fuzz"))
import fuzz_api  # noqa: E402

SCALE = float(os.environ.get("FUSEDRNN_EXAMPLES_SCALE", "1"))


@settings(max_examples=max(20, int(400 * SCALE)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.binary(max_size=400))
def test_fuzz_target_on_random_programs(data):
    fuzz_api.one_input(data)


@pytest.mark.parametrize("data", [b"", b"\x00" * 64, b"\xff" * 64, bytes(range(256)),
                                  bytes(range(255, -1, -1)) * 2])
def test_fuzz_target_on_fixed_programs(data):
    fuzz_api.one_input(data)
