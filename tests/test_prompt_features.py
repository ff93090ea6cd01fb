"""prompt_features: the hashed bag of words, and the choice between it and sentence embeddings."""

import sys

import numpy as np
import pytest

from prompt_features import hashed_embeddings, prompt_features


def test_hashed_embeddings_are_unit_and_stable():
    x = hashed_embeddings(["What is 2 + 3?", "What is 2 + 3?", ""])
    np.testing.assert_allclose(np.linalg.norm(x[:2], axis=1), 1.0)
    np.testing.assert_array_equal(x[0], x[1])
    assert not x[2].any()


def test_auto_falls_back_to_hashed_words_without_the_embed_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if the extra were not installed
    texts = ["What is 2 + 3?", "Reverse 1234."]
    features, kind = prompt_features(texts, "auto")
    assert kind == "hashed"
    np.testing.assert_array_equal(features, hashed_embeddings(texts))
    with pytest.raises(ImportError, match=r'embed_prompts needs the embed extra: pip install -e "\.\[embed\]"'):
        prompt_features(texts, "sentence_transformers")  # asked for by name: no silent fallback


def test_an_unknown_embedding_is_refused():
    with pytest.raises(ValueError, match="embedding must be one of auto, sentence_transformers, hashed; got 'bert'"):
        prompt_features(["a"], "bert")
