"""Scratch buffers of the kernel calls, kept between calls of one layer.

A training step's backward needs a workspace of about T*B*4H elements (the
alpha of every step), the forward a smaller one. Allocated fresh, every call
maps new pages that the kernel then faults in and the OS zeroes, and unmaps
them after (on several threads each unmap also interrupts the other cores):
about a tenth of a medium training step on 2 threads (perf: clear_page_erms,
smp_call_function_many_cond). A layer therefore keeps a few released
workspaces and hands them out again. Nothing in them is read before the kernel
writes it.

Buffers are 64-byte aligned (one cache line): NumPy's large arrays start 16
bytes into a line, and the kernel's 64-byte vector loads and stores of the
gates and the packed weights would then each touch two lines (a B = 1 step
GEMM took 1.06 instead of 0.66 us)."""
from __future__ import annotations

from typing import List

import numpy as np

from .. import _kernel
from . import _threads

# Released buffers kept per layer: two cells (the directions of a layer) run at
# once at most, each with one forward or backward workspace.
MAX_KEPT = 2
ALIGN = 64  # bytes


def aligned_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """A 1-D array of n uninitialised elements whose data starts on an ALIGN-byte
    boundary (a view of a slightly larger array)."""
    dtype = np.dtype(dtype)
    raw = np.empty(n + ALIGN // dtype.itemsize, dtype)
    return _aligned_view(raw)[:n]


def _aligned_view(raw: np.ndarray) -> np.ndarray:
    """raw from its first ALIGN-byte boundary on."""
    off = (-_kernel.data_address(raw) % ALIGN) // raw.dtype.itemsize
    return raw[off:]


class ScratchPool:
    """Buffers of one dtype: `take(n)` gives a 1-D array of n elements (a view
    of a kept buffer when one is large enough), `give(a)` returns it."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self._kept: List[np.ndarray] = []     # the buffers
        self._views: List[np.ndarray] = []    # their aligned views, in the same order
        self._lock = _threads.lock()

    def take(self, n: int) -> np.ndarray:
        with self._lock:
            views = self._views
            best = -1
            for i, v in enumerate(views):  # the smallest that fits
                if v.shape[0] >= n and (best < 0 or v.shape[0] < views[best].shape[0]):
                    best = i
            if best >= 0:
                del self._kept[best]
                return views.pop(best)[:n]
        return aligned_empty(n, self.dtype)

    def give(self, buf: np.ndarray) -> None:
        base = buf if buf.base is None else buf.base
        if not isinstance(base, np.ndarray) or base.dtype != self.dtype or base.ndim != 1:
            return
        with self._lock:
            self._kept.append(base)
            self._views.append(_aligned_view(base))
            if len(self._kept) > MAX_KEPT:  # drop the smallest
                i = min(range(len(self._kept)), key=lambda i: self._kept[i].shape[0])
                del self._kept[i], self._views[i]
