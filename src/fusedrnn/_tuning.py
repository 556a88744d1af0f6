"""The one owner of fusedrnn's tuning settings: how many threads, which path a
kernel call takes, and when the two directions of a layer run side by side.

Each setting has one home: the kernel's own (csrc/plan.h, where each call's
plan reads them) or, for what only the Python layers use, this module. Read
and change them here only:

    from fusedrnn import _tuning
    _tuning.get("packed_max_rows")                    # one setting
    old = _tuning.set("team_min_steps", 1)            # returns the old value
    with _tuning.override(num_threads=2, min_step_flops=0):
        ...                                           # restored on exit
    _tuning.get_all()                                 # every setting, a dict

Settings (all ints):
    num_threads        threads of a call: the kernel's team and SciPy's BLAS pool
                       (`fusedrnn.set_num_threads`); default: all cores
    packed_max_rows    batches up to this many rows run on the packed micro-kernel
                       (0: always the BLAS); default 2**30
    team_min_steps     ... and sequences of at least this many steps (packing the
                       weights once per call is not repaid by fewer; calls with
                       prepacked weights run any length, fewer steps on one
                       thread); default 8
    min_step_flops     a thread only for at least this many recurrent flops per
    min_step_bytes     step, or this many bytes of recurrent weights; 200000, 65536
    grad_rows          the backward's gradient GEMMs on the micro-kernel up to T*B
                       rows, beyond on the BLAS; default: unbounded (2**63 - 1)
    isa                the micro-kernel's tiles: 0 baseline x86-64, 1 AVX2+FMA,
                       2 AVX-512 (at most `_kernel.best_isa()`, the default)
    directions_max_batch  bidirectional layers with batches up to this run their
                       two directions on two threads (with num_threads >= 2); 16
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator

from . import _kernel

_KERNEL = {"num_threads": "threads", "packed_max_rows": "packed_max_rows",
           "team_min_steps": "team_min_steps", "min_step_flops": "min_step_flops",
           "min_step_bytes": "min_step_bytes", "grad_rows": "grad_rows"}
_LIMITS = {"num_threads": (1, 1 << 16), "packed_max_rows": (0, 2**63 - 1),
           "team_min_steps": (1, 2**63 - 1), "min_step_flops": (0, 2**63 - 1),
           "min_step_bytes": (0, 2**63 - 1), "grad_rows": (0, 2**63 - 1),
           "directions_max_batch": (0, 2**63 - 1)}
# Batches up to this size run the two directions of a layer on two threads: the
# per-step work is then too small for the BLAS or the team to use both cores.
_python: Dict[str, int] = {"directions_max_batch": 16}

NAMES = tuple(_KERNEL) + ("isa",) + tuple(_python)


def _checked(name: str, value: Any) -> int:
    label = "num_threads n" if name == "num_threads" else name  # set_num_threads(n)
    if name not in NAMES:
        raise ValueError(f"unknown setting {name!r}; the settings are {', '.join(NAMES)}")
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np
            ok = isinstance(value, np.integer)
        except ImportError:  # pragma: no cover
            ok = False
        if not ok:
            raise TypeError(f"{label} must be an int, got {value!r}")
    value = int(value)
    lo, hi = (0, _kernel.best_isa()) if name == "isa" else _LIMITS[name]
    if not lo <= value <= hi:
        raise ValueError(f"{label} must be >= {lo} and <= {hi}, got {value}")
    return value


def get(name: str) -> int:
    """The current value of one setting."""
    if name in _KERNEL:
        return int(_kernel.get_tuning()[_KERNEL[name]])
    if name == "isa":
        return int(_kernel.get_isa())
    if name in _python:
        return _python[name]
    raise ValueError(f"unknown setting {name!r}; the settings are {', '.join(NAMES)}")


def set(name: str, value: int) -> int:  # noqa: A001 (the module's verb)
    """Change one setting (validated: TypeError / ValueError naming it); returns
    the old value."""
    value = _checked(name, value)
    old = get(name)
    if name == "num_threads":
        for c in _scipy_blas_controllers():
            c.set_num_threads(value)
    if name in _KERNEL:
        _kernel.set_tuning(**{_KERNEL[name]: value})
    elif name == "isa":
        _kernel.set_isa(value)
    else:
        _python[name] = value
    return old


def get_all() -> Dict[str, int]:
    """Every setting and its value."""
    return {name: get(name) for name in NAMES}


@contextlib.contextmanager
def override(**values: int) -> Iterator[None]:
    """Settings changed for the duration of the block, restored after it (also
    on an exception). Process-wide: not for one thread among several."""
    for name, v in values.items():
        _checked(name, v)
    old: Dict[str, int] = {}
    try:
        for name, v in values.items():
            old[name] = set(name, v)
        yield
    finally:
        for name, v in reversed(list(old.items())):
            set(name, v)


def _scipy_blas_controllers() -> list:
    """threadpoolctl's controllers of the BLAS that scipy.linalg.cython_blas uses
    (its own OpenBLAS in wheels; a shared one elsewhere, then all BLAS pools)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # the BLAS keeps its own default
        return []

    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)

    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    own = [c for c in blas if "scipy" in os.path.basename(os.path.dirname(c.filepath)) or
           "scipy" in os.path.basename(c.filepath)]
    return own or blas


# the kernel's default: every core (the C default is one thread)
_kernel.set_tuning(threads=min(os.cpu_count() or 1, _LIMITS["num_threads"][1]))
