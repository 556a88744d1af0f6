"""How many cores fusedrnn uses: `set_num_threads(n)` / `get_num_threads()`.

The big GEMMs run on SciPy's BLAS, whose thread pool threadpoolctl controls;
independent cells (the two directions of a bidirectional layer) run on a small
pool of Python threads while the kernel has released the GIL. Both follow the
one setting, which defaults to all cores. threadpoolctl's context managers
(`threadpool_limits(n, "blas")`) keep working on the BLAS part."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from . import _kernel

_num_threads: int = os.cpu_count() or 1
_pool: Optional[ThreadPoolExecutor] = None


def _packed_rows_for(n: int) -> int:
    """The packed micro-kernel of the per-step GEMMs is single-threaded: on one
    core it beats the BLAS up to batch 64 (bench/README.md); with more cores the
    BLAS spreads batches above 16 over them."""
    return 64 if n == 1 else 16


_kernel.set_packed_max_rows(_packed_rows_for(_num_threads))


def _scipy_blas_controllers() -> list:
    """threadpoolctl's controllers of the BLAS that scipy.linalg.cython_blas uses
    (its own OpenBLAS in wheels; a shared one elsewhere, then all BLAS pools)."""
    from threadpoolctl import ThreadpoolController

    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)

    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    own = [c for c in blas if "scipy" in os.path.basename(os.path.dirname(c.filepath)) or
           "scipy" in os.path.basename(c.filepath)]
    return own or blas


def set_num_threads(n: int) -> None:
    """Use n cores: SciPy's BLAS pool gets n threads, with n >= 2 the
    independent cells of a step (bidirectional layers) run in parallel, and with
    n = 1 the packed micro-kernel serves the per-step GEMMs of batches up to 64."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for c in _scipy_blas_controllers():
        c.set_num_threads(n)
    _kernel.set_packed_max_rows(_packed_rows_for(n))
    _num_threads = n


def get_num_threads() -> int:
    """The number of cores set by `set_num_threads` (default: all cores)."""
    return _num_threads


def pool() -> Optional[ThreadPoolExecutor]:
    """A two-worker pool for independent cells, or None with one thread."""
    global _pool
    if _num_threads < 2:
        return None
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fusedrnn")
    return _pool
