"""Fuzz target over the public API of fr.LSTM, fr.RNN and fr.GRU.

Each input (a byte string) is decoded into a small program: a GEMM backend, a
constructor call with arguments drawn from pools of good, bad and huge values,
perhaps garbage written into `params` / `grads`, then a few forward/backward
calls with random shapes (zeros and huge ones included), dtypes, memory
layouts, NaN/Inf/huge values, garbage states, lengths and look-ahead frames.

The only acceptable outcomes of a call are a result or ValueError, TypeError,
MemoryError. Any other exception, a failed invariant (shapes, dtypes, |y| <= 1
for the bounded readouts) or a native crash is a finding.

Run (atheris, coverage-guided; `pip install atheris`):

    python tests/fuzz/fuzz_api.py -max_total_time=60                 # CI
    python tests/fuzz/fuzz_api.py -max_total_time=3600 -jobs=2 build/fuzz/corpus   # longer

libFuzzer flags pass through (-runs=N, -timeout=S, -seed=N, corpus dirs).
Without atheris the same target runs on random bytes for -max_total_time
seconds (no coverage guidance). tests/test_fuzz_api.py drives `one_input`
with hypothesis inside the normal test suite.

The script caps its own address space at FUZZ_AS_LIMIT_GB (default 8) so
that "huge" sizes fail fast with MemoryError instead of touching memory; when
imported (pytest, possibly under ASan) it cannot cap, so only sizes that no
machine can allocate (>= 2**40 elements) are drawn.
"""
from __future__ import annotations

import copy
import os
import pickle
import sys
import time
import warnings

import numpy as np

import fusedrnn as fr

atheris = None
if __name__ == "__main__":
    try:
        import atheris
    except ImportError:  # fallback: plain random bytes
        atheris = None

ALLOWED = (ValueError, TypeError, MemoryError)
# Sizes no allocation can satisfy on any machine; with the address-space cap of
# the script, sizes of 8..64 GB too.
HUGE_ALWAYS = [2**40, 2**62]
HUGE_CAPPED = [2**31, 2**33]
HUGE = list(HUGE_ALWAYS)


