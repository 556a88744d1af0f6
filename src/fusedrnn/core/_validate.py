"""Argument checks and conversions shared by the layers.

Every error names the argument and the expected shape or dtype."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype: Any) -> np.dtype:
    """The layer dtype: float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def is_int(value: Any) -> bool:
    """value is a Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def flag(value: Any, name: str) -> bool:
    """A Python or NumPy bool as a bool, else TypeError naming the argument."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


# Every size reaches the BLAS as a 32-bit int.
MAX_SIZE = 2**31 - 1


def positive_int(value: Any, name: str, maximum: int = MAX_SIZE) -> int:
    """A Python int in [1, maximum] (bools refused)."""
    if not is_int(value):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def as_array(a: Any, name: str) -> np.ndarray:
    """np.asarray(a), with an error naming the argument for what NumPy cannot
    convert: a ragged nesting (ValueError), a torch tensor that requires grad or
    lives on a GPU (TypeError)."""
    if getattr(a, "requires_grad", False) is True and hasattr(a, "detach"):
        raise TypeError(f"{name} is a torch tensor that requires grad: the NumPy API does not "
                        f"track gradients; pass {name}.detach().numpy(), or use the "
                        "torch.nn.Modules of fusedrnn.torch for autograd")
    try:
        return np.asarray(a)
    except ValueError as exc:
        raise ValueError(f"{name} must be a rectangular array (every row of the same length), "
                         f"got a ragged {type(a).__name__}: {exc}") from None
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got a "
                        f"{type(a).__name__} NumPy cannot convert: {exc}") from None


def as_real_array(a: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """Convert array-likes of bool, integer or floating values to `dtype`.

    The cast to the layer dtype is documented behaviour; complex, object and
    string data raise TypeError rather than being silently coerced."""
    arr = as_array(a, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (it is cast to {dtype}), got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def sequence(a: Any, name: str, dtype: np.dtype, features: int, batch_first: bool,
             batch: Optional[int] = None, steps: Optional[int] = None) -> np.ndarray:
    """A (T, B, features) time-major C-contiguous array from (T, B, F) or, with
    batch_first, (B, T, F) input."""
    arr = as_real_array(a, name, dtype)
    layout = "(B, T, {f})" if batch_first else "(T, B, {f})"
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape {layout.format(f=features)}, got shape {arr.shape}")
    if batch_first:
        arr = arr.transpose(1, 0, 2)
    T, B, F = arr.shape
    if F != features:
        raise ValueError(f"{name} must have shape {layout.format(f=features)} with feature size "
                         f"{features}, got shape {np.asarray(a).shape}")
    if T < 1 or B < 1:
        raise ValueError(f"{name} must have at least one time step and one batch row, got shape "
                         f"{np.asarray(a).shape} (T = 0 and B = 0 are refused)")
    if steps is not None and T != steps:
        raise ValueError(f"{name} must have {steps} time steps like the forward input, got {T}")
    if batch is not None and B != batch:
        raise ValueError(f"{name} must have batch size {batch} like the forward input, got {B}")
    return np.ascontiguousarray(arr)


def state_part(a: Any, name: str, dtype: np.dtype, shape: Tuple[int, int, int]) -> np.ndarray:
    """One state tensor (layers * directions, B, H), returned C-contiguous."""
    arr = as_real_array(a, name, dtype)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (layers * directions, B, H), got {arr.shape}")
    return np.ascontiguousarray(arr)


class StateTypeError(TypeError, ValueError):
    """A state or state gradient that is not the layer's State NamedTuple (a
    TypeError; also a ValueError, what a malformed dstate raised before)."""


class MissingEntryError(ValueError, KeyError):
    """A `params` / `grads` entry the layer needs was deleted: a ValueError
    naming the entry (also a KeyError, what a missing dict key raises)."""

    def __str__(self) -> str:
        return ValueError.__str__(self)  # KeyError's str() would quote the message


def parameter(params: dict, key: str, dtype: np.dtype, shape: Tuple[int, ...],
              store: str = "params") -> np.ndarray:
    """A parameter (or gradient buffer, store="grads") as the kernel will read
    it: checked and C-contiguous (a view when it already is, so in-place updates
    are always seen)."""
    if not isinstance(params, dict):
        raise TypeError(f"{store} must be a dict of numpy arrays, got {type(params).__name__}")
    if key not in params:
        raise MissingEntryError(f"{store} is missing {key!r}: it must hold a numpy array of "
                                f"shape {shape} and dtype {dtype} (the layer was built with it)")
    arr = params[key]
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
        raise TypeError(f"{store}[{key!r}] must be a numpy array of dtype {dtype}, got "
                        f"{getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.shape != shape:
        raise ValueError(f"{store}[{key!r}] must have shape {shape}, got {arr.shape}")
    return np.ascontiguousarray(arr)


def private_copy(arr: np.ndarray, source: Any) -> np.ndarray:
    """`arr`, copied when it may share memory with the caller's `source`, so
    that the backward reads what the forward saw."""
    if isinstance(source, np.ndarray) and np.may_share_memory(arr, source):
        return arr.copy()
    return arr


def lengths(a: Any, batch: int, steps: int) -> Optional[np.ndarray]:
    """Per-row sequence lengths: None, or B integers in [0, T] (int64, contiguous)."""
    if a is None:
        return None
    # a private copy, made before the checks: the backward reads the lengths the
    # forward checked and used, whatever the caller does with its buffer
    arr = np.array(as_array(a, "lengths"), copy=True)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths must have shape (B,) = ({batch},), one per batch row, got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > steps):
        raise ValueError(f"lengths must lie in [0, T] = [0, {steps}], got min {arr.min()}, max {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def seed(value: Any, name: str = "seed") -> Any:
    """A seed for np.random.default_rng: None, an int >= 0, or NumPy's own
    SeedSequence / BitGenerator / Generator."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.BitGenerator,
                                           np.random.Generator)):
        return value
    if not is_int(value):
        raise TypeError(f"{name} must be None or an int >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be None or an int >= 0, got {value}")
    return int(value)


def optional_positive(value: Any, name: str) -> Optional[float]:
    """None, or a finite float > 0."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number or None, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} must be a finite number > 0 or None, got an int of "
                         f"{int(value).bit_length()} bits (beyond the float range)") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
    return v


def finite_number(value: Any, name: str) -> float:
    """A finite real number as a float: bools, strings, arrays and None raise
    TypeError, NaN, infinities and ints too large for a float ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v
