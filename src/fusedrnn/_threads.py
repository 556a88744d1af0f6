"""How many cores fusedrnn uses: `set_num_threads(n)` / `get_num_threads()`.

The LSTM kernel splits every time step over its own threads (the team path, a
pool of workers kept between calls), the big GEMMs after the backward loop
included; the RNN, full peepholes and calls shorter than 8 steps run their
GEMMs on SciPy's BLAS, whose thread pool threadpoolctl controls; independent cells (the two directions of a
bidirectional layer at small batch) run on a small pool of Python threads while
the kernel has released the GIL, each then with a one-thread kernel. All follow
the one setting, which defaults to all cores. threadpoolctl's context managers
(`threadpool_limits(n, "blas")`) keep working on the BLAS part.

Fork: a child process has none of its parent's threads. The kernel's worker
pool starts empty in the child (csrc/team.c), the directions' pool below is
dropped and made again on first use, and the package's locks (`lock()`) are
released if the fork caught one held, so a child forked at any time computes
as its parent would (multiprocessing and DataLoader workers fork on Linux)."""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

from . import _kernel

_num_threads: int = os.cpu_count() or 1
_pool: Optional[ThreadPoolExecutor] = None


_local = threading.local()
_locks: "weakref.WeakSet[threading.Lock]" = weakref.WeakSet()


def lock() -> threading.Lock:
    """A lock that a forked child finds released (the thread that held it in
    the parent does not exist there)."""
    new = threading.Lock()
    _locks.add(new)
    return new


def _after_fork_in_child() -> None:
    global _pool
    _pool = None  # its workers are not in the child; pool() makes a new one
    for held in list(_locks):
        if held.locked():
            held.release()


os.register_at_fork(after_in_child=_after_fork_in_child)

_kernel.set_num_threads(_num_threads)


def kernel_threads() -> int:
    """Threads for a kernel call made on this thread (1 inside `one_kernel_thread`)."""
    return int(getattr(_local, "kernel_threads", 0)) or _num_threads


@contextlib.contextmanager
def one_kernel_thread() -> Iterator[None]:
    """Kernel calls made on this thread inside the block use one thread (the
    caller already runs independent calls side by side)."""
    old = getattr(_local, "kernel_threads", 0)
    _local.kernel_threads = 1
    try:
        yield
    finally:
        _local.kernel_threads = old


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
    """Use n cores: the kernel's time loops split each step over n threads,
    SciPy's BLAS pool gets n threads, and with n >= 2 the independent cells of a
    step (bidirectional layers at small batch) run in parallel."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for c in _scipy_blas_controllers():
        c.set_num_threads(n)
    _kernel.set_num_threads(n)
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
