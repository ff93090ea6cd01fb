"""Argument validation shared by theory, stats_tests and the trainer.

Every public function validates its inputs with these helpers so that bad input fails loudly
with the argument's name and the accepted range, instead of propagating a NaN or reading a
boolean or a string as a number. Hand-written: numpy's conversions accept exactly those.
"""

from __future__ import annotations

import math

import numpy as np


def real_array(name: str, value) -> np.ndarray:
    """``value`` as a float array, refused (TypeError naming ``name``) when it holds booleans or
    text, which numpy would silently read as 0/1 or parse as numbers; NaN passes."""
    raw = np.asarray(value)
    if isinstance(value, (list, tuple)) and raw.dtype.kind in "iuf":  # [True, 4] reads as [1, 4]
        raw = _as_objects(value, raw)
    if raw.dtype.kind == "O":
        bad = next((v for v in raw.ravel() if isinstance(v, (bool, np.bool_, str, bytes)) or v is None), _NONE)
        if bad is not _NONE:
            raise TypeError(f"{name} must hold real numbers; got {type(bad).__name__} {bad!r}")
    elif raw.dtype.kind in "bUSVc":
        what = {"b": "booleans", "c": "complex numbers"}.get(raw.dtype.kind, "text")
        raise TypeError(f"{name} must hold real numbers, not {what}; got dtype {raw.dtype}")
    try:
        return raw.astype(float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must hold real numbers; {exc}") from None


def as_float_array(name: str, value) -> np.ndarray:
    """Return ``value`` as a float array of real numbers (:func:`real_array`); reject NaN and
    infinities."""
    arr = real_array(name, value)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got a NaN or infinite value")
    return arr


_NONE = object()


def _as_objects(value, converted: np.ndarray) -> np.ndarray:
    """The Python sequence ``value`` as an object array (so that its booleans stay visible), or
    ``converted`` when it holds none."""
    objects = np.empty(converted.shape, dtype=object)
    objects[...] = value
    return objects if any(isinstance(v, (bool, np.bool_)) for v in objects.ravel()) else converted


def real(name: str, value) -> float:
    """A scalar real number as a float: not a bool, not text, not an array; NaN passes (the
    range checks of the caller refuse it)."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}") from None


def integer(name: str, value) -> int:
    """``value`` as a Python int: a finite whole number of integer or float type (2.0 passes,
    2.5 does not), not a bool and not text; ValueError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be an integer; got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer; got {value!r}") from None
    if not math.isfinite(number) or number != math.floor(number):
        raise ValueError(f"{name} must be a finite integer; got {value!r}")
    return int(value) if isinstance(value, (int, np.integer)) else int(number)


def flags(name: str, value) -> np.ndarray:
    """Correct/incorrect marks as a float array of 0s and 1s: booleans, or numbers equal to 0
    or 1 (text, None and other values are refused)."""
    raw = np.asarray(value)
    arr = raw.astype(float) if raw.dtype.kind == "b" else as_float_array(name, raw)
    wrong = arr[(arr != 0.0) & (arr != 1.0)]
    if wrong.size:
        raise ValueError(f"{name} must hold booleans or 0/1; got {wrong[0]:g}")
    return arr


def probability(name: str, value) -> np.ndarray:
    """A probability array: every entry in [0, 1]."""
    arr = as_float_array(name, value)
    if np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{arr.min()}, {arr.max()}]")
    return arr


def nonnegative(name: str, value) -> np.ndarray:
    """A non-negative array (variances, costs)."""
    arr = as_float_array(name, value)
    if np.any(arr < 0.0):
        raise ValueError(f"{name} must be >= 0; got minimum {arr.min()}")
    return arr


def at_least(name: str, value, lower: float) -> np.ndarray:
    """An array whose entries are all >= ``lower`` (group sizes)."""
    arr = as_float_array(name, value)
    if np.any(arr < lower):
        raise ValueError(f"{name} must be >= {lower:g}; got minimum {arr.min():g}")
    return arr


def choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """One of a fixed set of names."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value
