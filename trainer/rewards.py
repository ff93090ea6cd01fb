"""Verifiable rewards: plain callables ``(prompts, completions, answers) -> list[float]``.

Built in (each returns 1.0 for a correct completion and 0.0 otherwise; :func:`scaled` maps to
the +-1 convention of VIP §4):

- ``answer_line``: the last ``Answer: ...`` line of the completion (VIP's template, App. C.2),
  compared with the answer by :func:`same_answer`;
- ``boxed``: the last ``\\boxed{...}`` of the completion, compared the same way;
- ``math_verify``: math-verify's parser and equivalence check (LaTeX, fractions, sets, ...) on
  the whole completion;
- ``first_number``: the first number in the completion (the synthetic arithmetic task).

Your own reward is ``reward: package.module:function`` in the config.

:func:`checked_rewards` is how the trainer calls a reward: within ``reward_timeout_s`` seconds
per call (trainer.deadline), one finite number per completion, 0/1 where the allocation learns
from successes; a failure names the completion (and its dataset row) that causes it.
"""

from __future__ import annotations

import importlib
import math
import re

import numpy as np

from theory import checks
from trainer.deadline import Expired, call_with_deadline
from trainer.registry import choose

# Seconds per call of a reward: the trainer calls it once per step, on all the step's completions
# (C = 4,096 at VIP's scale: math-verify takes milliseconds each); a reward that runs code or
# asks a server needs more (``reward_timeout_s`` in the config).
REWARD_TIMEOUT_S = 300.0
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ANSWER_LINE = re.compile(r"^\s*Answer\s*:\s*(.+?)\s*$", re.MULTILINE)


def answer_line(text: str) -> str | None:
    """The content of the last ``Answer:`` line, or None."""
    found = _ANSWER_LINE.findall(text)
    return found[-1] if found else None


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces balanced, or None.

    Written by hand: a regular expression cannot match nested braces, and math-verify's
    extraction is not exposed as a function that returns the box's text.
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def first_number(text: str) -> str | None:
    found = _NUMBER.search(text)
    return found.group(0) if found else None


def _normalise(text: str) -> str:
    return text.strip().strip("$").rstrip(".").replace(" ", "").replace(",", "")


def same_answer(predicted: str | None, answer: str) -> bool:
    """Equal after dropping spaces, thousands commas, $ and a final period; numbers compare by
    value: integers exactly (a float's relative tolerance would accept a 16-digit answer with
    its last digits wrong), other numbers to a relative 1e-9. ``answer`` is text, as
    trainer.data writes every answer (a number there becomes its text)."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be text (str); got {type(answer).__name__} {answer!r:.50}")
    if predicted is not None and not isinstance(predicted, str):
        raise TypeError(f"predicted must be text (str) or None; got {type(predicted).__name__} {predicted!r:.50}")
    if predicted is None:
        return False
    p, a = _normalise(predicted), _normalise(answer)
    if p == a:
        return True
    try:
        return int(p) == int(a)
    except ValueError:
        pass
    try:
        return math.isclose(float(p), float(a), rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return False


def _extracting(extract):
    def reward(prompts, completions, answers) -> list[float]:
        return [float(same_answer(extract(c), a)) for c, a in zip(completions, answers)]

    reward.__name__ = extract.__name__
    return reward


def math_verify_reward(prompts, completions, answers) -> list[float]:
    """math-verify's ``verify(parse(answer), parse(completion))`` (the ``trainer`` extra)."""
    from math_verify import parse, verify

    return [float(verify(parse(a), parse(c))) for c, a in zip(completions, answers)]


EXTRACTORS = {
    "answer_line": answer_line,
    "boxed": boxed,
    "first_number": first_number,
}  # reward name -> its answer extraction
BUILT_IN = {name: _extracting(extract) for name, extract in EXTRACTORS.items()} | {"math_verify": math_verify_reward}


