"""Evaluation metrics over n samples per problem (VIP §6: Pass@k, Mean@k, Maj@k; CTPO: avg@k).

Written by hand: none of the listed libraries ships the unbiased pass@k estimator.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from theory import checks


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, eq. 1):
    1 - C(n - c, k) / C(n, k), as the product prod_{i = n - c + 1}^{n} (1 - k / i)."""
    n, c, k = checks.integer("n", n), checks.integer("c", c), checks.integer("k", k)
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n; got n = {n}, c = {c}, k = {k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_at_k(correct) -> float:
    """Mean@k (VIP) = avg@k (CTPO): the fraction of the first k samples that are correct."""
    correct = checks.flags("correct", correct)
    if correct.size == 0:
        raise ValueError("correct must hold at least one sample")
    return float(correct.mean())


def maj_at_k(answers, correct) -> float:
    """Maj@k: 1 if the most frequent extracted answer among the samples is correct (ties go to
    the answer seen first; samples with no answer do not vote)."""
    answers, correct = list(answers), checks.flags("correct", correct)
    if len(answers) != correct.size:
        raise ValueError(f"answers and correct must have one length; got {len(answers)} and {correct.size}")
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return float(next(c for a, c in zip(answers, correct) if a == winner))


def summarise(correct_by_problem, answers_by_problem, ks) -> dict:
    """Each metric averaged over problems, for each k (the first k samples for Mean/Maj)."""
    correct_by_problem = [checks.flags(f"correct_by_problem[{i}]", c) for i, c in enumerate(correct_by_problem)]
    if len(answers_by_problem) != len(correct_by_problem) or not correct_by_problem:
        raise ValueError(
            "answers_by_problem and correct_by_problem must hold one entry per problem, at least one;"
            f" got {len(answers_by_problem)} and {len(correct_by_problem)}"
        )
    out = {}
    for k in ks:
        out[f"pass@{k}"] = float(np.mean([pass_at_k(len(c), int(np.sum(c)), k) for c in correct_by_problem]))
        out[f"mean@{k}"] = float(np.mean([mean_at_k(c[:k]) for c in correct_by_problem]))
        out[f"maj@{k}"] = float(
            np.mean([maj_at_k(a[:k], c[:k]) for a, c in zip(answers_by_problem, correct_by_problem)])
        )
    return out