class Data:
    """Deterministic decoding of the fuzzer's bytes (0 once they run out)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0

    def u8(self) -> int:
        if self.i >= len(self.data):
            return 0
        self.i += 1
        return self.data[self.i - 1]

    def u32(self) -> int:
        return self.u8() | self.u8() << 8 | self.u8() << 16 | self.u8() << 24

    def pick(self, seq):
        return seq[self.u8() % len(seq)]

    def either(self, good, bad, bad_one_in: int = 6):
        """A value from `good`, or one time in `bad_one_in` from `bad`."""
        return self.pick(bad) if self.chance(bad_one_in) else self.pick(good)

    def chance(self, one_in: int) -> bool:
        """True one time in `one_in`; never on the zero bytes past the end, so
        that a short input means the plain, valid call."""
        return self.u8() % one_in == one_in - 1


def size(d: Data, good: int) -> object:
    """Mostly `good`, else a small, zero, negative, huge or ill-typed size."""
    if not d.chance(8):
        return good
    return d.pick([0, 1, 2, 3, 5, -1] + HUGE + [1.0, True, None, "2", np.int64(2), np.uint8(3)])


def dim(d: Data) -> int:
    return d.pick([1, 1, 2, 3, 4, 5])


DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint32, np.bool_,
          np.complex64, object, "U2", "M8[s]"]
VALUES = ["normal", "zeros", "nan", "inf", "-inf", "huge", "tiny", "mixed", "ints"]


def values(d: Data, shape, dtype) -> object:
    """An array of `shape` (dims may be huge: then a zero-stride view)."""
    n = 1
    for s in shape:
        n *= int(s)
    dt = np.dtype(dtype)
    if n > 4096:  # huge: a view that costs no memory
        return np.broadcast_to(np.zeros((), dt), shape)
    rng = np.random.default_rng(d.u32())
    kind = d.pick(VALUES)
    if dt.kind in "OUSM":
        a = np.empty(shape, dt)
        if dt.kind == "O":
            a[...] = 1.0
        return a
    base = {"normal": lambda: rng.standard_normal(shape), "zeros": lambda: np.zeros(shape),
            "nan": lambda: np.full(shape, np.nan), "inf": lambda: np.full(shape, np.inf),
            "-inf": lambda: np.full(shape, -np.inf), "huge": lambda: rng.choice([-1e300, 1e38, 3e38], shape),
            "tiny": lambda: rng.choice([5e-324, 1e-45, -1e-310], shape),
            "mixed": lambda: rng.choice([np.nan, np.inf, -np.inf, 0.0, 1.0, -1e30], shape),
            "ints": lambda: rng.integers(-3, 4, shape).astype(float)}[kind]()
    with np.errstate(all="ignore"):
        if dt.kind == "c":
            return base.astype(dt)
        if dt.kind in "iub":
            return np.nan_to_num(base, nan=0, posinf=1, neginf=-1).clip(-100, 100).astype(dt)
        return base.astype(dt)


def layout(d: Data, a: object) -> object:
    if not isinstance(a, np.ndarray) or a.ndim == 0 or a.size > 4096:
        return a
    how = d.pick(["c", "c", "fortran", "strided", "reversed", "readonly", "list", "tuple"])
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.repeat(a, 2, axis=-1)
        return big[..., ::2]
    if how == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if how == "list":
        return a.tolist()
    if how == "tuple":
        return tuple(a.tolist())
    return a


def garbage(d: Data) -> object:
    return d.pick([None, 0, 1.5, "x", b"\x00", [], [1, 2], {}, (None,), object(),
                   np.zeros(0), np.zeros((2, 2), complex), np.array("a"), np.float64(np.nan)])


def array_arg(d: Data, shape, dtype) -> object:
    """A good array of `shape` most of the time, else something wrong."""
    r = d.u8() % 16
    if r < 11:
        return layout(d, values(d, shape, d.pick([dtype, dtype, dtype, np.float32, np.float64, np.int32])))
    if r < 13:  # wrong shape
        shape = list(shape) or [1]
        shape[d.u8() % len(shape)] = d.pick([0, 1, 7] + HUGE)
        return values(d, tuple(shape), dtype)
    if r < 15:
        return values(d, shape, d.pick(DTYPES))
    return garbage(d)


# activation options the layers must refuse with ValueError / TypeError
BAD_ACTIVATIONS = ["gelu", "", 3, None, ("elu", np.nan), ("relu", 1.0), ("leaky_relu", "a"),
                   ("hard_sigmoid", 1, 2, 3), ["tanh"] * 3, [], (), (1.0,), [("elu",), 7]]


def construct(d: Data):
    kind = d.pick(["lstm", "rnn", "gru"])
    I = size(d, dim(d))
    H = size(d, dim(d))
    kw = dict(dtype=d.either([np.float32, np.float64, "float32", "f8"], [np.float16, int, None, "nope"]),
              batch_first=d.pick([False, True, False, 1]),
              seed=d.either([None, 0, 1, 2**70], [-1, "s"]))
    if kind == "lstm":
        kw["peepholes"] = d.either([True, False, None, "diagonal", "full", "none"], ["sideways", 2])
        if d.chance(3):
            kw["proj_size"] = d.either([0, 1, 2, 3], [-1, 10**9, 1.0, True] + HUGE)
        if d.chance(3):
            kw["context"] = d.either([(0, 0), (1, 0), (0, 1), (2, 1), (1, 2)],
                                     [(-1, 0), (1,), None, "ab", (1.0, 0), (2**40, 0)])
        if d.chance(4):
            kw["coupled_gates"] = d.either([True, False], [1, "yes"])
        if d.chance(4):
            kw["cell_clip"] = d.either([None, 1.0, 0.5, 1e-30], [0, -1, np.inf, np.nan, "1", True])
        if d.chance(4):
            kw["accumulation_clip"] = d.either([None, 3.0, 1e-3], [0, np.inf, np.nan, "1"])
        if d.chance(3):
            kw["num_layers"] = d.either([1, 2, 3], [0, -1, True, 2.0])
        if d.chance(3):
            kw["bidirectional"] = d.either([False, True], [1, "yes"])
        if d.chance(4):
            kw["dropout"] = d.either([0.0, 0.3, 0.99, 0], [1.0, -0.1, np.nan, "x", True])
        for place, good in (("gate_activation", ["sigmoid", ("hard_sigmoid", 0.2, 0.5)]),
                            ("cell_activation", ["tanh", "softsign", ("leaky_relu", 0.1)]),
                            ("output_activation", ["tanh", "relu", ("elu", 1.0)])):
            if d.chance(5):
                kw[place] = d.either(good + [["sigmoid", "softplus"]], BAD_ACTIVATIONS)
        cls = fr.LSTM
    elif kind == "gru":
        kw["linear_before_reset"] = d.either([True, False], [1, "yes", None])
        if d.chance(3):
            kw["num_layers"] = d.either([1, 2, 3], [0, -1, True, 2.0])
        if d.chance(3):
            kw["bidirectional"] = d.either([False, True], [1, "yes"])
        if d.chance(4):
            kw["reverse"] = d.either([False, True], [1, "yes"])
        if d.chance(4):
            kw["dropout"] = d.either([0.0, 0.3, 0.99, 0], [1.0, -0.1, np.nan, "x", True])
        cls = fr.GRU
    else:
        kw["state_feedback"] = d.either([False, True], [1, "yes", None])
        if d.chance(3):
            kw["activation"] = d.either(["tanh", "relu", ("scaled_tanh", 1.0, 2.0), "softplus",
                                         ["relu", "tanh"]], BAD_ACTIVATIONS)
        if d.chance(4):
            kw["accumulation_clip"] = d.either([None, 3.0, 1e-3], [0, np.inf, np.nan, "1"])
        cls = fr.RNN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(I, H, **kw)


def spoil_params(d: Data, layer) -> None:
    store = d.pick([layer.params, layer.grads])
    key = d.pick(sorted(store))
    good = store[key]
    store[key] = d.pick([
        good.astype(np.float64 if good.dtype == np.float32 else np.float32),
        np.zeros(good.shape[::-1] + (1,), good.dtype), good.T.copy().T if good.ndim > 1 else good[::-1],
        np.asfortranarray(good), good.tolist(), None, np.full_like(good, np.nan),
        np.zeros(good.size + 1, good.dtype), good.reshape(-1)])


def channels(layer) -> list:
    """The widths of the state's array fields: (s, v) / (s, r), or the GRU's (h,)."""
    if isinstance(layer, fr.GRU):
        return [layer.hidden_size]
    return [layer.hidden_size, layer.output_size]


def check_forward(layer, x, y, state, bounded=True) -> None:
    """bounded: the outputs lie in [-1, 1] (a GRU's h mixes tanh values with the
    initial state, so only when that is in [-1, 1] too)."""
    assert isinstance(y, np.ndarray) and y.dtype == layer.dtype, (type(y), getattr(y, "dtype", None))
    xs = np.shape(x)
    T, B = (xs[1], xs[0]) if layer.batch_first else (xs[0], xs[1])
    width = layer.num_directions * layer.output_size
    assert y.shape == ((B, T, width) if layer.batch_first else (T, B, width)), (y.shape, xs)
    LD = layer.num_layers * layer.num_directions
    for s, width in zip(state, channels(layer)):
        assert s.shape == (LD, B, width), s.shape
    default_warps = all(getattr(layer, k, v) == v for k, v in (
        ("gate_activation", "sigmoid"), ("cell_activation", "tanh"),
        ("output_activation", "tanh"), ("activation", "tanh")))
    if getattr(layer, "proj_size", 0) == 0 and bounded and default_warps:  # tanh, or gate * tanh
        finite = y[~np.isnan(y)]
        assert np.all(np.abs(finite) <= 1 + 1e-6), float(np.max(np.abs(finite)))


def one_call(d: Data, layer, prev_state) -> object:
    T, B = d.either([1, 2, 3, 4, 7], [0]), d.either([1, 2, 3], [0])
    if d.chance(12):
        T = d.pick(HUGE)
    elif d.chance(12):
        B = d.pick(HUGE)
    F = layer.input_size if not d.chance(10) else d.pick([0, layer.input_size + 1])
    shape = (B, T, F) if layer.batch_first else (T, B, F)
    if d.chance(12):
        shape = d.pick([(T, B), (T, B, F, 1), (), (T,)])
    x = array_arg(d, shape, layer.dtype)
    kwargs = {}
    LD = layer.num_layers * layer.num_directions
    r = d.u8() % 8
    if r == 1:
        kwargs["state"] = prev_state
    elif r == 2:
        try:
            kwargs["state"] = layer.initial_state(d.pick([B, B, 1, 0, -1, 2.0] + HUGE))
        except ALLOWED:
            pass
    elif r == 3:
        kwargs["state"] = layer.State(*(array_arg(d, (LD, B, n), layer.dtype)
                                        for n in channels(layer)))
    elif r == 4:
        kwargs["state"] = d.pick([garbage(d), (garbage(d), garbage(d)), [np.zeros((LD, B, 2))] * 2,
                                  (np.zeros((LD, B, layer.hidden_size)),) * 3,
                                  (np.zeros((LD, B, layer.hidden_size)),) * 4])
    if d.chance(4):
        kwargs["lengths"] = d.pick([
            np.arange(B) % (T + 1) if T < 100 and B < 100 else [1], [T] * B if B < 100 else [0],
            [0] * B if B < 100 else [0], [T + 1] * min(B, 99), [-1], np.ones(B if B < 100 else 1, float),
            garbage(d), [2**70]])
    if d.chance(6):
        Lf = getattr(layer, "context", (0, 0))[1]
        kwargs["x_future"] = array_arg(d, (max(Lf, 1), B, layer.input_size), layer.dtype)
    kwargs["training"] = d.either([True, True, False], [1, 0, None])
    y, state = layer.forward(x, **kwargs)
    given = kwargs.get("state")
    check_forward(layer, x, y, state, bounded=not isinstance(layer, fr.GRU) or given is None
                  or (isinstance(given, layer.State) and _within_one(given.h)))
    if kwargs["training"] and d.u8() % 4 != 0:
        dy = d.pick([None, "ones", "ones", "wrong", "garbage", "nan"])
        if dy == "ones":
            dy = np.ones(y.shape, d.pick([layer.dtype, np.float64, np.int8]))
        elif dy == "nan":
            dy = np.full(y.shape, np.nan)
        elif dy == "wrong":
            dy = np.ones(y.shape[:-1] + (y.shape[-1] + 1,))
        elif dy == "garbage":
            dy = garbage(d)
        dstate = None
        n = len(channels(layer))
        if d.chance(3):
            dstate = d.pick([layer.State(*(np.ones_like(s) for s in state[:n])),
                             layer.State(*([None] * (n - 1)), np.ones_like(state[n - 1])),
                             garbage(d), (garbage(d), None), (state[0],)])
        dx, ds = layer.backward(dy, dstate)
        assert dx.shape == np.shape(x) and dx.dtype == layer.dtype, (dx.shape, np.shape(x))
        assert all(a.shape == b.shape for a, b in zip(ds[:n], state[:n]))
    return state


def _within_one(h) -> bool:
    """h is a float array whose entries other than NaN lie in [-1, 1]."""
    try:
        a = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.size > 0 and bool(np.all(np.abs(a[~np.isnan(a)]) <= 1))


def program(d: Data) -> None:
    fr.set_gemm(d.pick(["blas", "blas", "portable"]))
    layer = construct(d)
    if d.chance(8):
        spoil_params(d, layer)
    state = None
    for _ in range(1 + d.u8() % 3):
        if d.chance(10):
            layer = d.pick([copy.deepcopy, lambda l: pickle.loads(pickle.dumps(l))])(layer)
        if d.chance(10):
            layer.zero_grad()
        try:
            state = one_call(d, layer, state)
        except ALLOWED:
            pass


def one_input(data: bytes) -> None:
    """The fuzz target: a result or ValueError/TypeError/MemoryError, nothing else."""
    d = Data(data)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program(d)
        except ALLOWED:
            pass
        finally:
            fr.set_gemm("blas")


def _cap_address_space() -> None:
    try:
        import resource
    except ImportError:
        return
    gb = float(os.environ.get("FUZZ_AS_LIMIT_GB", "8"))
    lim = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    HUGE.extend(HUGE_CAPPED)


def _fallback(argv) -> None:
    """Without atheris: random inputs for -max_total_time seconds or -runs inputs."""
    opts = dict(a[1:].split("=", 1) for a in argv if a.startswith("-") and "=" in a)
    budget = float(opts.get("max_total_time", 60))
    runs = int(opts.get("runs", -1))
    seed = int(opts.get("seed", int(time.time())))
    rng = np.random.default_rng(seed)
    print(f"atheris is not installed: random-bytes fallback, seed {seed}, {budget:.0f} s")
    end, n = time.monotonic() + budget, 0
    while time.monotonic() < end and n != runs:
        data = rng.bytes(int(rng.integers(0, 256)))
        try:
            one_input(data)
        except BaseException:
            print(f"FAILED on input {data.hex()}")
            raise
        n += 1
    print(f"Done {n} runs in {budget:.0f} s: no finding")


def _instrument() -> None:
    """Coverage of every Python function of fusedrnn and of this decoder, so the
    fuzzer learns which bytes reach new branches of the API. Done function by
    function (atheris.instrument_imports misses modules that an editable
    install loads through its own loader)."""
    import inspect
    import types

    seen = set()

    def patch(fn):
        if isinstance(fn, types.FunctionType) and id(fn) not in seen:
            seen.add(id(fn))
            atheris.instrument_func(fn)

    modules = [m for name, m in list(sys.modules.items())
               if m is not None and (name == "fusedrnn" or name.startswith("fusedrnn."))]
    modules.append(sys.modules[__name__])
    for mod in modules:
        for obj in list(vars(mod).values()):
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isclass(obj):
                for member in vars(obj).values():
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if isinstance(member, property):
                        for f in (member.fget, member.fset):
                            patch(f)
                    else:
                        patch(member)
            else:
                patch(obj)
    print(f"INFO: instrumented {len(seen)} functions of fusedrnn and the fuzz decoder")


def main() -> None:
    _cap_address_space()
    if atheris is None:
        _fallback(sys.argv[1:])
        return
    _instrument()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
