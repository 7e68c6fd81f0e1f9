"""Ranking metrics against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.eval.metrics import per_group_metrics, ranking_metrics, target_ranks, top_k

# targets at 0-based ranks 0, 2, 7 and absent
RANKED = np.array(
    [
        [5, 1, 2, 3, 4, 6, 7, 8, 9, 10],
        [1, 2, 5, 3, 4, 6, 7, 8, 9, 10],
        [1, 2, 3, 4, 6, 7, 8, 5, 9, 10],
        [1, 2, 3, 4, 6, 7, 8, 9, 10, 11],
    ]
)
TARGETS = np.array([5, 5, 5, 5])


def test_target_ranks():
    np.testing.assert_array_equal(target_ranks(RANKED, TARGETS), [0, 2, 7, np.inf])


def test_ranking_metrics_hand_computed():
    m = ranking_metrics(RANKED, TARGETS, ks=(1, 5, 10))
    assert m["hr@1"] == pytest.approx(1 / 4)
    assert m["hr@5"] == pytest.approx(2 / 4)
    assert m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # ranks 0 and 2 -> 1 + 0.5
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(9)) / 4)
    assert set(m) == {"hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10"}


def test_ranking_metrics_accepts_tensors_and_counts_first_occurrence():
    ranked = torch.tensor([[3, 7, 7], [9, 8, 7]])
    targets = torch.tensor([7, 7])
    m = ranking_metrics(ranked, targets, ks=(2, 3))
    assert m["hr@2"] == pytest.approx(0.5)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)


def test_ranking_metrics_bad_input():
    with pytest.raises(ValueError, match="length 10 but metrics@20"):
        ranking_metrics(RANKED, TARGETS, ks=(20,))
    with pytest.raises(ValueError, match="targets must be 1-D"):
        ranking_metrics(RANKED, TARGETS[:3])
    with pytest.raises(ValueError, match="2-D"):
        ranking_metrics(RANKED[0], TARGETS)


def test_per_group_metrics():
    groups = np.array(["a", "b", "a", "b"])
    table = per_group_metrics(RANKED, TARGETS, groups, ks=(1, 10))
    assert list(table["group"]) == ["a", "b", "overall"]
    assert list(table["n"]) == [2, 2, 4]
    row = table.set_index("group")
    assert row.loc["a", "hr@10"] == pytest.approx(1.0)  # ranks 0 and 7
    assert row.loc["b", "hr@10"] == pytest.approx(0.5)  # rank 2, absent
    assert row.loc["a", "ndcg@10"] == pytest.approx((1 + 1 / math.log2(9)) / 2)
    assert row.loc["b", "hr@1"] == 0.0
    overall = ranking_metrics(RANKED, TARGETS, ks=(1, 10))
    for name, value in overall.items():
        assert row.loc["overall", name] == pytest.approx(value)
    assert isinstance(table, pd.DataFrame)


def test_top_k_excludes_padding_and_seen():
    scores = torch.tensor([[9.0, 1.0, 5.0, 3.0, 4.0], [9.0, 4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(top_k(scores, 2), [[2, 4], [1, 2]])  # index 0 (padding) never ranked
    exclude = torch.tensor([[2, 0], [1, 3]])
    np.testing.assert_array_equal(top_k(scores, 2, exclude=exclude), [[4, 3], [2, 4]])
    with pytest.raises(ValueError, match="k must be"):
        top_k(scores, 5)
