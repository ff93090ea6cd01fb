"""Verifiable task families with known, heterogeneous difficulty (the RL study's data).

Five families, each with a size knob that sets its difficulty: addition ``a+b=`` and
subtraction ``a-b=`` (a >= b) with 1-3 digit operands, multiplication ``a*b=`` with 1-2
digit operands, remainders ``a%b=`` (a up to 3 digits, 2 <= b <= 9), and reversal ``r1234=``
of 2-5 digits (1-9, so that no answer starts with 0). Every problem is generated from the
seed; :func:`split` makes disjoint train/test sets. Problems use the characters of
:data:`TASK_CHARACTERS`, which :func:`task_tokenizer` covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data import Example

TASK_CHARACTERS = list("0123456789+-*%r= \n")
FAMILIES = ("add", "sub", "mul", "mod", "rev")
SIZES = {"add": (1, 2, 3), "sub": (1, 2, 3), "mul": (1, 2), "mod": (1, 2, 3), "rev": (2, 3, 4, 5)}


@dataclass(frozen=True)
class Task(Example):
    family: str = ""
    size: int = 0  # digits per operand (reversal: digits reversed)


def _number(rng: np.random.Generator, digits: int) -> int:
    return int(rng.integers(10 ** (digits - 1) if digits > 1 else 0, 10**digits))


def _problem(family: str, size: int, rng: np.random.Generator) -> tuple[str, str]:
    if family == "rev":
        digits = "".join(str(d) for d in rng.integers(1, 10, size=size))
        return f"r{digits}=", digits[::-1]
    if family == "mod":
        a, b = _number(rng, size), int(rng.integers(2, 10))
        return f"{a}%{b}=", str(a % b)
    a, b = _number(rng, size), _number(rng, size)
    if family == "sub":
        a, b = max(a, b), min(a, b)
        return f"{a}-{b}=", str(a - b)
    op, value = ("+", a + b) if family == "add" else ("*", a * b)
    return f"{a}{op}{b}=", str(value)


def generate_tasks(n: int, rng: np.random.Generator, families=FAMILIES, sizes: dict | None = None) -> list[Task]:
    """``n`` distinct problems, family and size drawn uniformly (size within the family's
    :data:`SIZES`, or within ``sizes[family]`` where given, e.g. ``{"rev": range(8, 17)}``)."""
    unknown = sorted(set(families) - set(FAMILIES))
    if n < 1 or unknown:
        raise ValueError(f"n must be >= 1 and families a subset of {FAMILIES}; got n = {n}, unknown {unknown}")
    sizes = SIZES | {family: tuple(values) for family, values in (sizes or {}).items()}
    bad = {family: values for family, values in sizes.items() if not values or min(values) < 1}
    if bad:
        raise ValueError(f"sizes must be non-empty and >= 1 (digits); got {bad}")
    seen, tasks = set(), []
    for _ in range(100 * n):
        family = str(rng.choice(list(families)))
        size = int(rng.choice(sizes[family]))
        question, answer = _problem(family, size, rng)
        if question not in seen:
            seen.add(question)
            tasks.append(Task(len(tasks), question, answer, family=family, size=size))
            if len(tasks) == n:
                return tasks
    raise ValueError(f"could not draw {n} distinct problems from {families}")


def split(tasks: list[Task], test_fraction: float, rng: np.random.Generator) -> tuple[list[Task], list[Task]]:
    """Disjoint (train, test) sets; prompt ids renumbered within each."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    order = rng.permutation(len(tasks))
    cut = int(round(len(tasks) * (1 - test_fraction)))

    def renumber(ids):
        return [
            Task(i, tasks[j].question, tasks[j].answer, family=tasks[j].family, size=tasks[j].size)
            for i, j in enumerate(ids)
        ]

    return renumber(order[:cut]), renumber(order[cut:])


def task_tokenizer():
    """The character tokenizer of trainer.models over :data:`TASK_CHARACTERS`."""
    from trainer.models import tiny_tokenizer

    return tiny_tokenizer(TASK_CHARACTERS)
