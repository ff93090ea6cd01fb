"""Success-probability laws of a batch of prompts, shared by the allocation studies."""

from __future__ import annotations

import numpy as np

P_DISTRIBUTIONS = {  # Beta(alpha, beta)
    "uniform": (1.0, 1.0),
    "U-shaped": (0.3, 0.3),
    "easy": (5.0, 1.0),
    "hard": (1.0, 5.0),
}


def draw_p(rng: np.random.Generator, law: str, b: int) -> np.ndarray:
    """b success probabilities from the named law of :data:`P_DISTRIBUTIONS`."""
    return rng.beta(*P_DISTRIBUTIONS[law], size=b)
