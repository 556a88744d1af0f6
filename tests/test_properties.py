"""Issue 7 (robustness), property-based: for random sizes, dtypes, options,
states and memory layouts, a layer either matches the NumPy oracle
(fusedrnn.reference) or raises the documented ValueError / TypeError.

Bounded: every test has an explicit max_examples and no deadline; the whole
file runs in a few seconds. FUSEDRNN_EXAMPLES_SCALE (a float, default 1)
scales the example counts, e.g. 0.25 under ASan (tests/asan/run.sh) or 20 for
a longer local soak."""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fusedrnn as fr
from conftest import TOL, run_reference

SCALE = float(os.environ.get("FUSEDRNN_EXAMPLES_SCALE", "1"))


def assert_close(a, b, tol: float, what: str = "") -> None:
    """max |a - b| <= tol * max(max |b|, floor). Sums over time and gates of
    O(1) terms (weight and input gradients) can cancel to 1e-3 .. 1e-6 and then
    carry the absolute rounding error of their terms (seen: float32 1.6e-6 on
    2.9e-3, float64 4e-16 on 3e-6), so the floor is 1 in float32 and 1e-3 in
    float64 (every quantity here is of order 1 before cancellation)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    floor = 1.0 if tol >= 1e-6 else 1e-3
    err = float(np.max(np.abs(a - b), initial=0.0)) / max(float(np.max(np.abs(b), initial=0.0)), floor)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def examples(n: int) -> settings:
    return settings(max_examples=max(3, int(n * SCALE)), deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


DTYPES = [np.float32, np.float64]
# How a caller may hand an array over. Every one must give the same numbers.
LAYOUTS = ["c", "fortran", "strided", "reversed", "readonly", "broadcast", "list", "other_float",
           "int", "int_readonly_strided"]


def present(a: np.ndarray, how: str) -> Any:
    """`a` (already holding exactly representable values for `how`) in a given memory layout."""
    if how == "c":
        return a.copy()
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "strided":      # every other element of a larger buffer
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "reversed":     # negative strides
        return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    if how == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if how == "broadcast":    # zero strides: one row for every step and batch row
        return np.broadcast_to(a[:1, :1], a.shape)
    if how == "list":
        return a.tolist()
    if how == "other_float":  # float32 <-> float64, cast by the layer
        return a.astype(np.float64 if a.dtype == np.float32 else np.float32)
    if how == "int":
        return a.astype(np.int64)
    if how == "int_readonly_strided":
        big = np.zeros(a.shape[:-1] + (3 * a.shape[-1],), np.int16)
        big[..., 1::3] = a
        v = big[..., 1::3]
        v.flags.writeable = False
        return v
    raise AssertionError(how)


def draw_values(rng: np.random.Generator, shape, how: str, dtype, scale: float = 1.0) -> np.ndarray:
    """Values the layout `how` can carry exactly, in the layer dtype."""
    if how in ("int", "int_readonly_strided"):
        return rng.integers(-2, 3, size=shape).astype(dtype)
    a = (scale * rng.standard_normal(shape)).astype(dtype)
    if how == "other_float":  # representable in both float32 and float64
        a = a.astype(np.float32).astype(dtype)
    if how == "broadcast":
        a = np.broadcast_to(a[:1, :1], shape).copy()
    return a


def snapshot(obj: Any) -> Any:
    return None if obj is None else np.array(obj, copy=True)


def make(kind: str, I: int, H: int, dtype, option: bool, batch_first: bool, seed: int):
    if kind == "lstm":
        return fr.LSTM(I, H, peepholes=option, dtype=dtype, batch_first=batch_first, seed=seed)
    return fr.RNN(I, H, state_feedback=option, dtype=dtype, batch_first=batch_first, seed=seed)


def bf(a: np.ndarray, batch_first: bool) -> np.ndarray:
    """Time-major (T, B, F) -> the layer's layout."""
    return a.transpose(1, 0, 2) if batch_first else a


