"""The paired-bootstrap gate against hand-computed cases and a naive bootstrap loop."""

import numpy as np
import pytest

from models.eval.significance import paired_bootstrap, paired_gate


def test_matches_a_naive_bootstrap_loop():
    rng = np.random.default_rng(1)
    c, r = rng.random(50), rng.random(50)
    got = paired_bootstrap(c, r, resamples=200, confidence=0.9, seed=7)
    draw = np.random.default_rng(7)
    means = [np.mean((c - r)[draw.integers(0, 50, size=50)]) for _ in range(200)]
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    assert got.difference == pytest.approx((c - r).mean()) and got.n == 50
    assert paired_bootstrap(c, r, resamples=200, confidence=0.9, seed=7) == got  # seeded: reproducible


def test_constant_difference_has_a_degenerate_interval():
    got = paired_bootstrap(np.full(10, 0.3), np.full(10, 0.25))
    assert got.low == pytest.approx(0.05) and got.high == pytest.approx(0.05) and got.ratio == pytest.approx(1.2)


def test_gate_refuses_a_worse_model_and_passes_an_equal_or_better_one():
    rng = np.random.default_rng(0)
    ref_hit = (rng.random(2000) < 0.3).astype(float)
    worse = ref_hit * (rng.random(2000) < 0.8)  # loses 20% of the reference's hits
    better = np.maximum(ref_hit, (rng.random(2000) < 0.1))  # adds hits
    ref = {"hr@10": ref_hit, "ndcg@10": ref_hit * 0.5}
    assert not paired_gate({"hr@10": worse, "ndcg@10": worse * 0.5}, ref).passed
    assert paired_gate({"hr@10": better, "ndcg@10": better * 0.5}, ref).passed
    same = paired_gate(ref, ref)
    assert same.passed and all(c.low == 0 == c.high for c in same.comparisons)
    # a margin tolerates a bounded loss: 20% of 0.3 is ~0.06 below, refused at margin .01, passed at .2
    assert not paired_gate({"hr@10": worse}, ref, metrics=("hr@10",), margin=0.01).passed
    assert paired_gate({"hr@10": worse}, ref, metrics=("hr@10",), margin=0.2).passed
    text = paired_gate(ref, ref).describe("generator", "sasrec")
    assert "generator vs sasrec passes" in text and "hr@10" in text


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no examples"):
        paired_bootstrap(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.array([np.nan]), np.zeros(1))
    with pytest.raises(ValueError, match="missing for metric"):
        paired_gate({"hr@10": np.zeros(2)}, {"hr@10": np.zeros(2)}, metrics=("ndcg@10",))
    with pytest.raises(ValueError, match="margin"):
        paired_gate({"hr@10": np.zeros(2)}, {"hr@10": np.zeros(2)}, metrics=("hr@10",), margin=-1)


def test_paired_bootstrap_detects_a_shift_and_keeps_pairs():
    rng = np.random.default_rng(1)
    base = rng.random(500)
    out = paired_bootstrap(base + 0.1, base, resamples=300)
    assert out.low == pytest.approx(0.1) and out.high == pytest.approx(0.1)  # paired: no variance at all
    out = paired_bootstrap(rng.random(500), rng.random(500), resamples=300)
    assert out.low < out.difference < out.high
    with pytest.raises(ValueError, match="1-D and aligned"):
        paired_bootstrap([1, 2], [1])
