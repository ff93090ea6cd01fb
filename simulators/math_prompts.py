"""Generated math-problem texts with a known difficulty, for the predictor world on real
sentence embeddings (simulators.predictor with the ``embed`` extra).

Each template is a kind of problem with a base difficulty (logit of success); bigger
numbers make a problem harder. Similar problems get similar texts, so a sentence encoder
places them near each other: the difficulty is smooth in embedding space, as VIP's GP
assumes, without being a function we chose in that space.
"""

from __future__ import annotations

import numpy as np

# (template, base logit of success, how the numbers are drawn: digits per slot)
TEMPLATES = (
    ("What is {a} + {b}?", 3.0),
    ("What is {a} times {b}?", 1.5),
    ("Solve for x: {a}x + {b} = {c}.", 0.5),
    ("What is the remainder when {a} is divided by {b}?", 0.5),
    ("How many positive divisors does {a} have?", -0.5),
    ("Find the derivative of x^{k} + {a}x evaluated at x = {b}.", -1.0),
    ("What is the sum of the first {a} positive integers?", 0.0),
    ("Find the remainder when {a}^{k} is divided by {b}.", -2.0),
)


def generate_math_prompts(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` problem texts, their logit of success and their template index.

    Difficulty: the template's base logit minus 0.6 per digit of the largest number.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    kinds = rng.integers(0, len(TEMPLATES), size=n)
    texts, logits = [], np.empty(n)
    for i, kind in enumerate(kinds):
        template, base = TEMPLATES[kind]
        digits = int(rng.integers(1, 6))
        values = {key: int(rng.integers(2, 10**digits)) for key in ("a", "b", "c")}
        values["k"] = int(rng.integers(2, 4 + digits))
        texts.append(template.format(**values))
        logits[i] = base - 0.6 * digits
    return texts, logits, kinds
