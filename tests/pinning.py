"""What a bitwise pin must survive before a test may keep it.

A test that pins an output exactly states that the output is a property of the code. Float
noise that the processor decides (the BLAS kernels OpenBLAS picks for the CPU, its thread
count, numpy's SIMD sort of equal values) is not: a pin that depends on it passes on the
machine that recorded it and fails on another, and CI, which runs on the developer's own
machine, cannot show that. So a pin earns its place by passing :func:`robust_outputs` in the
default suite:

- the same output for the inputs perturbed at the 1e-12 level (:func:`perturbed`): kernel
  noise is ~1e-16 relative, so an output that a 1e-12 change does not move is far from every
  decision boundary the kernels could cross;
- the same output under 1 BLAS thread and under the default count (threadpoolctl);
- the same output under every order of exact ties (:data:`TIE_ORDERS`), which numpy's default
  sort leaves to its implementation.

Outputs whose ties are resolved by that unspecified order are compared up to permutations
among the tied items (:func:`up_to_ties`). Where an output fails these, the test asserts the
property the pin stood for instead.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

PERTURBATION = 1e-12  # relative size of each input perturbation
PERTURBED_COPIES = 8


def perturbed(x, rng: np.random.Generator, copies: int = PERTURBED_COPIES, rel: float = PERTURBATION):
    """``copies`` versions of the array ``x``, each entry scaled by 1 ± ``rel`` with random signs
    (zeros stay zero), clipped to the input's own range so probabilities stay probabilities."""
    x = np.asarray(x, dtype=float)
    lo, hi = x.min(), x.max()
    return [np.clip(x * (1 + rel * rng.choice([-1.0, 1.0], size=x.shape)), lo, hi) for _ in range(copies)]


def up_to_ties(counts, weights) -> list[tuple[float, tuple[int, ...]]]:
    """``counts`` as, per distinct value of ``weights``, the sorted counts of the items with that
    weight: equal to another output's exactly when the two differ only by permuting items of
    equal weight (for distinct weights it is the output itself)."""
    counts, weights = np.asarray(counts), np.asarray(weights)
    return [(float(w), tuple(sorted(counts[weights == w].tolist()))) for w in np.unique(weights)]


def _descending_stable_last_first(values):
    """Largest first; among equal values the larger index first (a stable sort, reversed)."""
    return np.argsort(values, kind="stable")[::-1]


def _descending_stable_first_first(values):
    """Largest first; among equal values the smaller index first."""
    return np.argsort(-np.asarray(values), kind="stable")


TIE_ORDERS = {
    "numpy default": None,
    "ties: last index first": _descending_stable_last_first,
    "ties: first index first": _descending_stable_first_first,
}


def thread_counts():
    """1 BLAS thread, then the default count."""
    return [1, None]


def robust_outputs(compute, inputs, rng: np.random.Generator, monkeypatch=None, sort_target=None) -> dict:
    """Every output of ``compute(x)`` over ``inputs``, its perturbed copies, 1 and the default
    number of BLAS threads, and (with ``monkeypatch`` and ``sort_target``, an ``(object, name)``
    holding the descending-order function) each of :data:`TIE_ORDERS`. Returns
    ``{label: output}``; a pin is robust when the caller finds them all equal."""
    outputs = {}
    for threads in thread_counts():
        with threadpool_limits(limits=threads):
            outputs[f"threads={threads or 'default'}"] = compute(np.asarray(inputs, dtype=float))
    for k, x in enumerate(perturbed(inputs, rng)):
        outputs[f"perturbed #{k}"] = compute(x)
    if monkeypatch is not None:
        target, name = sort_target
        default = getattr(target, name)
        for label, order in TIE_ORDERS.items():
            with monkeypatch.context() as patch:
                patch.setattr(target, name, order or default)
                outputs[label] = compute(np.asarray(inputs, dtype=float))
    return outputs
