"""fusedrnn._tuning, the one owner of the tuning settings: getters and setters
that validate, an override that restores (also on errors), and settings that
reach the kernel's plan (the team path's thread count, the micro-kernel)."""
import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn import _kernel, _tuning


def test_get_all_names_every_setting():
    values = _tuning.get_all()
    assert set(values) == set(_tuning.NAMES)
    assert values["num_threads"] == fr.get_num_threads() >= 1
    assert all(isinstance(v, int) for v in values.values())


@pytest.mark.parametrize("name,bad,exc", [
    ("num_threads", 0, ValueError), ("num_threads", 2**31, ValueError),
    ("num_threads", 1.5, TypeError), ("num_threads", True, TypeError),
    ("packed_max_rows", -1, ValueError), ("team_min_steps", 0, ValueError),
    ("grad_rows", 2**63, ValueError), ("isa", 3, ValueError), ("bogus", 1, ValueError),
])
def test_set_validates_and_names_the_setting(name, bad, exc):
    before = _tuning.get_all()
    with pytest.raises(exc, match=name):
        _tuning.set(name, bad)
    assert _tuning.get_all() == before


def test_set_num_threads_refuses_huge_counts():
    with pytest.raises(ValueError, match="num_threads"):
        fr.set_num_threads(2**31)
    with pytest.raises(ValueError, match="num_threads"):
        _tuning.override(num_threads=2**31).__enter__()


def test_override_restores_after_an_error():
    before = _tuning.get_all()
    with pytest.raises(RuntimeError):
        with _tuning.override(num_threads=3, team_min_steps=2, directions_max_batch=0):
            assert _tuning.get("num_threads") == 3 == fr.get_num_threads()
            assert _tuning.get("team_min_steps") == 2
            assert _tuning.get("directions_max_batch") == 0
            raise RuntimeError
    assert _tuning.get_all() == before


def test_set_returns_the_old_value():
    old = _tuning.set("min_step_bytes", 12345)
    try:
        assert _tuning.get("min_step_bytes") == 12345
        assert _kernel.get_tuning()["min_step_bytes"] == 12345  # one home: the kernel's
    finally:
        _tuning.set("min_step_bytes", old)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_settings_reach_the_plan(cell):
    """The micro-kernel path (packed_max_rows > 0) and the provider path
    (packed_max_rows = 0) give the same results to rounding, and the team on 2
    threads the 1-thread team's bits: the settings select the path."""
    if cell == "lstm":
        layer = fr.LSTM(20, 70, dtype=np.float64, seed=0)
    else:
        layer = fr.RNN(20, 70, state_feedback=True, dtype=np.float64, seed=0)
    x = np.random.default_rng(1).standard_normal((9, 3, 20))
    out = {}
    for name, kw in {"provider": dict(packed_max_rows=0),
                     "team1": dict(packed_max_rows=1 << 30, num_threads=1),
                     "team2": dict(packed_max_rows=1 << 30, num_threads=2)}.items():
        with _tuning.override(min_step_flops=0, team_min_steps=1, **kw):
            layer.zero_grad()
            y, _ = layer.forward(x)
            dx, _ = layer.backward(np.ones_like(y))
            out[name] = (np.array(y), dx, {k: g.copy() for k, g in layer.grads.items()})
    for a, b in zip(out["team2"][:2], out["team1"][:2]):
        np.testing.assert_array_equal(a, b)
    for k in out["team1"][2]:
        np.testing.assert_array_equal(out["team2"][2][k], out["team1"][2][k])
    assert not np.array_equal(out["provider"][0], out["team1"][0])  # another GEMM ran
    np.testing.assert_allclose(out["provider"][0], out["team1"][0], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(out["provider"][1], out["team1"][1], rtol=1e-11, atol=1e-12)
