"""Freed memory kept for reuse on the CPU (glibc's malloc), so a step's large tensors do not
fault their pages in again on every step.

glibc serves an allocation above its mmap threshold (32 MiB at most) with fresh pages from the
kernel and unmaps them on free; each first touch of such a page is a page fault that zero-fills
it. A SmolLM2 step allocates several vocabulary-sized tensors (the completion logits, 100 MB in
float32 per micro-batch; the embedding's gradient, 113 MB) and frees them, so every step pays
those faults again: on the 2-core EPYC VM they were a third of the update's time
(``python -m benchmarks.step_cpu`` prints the step with and without). With mmap turned off and
the trim threshold raised, freed blocks stay in the heap and the next step reuses them; the
process keeps its peak memory instead of returning it between steps.

Written by hand because no Python library sets these: ``mallopt`` is glibc's own interface
(malloc(3), M_MMAP_MAX and M_TRIM_THRESHOLD), reached through ctypes; jemalloc or tcmalloc, the
usual alternative, must be preloaded before the process starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # malloc.h
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: free memory above 2 GiB at the heap's top is returned


@functools.cache
def keep_freed_memory() -> bool:
    """Turn off glibc's mmap for large blocks and its trimming of freed memory, for the rest of
    the process; True where it took effect, False where the C library is not glibc (macOS,
    musl), which keeps its own behaviour."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
