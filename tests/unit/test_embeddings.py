import hashlib

import numpy as np
import pandas as pd
import pytest

from models.embeddings.behaviour import behaviour_embeddings, cooccurrence_matrix
from models.embeddings.catalog import FusionConfig, build_catalog_embeddings, fuse, item_texts
from models.embeddings.text import EmbeddingCache, MiniLMEncoder, embed_texts


class HashEncoder:
    """Deterministic stand-in for the sentence model that counts what it is asked to embed."""

    name = "hash-encoder"
    dim = 16

    def __init__(self):
        self.calls: list[str] = []

    def encode(self, texts, batch_size=128):
        self.calls.extend(texts)
        out = np.array(
            [np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.dim], dtype=np.uint8) for t in texts],
            dtype=np.float32,
        ).reshape(len(texts), self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-6)


def _items(n=6):
    return pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "title": [f"item number {k}" for k in range(n)],
            "category": ["A" if k % 2 else "B" for k in range(n)],
            "brand": ["acme"] * n,
            "description": [""] * n,
        }
    )


def _log():
    # Two users; items 0-1-2 co-occur for user a, 3-4 for user b; item 5 is never seen.
    return pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "item_id": ["i0", "i1", "i2", "i3", "i4"],
            "timestamp": [1, 2, 3, 1, 2],
        }
    )


def test_cache_skips_unchanged_items(tmp_path):
    encoder = HashEncoder()
    cache = EmbeddingCache(tmp_path / "cache.npz", dim=encoder.dim)
    first = embed_texts(["a", "b", "c"], encoder, cache)
    cache.save()
    assert (first.n_embedded, first.n_cached) == (3, 0)

    reloaded = EmbeddingCache(tmp_path / "cache.npz", dim=encoder.dim)
    encoder.calls.clear()
    second = embed_texts(["a", "b", "changed", "a"], encoder, reloaded)
    assert encoder.calls == ["changed"]  # only the edited text goes through the model
    assert (second.n_embedded, second.n_cached) == (1, 3)
    np.testing.assert_array_equal(second.vectors[0], first.vectors[0])
    np.testing.assert_array_equal(second.vectors[3], first.vectors[0])


def test_duplicate_texts_embedded_once():
    encoder = HashEncoder()
    run = embed_texts(["x", "x", "y"], encoder)
    assert sorted(encoder.calls) == ["x", "y"]
    np.testing.assert_array_equal(run.vectors[0], run.vectors[1])


def test_corrupt_cache_names_the_file(tmp_path):
    path = tmp_path / "cache.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cache.npz"):
        EmbeddingCache(path, dim=4)


def test_item_texts_skip_missing_fields():
    texts = item_texts(_items(2))
    assert texts[0] == "item number 0. B. acme"


def test_cooccurrence_respects_users_and_window():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([0, 1, 2, 3, 4])
    counts = cooccurrence_matrix(users, items, n_items=6, window=1).toarray()
    assert counts[0, 1] == counts[1, 0] == 1.0
    assert counts[0, 2] == 0  # outside the window
    assert counts[2, 3] == 0  # different users never co-occur
    wide = cooccurrence_matrix(users, items, n_items=6, window=2).toarray()
    assert wide[0, 2] == 0.5  # weighted 1/distance


def test_behaviour_embeddings_group_cooccurring_items():
    vectors, has = behaviour_embeddings(np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 4]), 6, dim=3, window=2)
    assert has.tolist() == [True, True, True, True, True, False]
    assert np.allclose(vectors[5], 0)
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 3] and sim[3, 4] > sim[1, 4]


def test_fusion_methods_and_determinism():
    items, log = _items(), _log()
    for method in ("concat", "text_only", "pca_concat"):
        config = FusionConfig(fusion=method, behaviour_dim=3, behaviour_window=2, fused_dim=4)
        a = build_catalog_embeddings(items, log, HashEncoder(), config)
        b = build_catalog_embeddings(items, log, HashEncoder(), config)
        np.testing.assert_array_equal(a.fused, b.fused)
        assert np.allclose(np.linalg.norm(a.fused, axis=1), 1.0, atol=1e-5)
    concat = build_catalog_embeddings(items, log, HashEncoder(), FusionConfig(behaviour_dim=3, behaviour_window=2))
    assert concat.fused.shape == (6, 16 + 3)
    assert concat.has_behaviour.tolist() == [True] * 5 + [False]


def test_fuse_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse(np.ones((2, 2)), np.ones((2, 2)), FusionConfig(fusion="bogus"))  # type: ignore[arg-type]


def test_empty_catalog_and_missing_columns_are_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        build_catalog_embeddings(_items(0), _log(), HashEncoder())
    with pytest.raises(ValueError, match="title"):
        build_catalog_embeddings(_items().drop(columns=["title"]), _log(), HashEncoder())


def test_real_minilm_is_offline_and_semantic():
    encoder = MiniLMEncoder()
    vectors = encoder.encode(["trail running shoes", "running sneakers for jogging", "baby stroller"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
