"""Write-tracked parameter arrays.

A layer's `params` hold `TrackedArray`s: NumPy arrays (a subclass) that count
the writes made through them, so that a stream learns in a few nanoseconds
whether any weight may have changed since its last step, instead of comparing
every weight with a copy.

- Writes through a tracked array work as before: `p[...] = w`, `p[0, :3] = 1`,
  `p *= 2`, `np.add(p, g, out=p)`, `np.copyto(p, w)`, `p.fill(0)` (also
  through views of it, `p.reshape(-1)[...] = ...`). Each one adds to
  `VERSION[0]` before and after it writes.
- The arrays are flagged read-only in between, so that a write which would
  go around the tracking (`np.asarray(p)[...] = w`, a C extension asking for a
  writable buffer, a method that writes in place such as `p.sort()`) raises
  ValueError instead of changing the weights unseen. Clearing the flag
  yourself (`p.flags.writeable = True`) opts out of the tracking.
- Results of computations (`p * 2`, `p.T @ x`, `np.abs(p)`, `p.copy()`) are
  plain arrays; views of a tracked array are tracked.

`is_tracked(a)` says whether writes into `a` are counted (a TrackedArray
still flagged read-only); a stream compares the contents of the arrays that
are not (e.g. a plain array stored with `params[k] = w`) before every step.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterator, List

import numpy as np

__all__ = ["TrackedArray", "VERSION", "track", "track_all", "untrack", "is_tracked"]

# Adds one before and one after each write through a tracked array (int64: a
# stream reads it from C through its address).
VERSION = np.zeros(1, np.int64)
_LOCK = threading.RLock()

# NumPy functions that write into their first argument
_WRITES_FIRST = frozenset(getattr(np, f) for f in
                          ("copyto", "put", "putmask", "place", "fill_diagonal",
                           "put_along_axis") if hasattr(np, f))


def _chain(a: np.ndarray) -> List[np.ndarray]:
    """a, then the arrays it is a view of (the owner of the memory last)."""
    out = []
    x: Any = a
    while isinstance(x, np.ndarray):
        out.append(x)
        x = x.base
    return out


@contextlib.contextmanager
def _writing(arrays: List[np.ndarray]) -> Iterator[None]:
    """Make the tracked `arrays` writeable for a write (and count it)."""
    with _LOCK:
        VERSION[0] += 1
        opened: List[np.ndarray] = []
        try:
            for a in arrays:
                for x in reversed(_chain(a)):   # the owner first
                    if not x.flags.writeable:
                        x.flags.writeable = True
                        opened.append(x)
            yield
        finally:
            for x in reversed(opened):
                x.flags.writeable = False
            VERSION[0] += 1


def _plain(a: Any) -> Any:
    return a.view(np.ndarray) if isinstance(a, TrackedArray) else a


def _result(r: Any) -> Any:
    """A new array computed from tracked ones as a plain array (a view of a
    tracked array is read-only and stays tracked)."""
    return r.view(np.ndarray) if type(r) is TrackedArray and r.flags.writeable else r


class TrackedArray(np.ndarray):
    """A parameter array whose writes are counted in `VERSION` (see the module
    docstring); read-only for writes that do not go through it."""

    def __getitem__(self, key: Any) -> Any:
        return _result(super().__getitem__(key))

    def copy(self, order: str = "C") -> np.ndarray:  # type: ignore[override]
        return _result(super().copy(order))

    def astype(self, *args: Any, **kwargs: Any) -> np.ndarray:  # type: ignore[override]
        return _result(super().astype(*args, **kwargs))

    def __setitem__(self, key: Any, value: Any) -> None:
        with _writing([self]):
            super().__setitem__(key, _plain(value))

    def fill(self, value: Any) -> None:
        with _writing([self]):
            super().fill(value)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, out: Any = None,
                        **kwargs: Any) -> Any:
        args = [_plain(x) for x in inputs]
        targets = [o for o in (out or ()) if isinstance(o, TrackedArray)]
        if method == "at" and isinstance(inputs[0], TrackedArray):
            targets.append(inputs[0])
        if not targets:
            if out is not None:
                kwargs["out"] = out
            return getattr(ufunc, method)(*args, **kwargs)
        with _writing(targets):
            if method == "at":
                args[0] = inputs[0].view(np.ndarray)
            if out is not None:
                kwargs["out"] = tuple(_plain(o) for o in out)
            result = getattr(ufunc, method)(*args, **kwargs)
        if out is None:
            return result
        return out[0] if len(out) == 1 else out

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        targets = []
        if func in _WRITES_FIRST:
            first = args[0] if args else next(iter(kwargs.values()), None)
            targets.append(first)
        out = kwargs.get("out")
        targets.extend(out if isinstance(out, tuple) else (out,))
        targets = [t for t in targets if isinstance(t, TrackedArray)]
        if not targets:
            return _result(super().__array_function__(func, types, args, kwargs))
        with _writing(targets):
            return _result(super().__array_function__(func, types, args, kwargs))

    def __repr__(self) -> str:
        return repr(self.view(np.ndarray))

    def __reduce__(self) -> Any:
        """Pickled (and deep-copied) as a plain array; track() again after loading."""
        return np.asarray(self).copy().__reduce__()


def track(a: np.ndarray) -> TrackedArray:
    """A tracked view of `a` (a itself when it is tracked already); `a` becomes
    read-only (write through the returned array)."""
    if is_tracked(a):
        return a
    t = a.view(TrackedArray)
    for x in [a] + _chain(t):
        x.flags.writeable = False
    return t


def track_all(params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """track() every array of a params dict, in place; returns the dict."""
    for k, v in params.items():
        params[k] = track(v)
    return params


def untrack(a: np.ndarray) -> np.ndarray:
    """Make `a` writeable again (for memory shared with writers the tracking
    cannot see, such as a torch tensor); returns a plain view of it. Streams
    compare such arrays with their copies before every step."""
    for x in reversed(_chain(a)):
        x.flags.writeable = True
    return np.asarray(a)


def is_tracked(a: Any) -> bool:
    """Whether every write into `a` is counted in VERSION."""
    return type(a) is TrackedArray and not a.flags.writeable
