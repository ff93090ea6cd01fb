"""Argument validation shared by the theory modules.

Every public formula validates its inputs with these helpers so that bad input
fails loudly with the argument's name and the accepted range, instead of
propagating a NaN.
"""

from __future__ import annotations

import numpy as np


def as_float_array(name: str, value) -> np.ndarray:
    """Return ``value`` as a float array; reject NaN and infinities."""
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got a NaN or infinite value")
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