@st.composite
def problems(draw):
    kind = draw(st.sampled_from(["lstm", "rnn"]))
    return dict(
        kind=kind,
        T=draw(st.integers(1, 6)), B=draw(st.integers(1, 4)),
        I=draw(st.integers(1, 5)), H=draw(st.integers(1, 6)),
        dtype=draw(st.sampled_from(DTYPES)), option=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        x_layout=draw(st.sampled_from(LAYOUTS)),
        state=draw(st.sampled_from(["none", "given", "given_list_parts"])),
        state_layout=draw(st.sampled_from(LAYOUTS)),
        dy_layout=draw(st.sampled_from(LAYOUTS + ["none"])),
        dstate=draw(st.sampled_from(["none", "both", "first", "second"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@examples(150)
@given(problems())
def test_layer_matches_oracle_for_any_layout(pr):
    """Forward and backward equal the oracle on the values the layer was given,
    whatever their layout, and the caller's arrays are left untouched."""
    rng = np.random.default_rng(pr["seed"])
    T, B, I, H, dt = pr["T"], pr["B"], pr["I"], pr["H"], np.dtype(pr["dtype"])
    layer = make(pr["kind"], I, H, dt, pr["option"], pr["batch_first"], seed=pr["seed"] % 1000)
    xv = draw_values(rng, (T, B, I), pr["x_layout"], dt)       # time-major values
    x_in = present(bf(xv, pr["batch_first"]), pr["x_layout"])
    state_in: Optional[tuple] = None
    s0 = np.zeros((1, B, H), dt)
    o0 = np.zeros((1, B, H), dt)
    if pr["state"] != "none":
        s0 = draw_values(rng, (1, B, H), pr["state_layout"], dt, 0.5)
        o0 = draw_values(rng, (1, B, H), pr["state_layout"], dt, 0.5)
        parts = (present(s0, pr["state_layout"]), present(o0, pr["state_layout"]))
        if pr["state"] == "given_list_parts":  # ambiguous against torch's (h, c): refused
            with pytest.raises(TypeError, match="plain tuple, which is ambiguous"):
                layer.forward(x_in, state=tuple(parts))
        state_in = layer.State(*parts)
    dyv = (np.zeros((T, B, H), dt) if pr["dy_layout"] == "none"
           else draw_values(rng, (T, B, H), pr["dy_layout"], dt))
    dy_in = None if pr["dy_layout"] == "none" else present(bf(dyv, pr["batch_first"]), pr["dy_layout"])
    ds_T = rng.standard_normal((1, B, H)).astype(dt) if pr["dstate"] in ("both", "first") else None
    do_T = rng.standard_normal((1, B, H)).astype(dt) if pr["dstate"] in ("both", "second") else None
    dstate_in = None if pr["dstate"] == "none" else layer.State(ds_T, do_T)
    before = [snapshot(a) for a in (x_in, dy_in, *(state_in or ()))]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent conversion warnings either
        y_inf, _ = layer.forward(x_in, state=state_in, training=False)
        y, st_ = layer.forward(x_in, state=state_in)
        dx, dst = layer.backward(dy_in, dstate_in)

    after = [snapshot(a) for a in (x_in, dy_in, *(state_in or ()))]
    for b_, a_ in zip(before, after):
        if b_ is not None:
            np.testing.assert_array_equal(a_, b_)  # inputs never modified
    assert y.dtype == dt and dx.dtype == dt
    assert y.shape == bf(np.empty((T, B, H)), pr["batch_first"]).shape
    assert dx.shape == np.shape(x_in)
    np.testing.assert_array_equal(y_inf, y)       # inference == training forward

    prob = {"x": xv, "s0": s0, "o0": o0, "dy": dyv,
            "ds_T": np.zeros((1, B, H), dt) if ds_T is None else ds_T,
            "do_T": np.zeros((1, B, H), dt) if do_T is None else do_T}
    ref_out, ref_grads = run_reference(layer, prob)
    tol = TOL[dt.type]
    got_out = {"y": bf(y, pr["batch_first"]), "s_T": st_[0][0], "o_T": st_[1][0]}
    got_grads = {"dx": bf(dx, pr["batch_first"]), "ds0": dst[0][0], "do0": dst[1][0], **layer.grads}
    for k in ref_out:
        assert_close(got_out[k], ref_out[k], tol, k)
    for k in ref_grads:
        assert_close(got_grads[k], ref_grads[k], tol, k)


@examples(60)
@given(kind=st.sampled_from(["lstm", "rnn"]), T=st.integers(1, 6), B=st.integers(1, 4),
       I=st.integers(1, 4), H=st.integers(1, 5), dtype=st.sampled_from(DTYPES),
       option=st.booleans(), data=st.data())
def test_lengths_match_oracle_row_by_row(kind, T, B, I, H, dtype, option, data):
    """With lengths, each row equals the oracle on its own first L steps: padded
    outputs are 0, the final state is the state at the row's last step, padded
    dy is ignored, a row of length 0 passes its state (and dstate) through."""
    dt = np.dtype(dtype)
    lens = np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    layer = make(kind, I, H, dt, option, False, seed % 1000)
    x = rng.standard_normal((T, B, I)).astype(dt)
    s0 = (0.5 * rng.standard_normal((1, B, H))).astype(dt)
    o0 = (0.5 * rng.uniform(-1, 1, (1, B, H))).astype(dt)
    dy = rng.standard_normal((T, B, H)).astype(dt)
    ds_T = rng.standard_normal((1, B, H)).astype(dt)
    do_T = rng.standard_normal((1, B, H)).astype(dt)
    lens_in = data.draw(st.sampled_from([lens, lens.astype(np.int32), lens.tolist(),
                                         lens.astype(np.uint8)]))
    y, state = layer.forward(x, state=layer.State(s0, o0), lengths=lens_in)
    s_T, o_T = state[:2]
    dx, dst = layer.backward(dy, layer.State(ds_T, do_T))
    tol = TOL[dt.type]
    grads_ref = {k: np.zeros(v.shape) for k, v in layer.grads.items()}
    for b in range(B):
        L = int(lens[b])
        assert not y[L:, b].any() and not dx[L:, b].any()
        if L == 0:
            np.testing.assert_array_equal(s_T[0, b], s0[0, b])
            np.testing.assert_array_equal(o_T[0, b], o0[0, b])
            np.testing.assert_array_equal(dst[0][0, b], ds_T[0, b])
            np.testing.assert_array_equal(dst[1][0, b], do_T[0, b])
            continue
        row = lambda a: a[:L, b:b + 1]
        prob = {"x": row(x), "s0": s0[:, b:b + 1], "o0": o0[:, b:b + 1], "dy": row(dy),
                "ds_T": ds_T[:, b:b + 1], "do_T": do_T[:, b:b + 1]}
        out, gr = run_reference(layer, prob)
        assert_close(y[:L, b], out["y"][:, 0], tol, f"y row {b}")
        assert_close(s_T[0, b], out["s_T"][0], tol, f"s_T row {b}")
        assert_close(o_T[0, b], out["o_T"][0], tol, f"o_T row {b}")
        assert_close(dx[:L, b], gr["dx"][:, 0], tol, f"dx row {b}")
        assert_close(dst[0][0, b], gr["ds0"][0], tol, f"ds0 row {b}")
        assert_close(dst[1][0, b], gr["do0"][0], tol, f"do0 row {b}")
        for k in grads_ref:
            grads_ref[k] += gr[k]
    for k in grads_ref:
        assert_close(layer.grads[k], grads_ref[k], tol, k)


# -- invalid inputs: the documented error, nothing else ---------------------------------

REAL_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint16, np.bool_]
BAD_DTYPES = [np.complex64, np.complex128, np.dtype("U3"), np.dtype("M8[s]"),
              np.dtype("m8[s]"), np.dtype("S2"), np.dtype([("a", "f8")])]


def any_array(dtypes):
    return st.sampled_from(dtypes).flatmap(
        lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
                             elements=None if np.dtype(d).kind in "OUSMmV" else
                             hnp.from_dtype(np.dtype(d), allow_nan=True, allow_infinity=True)
                             if np.dtype(d).kind == "f" else None))


def object_array(shape):
    a = np.empty(shape, object)
    a[...] = 1.0
    return a


@examples(200)
@given(kind=st.sampled_from(["lstm", "rnn"]), batch_first=st.booleans(),
       dtype=st.sampled_from(DTYPES), data=st.data())
def test_any_x_gives_result_or_documented_error(kind, batch_first, dtype, data):
    I, H = 3, 2
    layer = make(kind, I, H, dtype, True, batch_first, 0)
    x = data.draw(st.one_of(any_array(REAL_DTYPES), any_array(BAD_DTYPES),
                            hnp.array_shapes(min_dims=3, max_dims=3, max_side=3).map(
                                lambda s: np.zeros(s[:2] + (I,))),
                            st.just(object_array((2, 2, I))), st.just([[[1.0, 2.0]], [[1.0]]]),
                            st.none(), st.integers(), st.floats(), st.text(max_size=3),
                            st.lists(st.floats(), max_size=3)), label="x")
    arr, convert_error = None, None
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nesting: NumPy's own ValueError is passed on
        convert_error = type(exc)
    real = arr is not None and arr.dtype.kind in "biuf"
    good_shape = (arr is not None and arr.ndim == 3 and arr.shape[2] == I
                  and arr.shape[0] > 0 and arr.shape[1] > 0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if real and good_shape:
            y, state = layer.forward(x)
            T, B = (arr.shape[1], arr.shape[0]) if batch_first else arr.shape[:2]
            assert y.shape == ((B, T, H) if batch_first else (T, B, H))
            assert y.dtype == layer.dtype and state[0].shape == (1, B, H)
            nonnan = y[~np.isnan(y)]
            assert np.all(np.abs(nonnan) <= 1)  # tanh / gated tanh readout
            dx, _ = layer.backward(np.ones_like(y))
            assert dx.shape == arr.shape
        else:
            expected = convert_error or (ValueError if real else TypeError)
            with pytest.raises(expected):
                layer.forward(x)


def garbage():
    arrays = st.one_of(
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=4, max_side=3)),
        hnp.arrays(np.int32, st.just((1, 2, 2))),
        st.just(np.zeros((1, 2, 2))), st.just(np.zeros((1, 2, 2), np.complex64)),
        st.just(object_array((1, 2, 2))), st.just(np.full((1, 2, 2), np.nan)),
        st.just(np.zeros((2, 2))), st.just(np.zeros((1, 2, 2)).tolist()),
        st.none(), st.integers(-3, 3), st.text(max_size=2))
    return st.one_of(arrays, st.tuples(arrays), st.tuples(arrays, arrays),
                     st.tuples(arrays, arrays, arrays), st.tuples(arrays, arrays, arrays, arrays),
                     st.lists(arrays, max_size=3), st.dictionaries(st.text(max_size=1), arrays, max_size=2))


def state_expectation(state, layer, B: int):
    """None when valid, else the exception class the documentation names."""
    H = layer.hidden_size
    if state is None:
        return None
    if not isinstance(state, layer.State):
        return TypeError  # a plain tuple too: ambiguous against torch's (h, c)
    for part in state[:2]:
        try:
            arr = np.asarray(part)
        except Exception:
            return (TypeError, ValueError)
        if arr.dtype.kind not in "biuf":
            return TypeError
        if arr.shape != (1, B, H):
            return ValueError
    if len(state) == 3 and state[2] is not None:
        return ValueError  # x_past without a context window
    return None


@examples(200)
@given(kind=st.sampled_from(["lstm", "rnn"]), state=garbage(), dstate=garbage())
def test_any_state_gives_result_or_documented_error(kind, state, dstate):
    T, B, I, H = 2, 2, 3, 2
    layer = make(kind, I, H, np.float64, True, False, 0)
    x = np.ones((T, B, I))

    def as_state(st_):
        """A plain tuple of the State's length: refused (TypeError), then as the State."""
        if type(st_) is tuple and len(st_) in (2, len(layer.State._fields)):
            with pytest.raises(TypeError, match="plain tuple"):
                layer.forward(x, state=st_)
            return layer.State(*st_)
        return st_

    state, dstate = as_state(state), as_state(dstate)
    expect = state_expectation(state, layer, B)
    with np.errstate(all="ignore"):
        if expect is not None:
            with pytest.raises(expect):
                layer.forward(x, state=state)
            return
        layer.forward(x, state=state)
        # dstate: the same rules, except that its parts may be None; a wrong type raises an
        # error that is both a TypeError and a ValueError
        dexp = None
        if dstate is not None:
            if not isinstance(dstate, layer.State):
                dexp = (TypeError, ValueError)
            else:
                fixed = layer.State(*(np.zeros((1, B, H)) if d is None else d for d in dstate[:2]))
                dexp = state_expectation(fixed, layer, B)
        if dexp is None:
            dx, dst = layer.backward(None, dstate)
            assert dx.shape == x.shape and dst[0].shape == (1, B, H)
        else:
            with pytest.raises(dexp):
                layer.backward(None, dstate)


CTOR_VALUES = st.one_of(st.integers(-2, 6), st.sampled_from([2**62, 2**64, 1.5, True, "3", None, np.int64(3),
                                                             np.uint8(2), float("nan")]))


@examples(200)
@given(kind=st.sampled_from(["lstm", "rnn"]), I=CTOR_VALUES, H=CTOR_VALUES,
       option=st.sampled_from([True, False, None, "diagonal", "full", "none", "sideways", 1, 0, 2, 1.0]),
       dtype=st.sampled_from([np.float32, np.float64, "float32", "f8", np.float16, int, None, "nope",
                              complex, object, np.dtype("f4")]),
       batch_first=st.sampled_from([False, True, 0, 1]))
def test_any_constructor_arguments(kind, I, H, option, dtype, batch_first):
    """A layer is built, or a ValueError/TypeError is raised (MemoryError for a
    size that cannot be allocated)."""
    cls = fr.LSTM if kind == "lstm" else fr.RNN
    kw = {"peepholes": option} if kind == "lstm" else {"state_feedback": option}
    try:
        layer = cls(I, H, dtype=dtype, batch_first=batch_first, **kw)
    except (ValueError, TypeError, MemoryError):
        return
    assert layer.input_size == I and layer.hidden_size == H
    assert isinstance(layer.input_size, int) and layer.input_size >= 1
    y, _ = layer.forward(np.zeros((1, 1, layer.input_size)), training=False)
    assert y.shape == (1, 1, H)


# -- the size functions: every result fits, every overflow is a ValueError -----------------

from fusedrnn import _kernel  # noqa: E402

BIG = st.one_of(st.integers(1, 64), st.integers(1, 2**31 + 10), st.integers(1, 2**63 - 1),
                st.sampled_from([2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1]))


@examples(300)
@given(T=BIG, B=BIG, I=BIG, H=BIG, opt=st.integers(0, 1))
def test_size_functions_never_overflow(T, B, I, H, opt):
    for fn in (_kernel.lstm_sizes, _kernel.rnn_sizes):
        try:
            sizes = fn(T, B, I, H, opt)
        except ValueError as exc:
            assert "too large" in str(exc)
            continue
        # every count is exact and its byte count fits a size_t with room (float64)
        assert all(isinstance(n, int) and 0 <= n and 8 * n < 2**63 for n in sizes)
        if fn is _kernel.lstm_sizes:  # training keeps at least the states of all T*B rows
            assert sizes[0] >= T * B * H
        # and the GEMM dimensions fit a BLAS int
        gates = 4 if fn is _kernel.lstm_sizes else 1
        assert T * B < 2**31 and gates * H < 2**31 and I < 2**31