def get_reward(name: str):
    """A built-in reward by name, or ``module:function`` imported."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"reward must be one of {', '.join(BUILT_IN)} or 'module:function'; got {name!r}")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"reward {name!r}: {module} has no callable {attr!r}")
    return fn


# name -> how 0/1 rewards enter the advantages: 0/1 (``binary``) or -1/+1 (``signed``, VIP's propositions)
REWARD_CONVENTIONS = {"binary": lambda v: v, "signed": lambda v: 2.0 * v - 1.0}


def scaled(values, convention: str) -> list[float]:
    """The rewards under ``convention`` (:data:`REWARD_CONVENTIONS`)."""
    scale = choose(REWARD_CONVENTIONS, convention, "reward_convention")
    return [scale(v) for v in checks.as_float_array("values", values).tolist()]


class RewardError(ValueError):
    """The reward function failed, or returned what a reward cannot be; the message names the
    function and the completion."""


class RewardTimeout(RewardError, TimeoutError):
    """The reward function did not return within ``reward_timeout_s``."""


def checked_rewards(
    fn, prompts, completions, answers, *, timeout_s: float = REWARD_TIMEOUT_S, rows=None, binary: bool = False
) -> list[float]:
    """``fn``'s rewards, refused unless ``fn`` returns within ``timeout_s`` seconds one finite
    number per completion, each 0 or 1 when ``binary``. ``rows[i]`` is completion i's dataset row,
    named in the errors with the completion's text."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        values = call_with_deadline(lambda: fn(prompts, completions, answers), timeout_s)
    except Expired:
        limit = f"reward_timeout_s = {timeout_s:g} s"
        calls = f"{len(completions)} completions"
        raise RewardTimeout(f"reward function {name} did not return within {limit} ({calls})") from None
    except Exception as exc:  # a user's callable: say which one failed and on what, keep the cause
        i = _first_failing(fn, prompts, completions, answers, timeout_s)
        where = "(prompts, completions, answers)" if i is None else _completion(i, completions, answers, rows)
        raise RewardError(f"reward function {name} failed on {where}: {type(exc).__name__}: {exc}") from exc
    returned = values
    try:
        values = None if isinstance(returned, (str, bytes)) else list(returned)
    except TypeError:  # not iterable
        values = None
    if values is None:
        raise RewardError(f"reward function {name} must return a list of numbers; got {returned!r:.200}")
    if len(values) != len(completions):
        raise RewardError(f"reward function {name} returned {len(values)} rewards for {len(completions)} completions")
    for i, v in enumerate(values):
        problem = _bad_reward(v, binary)
        if problem:
            where = _completion(i, completions, answers, rows)
            raise RewardError(f"reward function {name} returned {v!r:.50} for {where}: {problem}")
    return [float(v) for v in values]


def _bad_reward(value, binary: bool) -> str | None:
    """Why ``value`` is not an acceptable reward, or None. A bool or a string is refused although
    float() reads it (True as 1, "1" as 1.0): a reward that is text or a comparison's result is
    more often a bug than a score."""
    if isinstance(value, (bool, np.bool_)):
        return "rewards must be numbers, not booleans (return float(correct))"
    if isinstance(value, (str, bytes)):
        return "rewards must be numbers, not text"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "rewards must be numbers"
    if not math.isfinite(number):
        return "rewards must be finite"
    if binary and number not in (0.0, 1.0):
        return "this run learns success rates: rewards must be 0 or 1 (signed maps them to +-1)"
    return None


def _first_failing(fn, prompts, completions, answers, timeout_s: float) -> int | None:
    """The first completion on which ``fn`` alone raises, within ``timeout_s``; None if none does."""

    def search():
        for i in range(len(completions)):
            try:
                fn(prompts[i : i + 1], completions[i : i + 1], answers[i : i + 1])
            except Exception:
                return i
        return None

    try:
        return call_with_deadline(search, timeout_s)
    except Expired:
        return None


def _completion(i: int, completions, answers, rows) -> str:
    """Completion i described for an error: its index, dataset row, answer and text (shortened)."""
    row = "" if rows is None else f" (dataset row {rows[i]})"
    return f"completion {i}{row} with answer {answers[i]!r:.60}: {completions[i]!r:.300}"
