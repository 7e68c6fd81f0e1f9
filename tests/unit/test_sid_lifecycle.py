import dataclasses

import numpy as np
import pytest

from models.semantic_ids import RQKMeansConfig
from models.semantic_ids.lifecycle import assign_stable, decide_refit, fit_or_reuse

CONFIG = RQKMeansConfig(levels=2, codebook_size=8, max_iter=20, seed=0)


def clustered(n=400, dim=16, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, dim)) * 4
    return (centers[rng.integers(0, 8, n)] + rng.normal(size=(n, dim)) + shift).astype(np.float32)


def test_first_fit_then_reuse_while_fresh(one_thread):
    x = clustered()
    codebook, codes, decision = fit_or_reuse(x, CONFIG, None)
    assert decision.refit and decision.reason == "no previous codebook"
    again, codes_again, decision_again = fit_or_reuse(x, CONFIG, codebook)
    assert not decision_again.refit and again is codebook
    np.testing.assert_array_equal(codes, codes_again)


def test_refit_on_config_change_drift_or_policy(one_thread):
    x = clustered()
    codebook, _, _ = fit_or_reuse(x, CONFIG, None)
    assert decide_refit(codebook, x, dataclasses.replace(CONFIG, codebook_size=4), "auto").reason == "codebook config changed"
    assert decide_refit(codebook, x, CONFIG, "always").refit
    drifted = clustered(seed=5, shift=6.0)  # a different embedding space: error and usage both move
    decision = decide_refit(codebook, drifted, CONFIG, "auto")
    assert decision.refit and decision.reason.startswith("stale")
    assert not decide_refit(codebook, drifted, CONFIG, "never").refit
    with pytest.raises(ValueError, match="never"):
        decide_refit(codebook, x, dataclasses.replace(CONFIG, codebook_size=4), "never")


def test_assign_stable_keeps_existing_items_and_adds_new_ones(one_thread):
    x = clustered(n=300)
    ids = np.array([f"i{k:03d}" for k in range(300)])
    codebook, _, _ = fit_or_reuse(x[:200], CONFIG, None)
    first, n_new = assign_stable(codebook, ids[:200], x[:200], None)
    assert n_new == 200
    # Day two: 100 new items, and one old item left the catalog.
    today_ids = np.concatenate([ids[1:200], ids[200:]])
    today_x = np.concatenate([x[1:200], x[200:]])
    second, n_new = assign_stable(codebook, today_ids, today_x, first)
    assert n_new == 100
    np.testing.assert_array_equal(second.lookup_codes(ids[1:200]), first.lookup_codes(ids[1:200]))
    assert list(second.item_ids) == list(today_ids)
    assert len({tuple(r) for r in second.codes}) == 300 - 1  # still a bijection
