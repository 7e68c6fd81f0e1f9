"""Joining the scenario partitions again: same-second events keep the source file's row order."""

import pandas as pd
import pytest

from models.data.loaders import unify_interactions


def test_ties_follow_the_file_row_order_not_the_partition_order():
    # the file: u1 views x in "search" and then y in "cart" in the same second; u2 has 2 events only
    file = pd.DataFrame({"user_id": ["u1", "u1", "u1", "u2", "u2"], "item_id": ["w", "x", "y", "a", "b"],
                         "timestamp": [5, 10, 10, 7, 8], "scenario": ["cart", "search", "cart", "cart", "cart"],
                         "source_row": [0, 1, 2, 3, 4]})
    partitions = [file[file.scenario == s] for s in ("cart", "search")]  # cart first: the wrong order
    log, dropped = unify_interactions(partitions, min_interactions=3)
    assert log["item_id"].tolist() == ["w", "x", "y"] and dropped == 1
    assert "source_row" not in log.columns


def test_partitions_without_source_rows_fall_back_to_concatenation_order():
    a = pd.DataFrame({"user_id": ["u"], "item_id": ["y"], "timestamp": [1], "scenario": ["b"]})
    b = pd.DataFrame({"user_id": ["u"], "item_id": ["x"], "timestamp": [1], "scenario": ["a"]})
    log, _ = unify_interactions([a, b])
    assert log["item_id"].tolist() == ["y", "x"]
    with pytest.raises(ValueError, match="re-materialize"):
        unify_interactions([a.assign(source_row=0), b])
    with pytest.raises(ValueError, match="no partitions"):
        unify_interactions([])
