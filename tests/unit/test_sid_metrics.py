"""Semantic-ID quality metrics against hand-computed values (models/semantic_ids/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.semantic_ids import RQKMeansConfig, fit_encode, gini, normalized_entropy, semantic_id_quality
from models.semantic_ids.metrics import compare_variants

# 6 items, 2 levels, K = 4. Full tuples: (0,0) x3, (0,1), (1,2), (3,2).
CODES = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [1, 2], [3, 2]])
CATS = np.array(["a", "a", "b", "b", "b", "b"])


def test_hand_computed_tiny_example():
    m, table = semantic_id_quality(CODES, CATS, 4)
    # Coverage: level 1 uses {0,1,3}, level 2 uses {0,1,2}; 4 of 16 level-2 prefixes.
    assert m["l1_coverage"] == 0.75 and m["l2_coverage"] == 0.75
    assert m["l1_unique_prefixes"] == 3 and m["l1_prefix_coverage"] == 0.75
    assert m["l2_unique_prefixes"] == 4 and m["l2_prefix_coverage"] == 0.25
    # Purity l1: groups {a,a,b,b}->2, {b}->1, {b}->1 = 4/6; l2: {a,a,b}->2, then three singletons = 5/6.
    assert m["l1_purity"] == pytest.approx(4 / 6)
    assert m["l2_purity"] == pytest.approx(5 / 6)
    # Usage l1 = [4,1,0,1]: entropy of (2/3, 1/6, 1/6) over log 4; Gini of sorted [0,1,1,4]
    # = (-3*0 - 1*1 + 1*1 + 3*4) / (4*6) = 0.5.
    h = -(2 / 3 * np.log(2 / 3) + 2 * (1 / 6) * np.log(1 / 6)) / np.log(4)
    assert m["l1_entropy"] == pytest.approx(h)
    assert m["l1_gini"] == pytest.approx(0.5)
    # Usage l2 = [3,1,2,0]: sorted [0,1,2,3] -> (0 - 1 + 2 + 9) / 24.
    assert m["l2_gini"] == pytest.approx(10 / 24)
    # Collisions: tuple sizes [3,1,1,1]; numpy linear percentile: 1 + 0.97*2, 1 + 0.997*2.
    assert m["collision_max"] == 3
    assert m["collision_p99"] == pytest.approx(2.94)
    assert m["collision_p999"] == pytest.approx(2.994)
    assert m["collision_mean"] == pytest.approx(1.5)
    assert m["collision_share"] == pytest.approx(0.5)
    assert m["n_unique_ids"] == 4
    assert list(table["level"]) == [1, 2]
    assert table.loc[0, "purity"] == pytest.approx(4 / 6) and np.isnan(table.loc[0, "recon_rel_mse"])


def test_per_level_codebook_sizes_and_missing_categories():
    m, _ = semantic_id_quality(CODES, None, [4, 8])
    assert m["l2_coverage"] == 3 / 8 and m["l2_prefix_coverage"] == 4 / 32
    assert np.isnan(m["l1_purity"])
    # Labels are matched by equality only, so purity ignores how categories are encoded.
    m_int, _ = semantic_id_quality(CODES, np.array([7, 7, 3, 3, 3, 3]), 4)
    assert m_int["l1_purity"] == pytest.approx(4 / 6)


def test_entropy_and_gini_extremes():
    assert normalized_entropy(np.array([5, 5, 5, 5])) == pytest.approx(1.0)
    assert normalized_entropy(np.array([9, 0, 0, 0])) == 0.0
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 9])) == pytest.approx(3 / 4)  # (K-1)/K


def test_degenerate_codes_give_tiny_coverage_and_huge_collisions():
    codes = np.zeros((1000, 3), dtype=np.int64)
    m, _ = semantic_id_quality(codes, np.zeros(1000), 256)
    assert m["l1_coverage"] == pytest.approx(1 / 256)
    assert m["collision_max"] == 1000 and m["collision_p99"] == 1000.0
    assert m["l3_gini"] == pytest.approx(255 / 256) and m["l1_purity"] == 1.0


def test_reconstruction_error_matches_codebook():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400, 6)) + rng.integers(0, 4, (400, 1)) * 5).astype(np.float32)
    cb, codes = fit_encode(x, RQKMeansConfig(levels=2, codebook_size=4, max_iter=10))
    m, table = semantic_id_quality(codes, None, 4, embeddings=x, codebook=cb)
    total_var = ((x - x.mean(0)) ** 2).sum(1).mean()
    expect = cb.reconstruction_error_per_level(x) / total_var
    np.testing.assert_allclose(table["recon_rel_mse"].to_numpy(), expect, rtol=1e-4)
    assert m["l1_recon_rel_mse"] > m["l2_recon_rel_mse"]
    assert m["l1_recon_rel_mse"] < 0.2  # the 4 offsets explain most of the variance


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        semantic_id_quality(np.zeros(5, dtype=int), None, 4)
    with pytest.raises(ValueError, match=r"level 1 has values in \[4, 4\], outside \[0, 4\)"):
        semantic_id_quality(np.array([[4, 0]]), None, 4)
    with pytest.raises(ValueError, match="categories must have shape"):
        semantic_id_quality(CODES, CATS[:3], 4)
    with pytest.raises(ValueError, match="integer"):
        semantic_id_quality(CODES.astype(float), None, 4)


def test_compare_variants_fits_every_source_and_assignment():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 8))
    labels = np.repeat(np.arange(4), 50)
    clustered = (centers[labels] + 0.05 * rng.standard_normal((200, 8))).astype(np.float32)
    noise = rng.standard_normal((200, 8)).astype(np.float32)
    lines = []
    frame = compare_variants({"clustered": clustered, "noise": noise}, labels,
                             RQKMeansConfig(levels=2, codebook_size=4, max_iter=20, seed=0), log=lines.append)
    assert list(zip(frame["embeddings"], frame["assignment"])) == [
        ("clustered", "plain"), ("clustered", "balanced"), ("noise", "plain"), ("noise", "balanced")]
    assert len(lines) == 4
    by = frame.set_index(["embeddings", "assignment"])["l1_purity"]
    assert by["clustered", "plain"] > by["noise", "plain"]  # the level-1 codes follow the clusters
