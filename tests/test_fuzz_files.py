"""The fuzz target tests/fuzz/fuzz_files.py (mutated checkpoints and ONNX files
through fr.load_checkpoint / fr.onnx.load: ValueError or a working model),
driven by hypothesis inside the normal suite. The coverage-guided run is
`python tests/fuzz/fuzz_files.py -max_total_time=60`."""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnx")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fuzz"))
import fuzz_files  # noqa: E402

SCALE = float(os.environ.get("FUSEDRNN_EXAMPLES_SCALE", "1"))


@settings(max_examples=max(20, int(300 * SCALE)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.binary(max_size=200))
def test_fuzz_files_on_random_mutations(data):
    fuzz_files.one_input(data)


@pytest.mark.parametrize("data", [b"", b"\x00" * 64, b"\x01" * 64, b"\x02" * 64, b"\x03" * 64,
                                  bytes(range(256)), b"\xff" * 64,
                                  # found by the coverage-guided run: a Slice start of
                                  # element type UNDEFINED in an initial-state path
                                  b"\x02\x00\x00\x01\xf9\x01;\x00;"])
def test_fuzz_files_on_fixed_mutations(data):
    fuzz_files.one_input(data)
