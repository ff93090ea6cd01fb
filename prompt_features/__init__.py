"""Features of prompt texts for the success-rate predictors (theory.predictor).

Two kinds: sentence-transformers embeddings (:mod:`prompt_features.sentence`, VIP §6:
all-MiniLM-L6-v2, d = 384, the ``embed`` extra) and a hashed bag of words
(:mod:`prompt_features.hashed`, numpy only). The simulators embed generated math problems
with the first (simulators.predictor); the trainer's VIP allocation uses either
(trainer.allocation).

Why a package of its own: both users import it, and neither may import the other
(simulators and trainer are independent layers above theory). theory/ cannot hold it: it
is numpy/scipy only, and the sentence-transformers embedding needs an optional dependency.
This package imports nothing else of rlvr-lab.
"""

from __future__ import annotations

import numpy as np

from prompt_features.hashed import HASHED_DIM, hashed_embeddings
from prompt_features.sentence import embed_prompts


def _sentence(texts) -> tuple[np.ndarray, str]:
    return embed_prompts(texts), "sentence_transformers"


def _hashed(texts) -> tuple[np.ndarray, str]:
    return hashed_embeddings(texts), "hashed"


def _auto(texts) -> tuple[np.ndarray, str]:
    try:
        return _sentence(texts)
    except ImportError:
        return _hashed(texts)


# embedding -> texts -> (features, the kind they are): ``sentence_transformers``, the sentence
# embedding (ImportError without the ``embed`` extra); ``hashed``, the hashed bag of words;
# ``auto``, the sentence embedding when its extra is installed, else the hashed bag of words
EMBEDDINGS = {"auto": _auto, "sentence_transformers": _sentence, "hashed": _hashed}

__all__ = ["EMBEDDINGS", "HASHED_DIM", "embed_prompts", "hashed_embeddings", "prompt_features"]


def prompt_features(texts, embedding: str = "auto") -> tuple[np.ndarray, str]:
    """The features of ``texts`` and which kind they are, by :data:`EMBEDDINGS`' ``embedding``."""
    if not isinstance(embedding, str) or embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}; got {embedding!r}")
    return EMBEDDINGS[embedding](texts)
