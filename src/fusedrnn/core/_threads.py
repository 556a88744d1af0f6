"""How many cores fusedrnn uses: `set_num_threads(n)` / `get_num_threads()`.

The kernel splits every time step of the LSTM and the RNN over its own threads
(the team path, a pool of workers kept between calls), the big GEMMs after the
backward loop included; full peepholes and calls shorter than 8 steps run their
GEMMs on SciPy's BLAS, whose thread pool threadpoolctl controls; independent
cells (the two directions of a bidirectional layer at small batch) run on a small pool of Python threads while
the kernel has released the GIL, each then with a one-thread kernel. All follow
the one setting, which defaults to all cores. threadpoolctl's context managers
(`threadpool_limits(n, "blas")`) keep working on the BLAS part. The setting
lives in `fusedrnn._tuning` with the kernel's other tuning settings.

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

from .. import _tuning

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


def kernel_threads() -> int:
    """The thread cap of a kernel call made on this thread: 1 inside
    `one_kernel_thread`, else 0 (the setting, `get_num_threads()`)."""
    return int(getattr(_local, "kernel_threads", 0))


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


def set_num_threads(n: int) -> None:
    """Use n cores: the kernel's time loops split each step over n threads,
    SciPy's BLAS pool gets n threads, and with n >= 2 the independent cells of a
    step (bidirectional layers at small batch) run in parallel. ValueError /
    TypeError naming num_threads for anything but an int in [1, 65536]."""
    _tuning.set("num_threads", n)


def get_num_threads() -> int:
    """The number of cores set by `set_num_threads` (default: all cores)."""
    return _tuning.get("num_threads")


def pool() -> Optional[ThreadPoolExecutor]:
    """A two-worker pool for independent cells, or None with one thread."""
    global _pool
    if get_num_threads() < 2:
        return None
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fusedrnn")
    return _pool
