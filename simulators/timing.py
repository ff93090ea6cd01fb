"""Wall-clock medians for the overhead rows (V12) and the benchmark scripts."""

from __future__ import annotations

import time

import numpy as np


def median_seconds(fn, repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``repeats`` calls of ``fn()`` (after one untimed call if ``warmup``)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if warmup:
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))
