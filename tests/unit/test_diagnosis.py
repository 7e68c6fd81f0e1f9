import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models.eval.diagnosis import (
    beam_recall,
    bucket_table,
    bucketize,
    curve_summary,
    in_history,
    is_repeat,
    rank_metrics,
    search_loss,
    sid_usage,
)
from models.eval.metrics import per_case_metrics, target_ranks


def test_rank_metrics_match_per_case_metrics():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(200)])
    targets = rng.integers(0, 50, 200)
    ranks = target_ranks(ranked, targets)
    got = rank_metrics(ranks, ks=(5, 10))
    ref = per_case_metrics(ranked, targets, (5, 10))
    for k in (5, 10):
        assert got[f"hr@{k}"] == pytest.approx(ref[f"hr@{k}"].mean())
        assert got[f"ndcg@{k}"] == pytest.approx(ref[f"ndcg@{k}"].mean())
    assert got["n"] == 200


def test_bucketize_labels_and_open_last_bucket():
    labels = bucketize([0, 1, 4, 5, 9, 10, 250], (0, 1, 5, 10, 200))
    assert labels.tolist() == ["0", "1-4", "1-4", "5-9", "5-9", "10-199", "200+"]
    with pytest.raises(ValueError, match="increasing"):
        bucketize([1], (0, 0, 3))
    with pytest.raises(ValueError, match=">= edges"):
        bucketize([-1], (0, 5))


def test_bucket_table_splits_examples_and_keeps_models_aligned():
    ranks = {"a": np.array([0, 20, 3, np.inf]), "b": np.array([np.inf, 1, np.inf, 2])}
    table = bucket_table(ranks, np.array(["x", "x", "y", "y"]), ks=(10,), order=["y", "x"])
    assert table["bucket"].tolist() == ["y", "y", "x", "x", "all", "all"]
    row = table[(table.bucket == "x") & (table.model == "a")].iloc[0]
    assert row["n"] == 2 and row["hr@10"] == 0.5 and row["ndcg@10"] == pytest.approx(0.5)
    row = table[(table.bucket == "y") & (table.model == "b")].iloc[0]
    assert row["hr@10"] == 0.5 and row["ndcg@10"] == pytest.approx(0.5 / np.log2(4))
    with pytest.raises(ValueError, match="one rank per example"):
        bucket_table({"a": np.zeros(3)}, ["x"] * 4)


@pytest.mark.parametrize("as_arrow", [False, True])
def test_is_repeat(as_arrow):
    hist = [["1", "2"], None, [], ["7", "3", "9"]]
    targets = ["2", "5", "1", "9"]
    col = pa.array(hist, type=pa.list_(pa.string())) if as_arrow else pd.Series(hist, dtype=object)
    assert is_repeat(col, targets).tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="rows"):
        is_repeat(col, targets[:2])


def test_beam_recall_and_search_loss():
    targets = np.array([3, 4, -1])
    lists = {2: np.array([[3, 1], [0, 1], [-1, -1]]), 4: np.array([[3, 1, 2, 0], [0, 1, 2, 4], [-1, 0, 1, 2]])}
    assert beam_recall(lists, targets) == {2: pytest.approx(1 / 3), 4: pytest.approx(2 / 3)}
    out = search_loss(np.array([0, 5, 20]), np.array([0, 12, 3]), k=10)
    assert out["exact_hr@10"] == pytest.approx(2 / 3) and out["beam_hr@10"] == pytest.approx(2 / 3)
    assert out["lost"] == pytest.approx(1 / 3) and out["gained"] == pytest.approx(1 / 3)


def test_sid_usage_branching_and_collisions():
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 0]])  # 2 RQ levels + disambiguation
    out = sid_usage(codes, (2, 3, 2), weights=np.array([10, 0, 5, 5]))
    assert [lv["children_mean"] for lv in out["levels"]] == [2.0, 1.5, pytest.approx(4 / 3)]
    assert [lv["unique_share"] for lv in out["levels"]] == [0.25, 0.5, 1.0]
    assert out["items_with_colliding_tuple"] == 0.5
    assert out["interactions_on_colliding_tuple"] == pytest.approx(0.5)
    assert out["rq"]["collision_max"] == 2 and out["rq"]["n_unique_ids"] == 3


def test_curve_summary():
    assert curve_summary([0.1, 0.2, 0.3])["still_rising"]
    out = curve_summary([0.1, 0.4, 0.3, 0.2, 0.2], window=2)
    assert out["best_index"] == 1 and not out["still_rising"] and out["last"] == 0.2
    assert curve_summary([None, None]) == {"points": 0}


def test_in_history_marks_seen_recommendations():
    hist = pd.Series([["a", "b"], None, ["c"]], dtype=object)
    got = in_history(np.array([["b", "x"], ["a", "b"], ["c", "c"]]), hist)
    assert got.tolist() == [[True, False], [False, False], [True, True]]
    with pytest.raises(ValueError, match="rows"):
        in_history(np.array([["a"]]), hist)


def test_full_histories_are_uncapped_and_only_the_past():
    import pandas as pd

    from models.eval.diagnosis import full_histories

    frame = pd.DataFrame({
        "user_id": ["u", "u", "u", "v", "v"],
        "position": [3, 1, 2, 1, 2],
        "item_id": ["c", "a", "b", "x", "y"],
        "long_item_ids": [["a", "b"], ["z"], ["a"], ["w"], ["x"]],  # capped lists: rebuilt, not read, after the first
    })
    out = full_histories(frame)
    assert [list(h) for h in out] == [["z", "a", "b"], ["z"], ["z", "a"], ["w"], ["w", "x"]]
    assert [list(h) for h in full_histories(frame, np.array([0]))] == [["z", "a", "b"]]
