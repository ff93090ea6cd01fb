"""A hashed bag of words: features of prompt texts that need nothing beyond numpy.

Each lower-cased word or symbol adds +-1 to one of ``dim`` coordinates chosen by CRC-32 of
the token; rows are scaled to unit length. Hand-written because it is eight lines and
scikit-learn's HashingVectorizer is not a dependency; CRC-32 because Python's hash() changes
between processes, and the features must not.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

HASHED_DIM = 256
_TOKENS = re.compile(r"\w+|[^\w\s]")


def hashed_embeddings(texts, dim: int = HASHED_DIM) -> np.ndarray:
    """(len(texts), dim) signed hashed bag-of-words features, rows of unit length (or zero)."""
    out = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        for token in _TOKENS.findall(text.lower()):
            h = zlib.crc32(token.encode())
            out[i, h % dim] += 1.0 if (h >> 16) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
