"""Leave-last-out split and id encoding."""

import numpy as np
import pandas as pd
import pytest

from models.eval.split import encode_ids, leave_last_out


def _frame():
    # user "u1": 4 interactions, two share the last timestamp (row order decides: "d" is last);
    # user "u2": 3 interactions out of order; user "u3": 2 interactions (too short -> train only)
    rows = [
        ("u1", "a", 1, "s1"),
        ("u2", "z", 30, "s2"),
        ("u1", "c", 5, "s1"),
        ("u3", "a", 1, "s1"),
        ("u1", "b", 2, "s2"),
        ("u2", "x", 10, "s1"),
        ("u1", "d", 5, "s2"),
        ("u3", "b", 2, "s1"),
        ("u2", "y", 20, "s1"),
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "scenario"])


def test_leave_last_out_assigns_last_and_second_last():
    sp = leave_last_out(_frame())
    test = sp.test.set_index("user_id")["item_id"].to_dict()
    valid = sp.valid.set_index("user_id")["item_id"].to_dict()
    assert test == {"u1": "d", "u2": "z"}  # tie at t=5: "d" comes after "c" in row order
    assert valid == {"u1": "c", "u2": "y"}
    assert list(sp.sequences["u1"]) == ["a", "b"]
    assert list(sp.sequences["u2"]) == ["x"]
    assert list(sp.sequences["u3"]) == ["a", "b"]  # short user: everything in train
    assert len(sp.train) + len(sp.valid) + len(sp.test) == len(_frame())
    # every original row lands in exactly one part (the input index is kept)
    parts = np.concatenate([sp.train.index, sp.valid.index, sp.test.index])
    assert sorted(parts) == list(range(len(_frame())))


def test_tie_order_follows_rows_not_item_ids():
    df = pd.DataFrame(
        {"user_id": ["u"] * 4, "item_id": ["b", "a", "d", "c"], "timestamp": [1, 1, 1, 1], "scenario": "s"}
    )
    sp = leave_last_out(df)
    assert sp.test["item_id"].tolist() == ["c"]
    assert sp.valid["item_id"].tolist() == ["d"]
    assert list(sp.sequences["u"]) == ["b", "a"]


def test_eval_cases_histories():
    sp = leave_last_out(_frame())
    v = sp.eval_cases("valid")
    t = sp.eval_cases("test")
    assert list(v.users) == ["u1", "u2"] and list(t.users) == ["u1", "u2"]
    assert [list(h) for h in v.histories] == [["a", "b"], ["x"]]
    assert [list(h) for h in t.histories] == [["a", "b", "c"], ["x", "y"]]  # test history includes valid item
    assert list(t.targets) == ["d", "z"]
    assert list(t.scenarios) == ["s2", "s2"]
    assert list(v.scenarios) == ["s1", "s1"]
    with pytest.raises(ValueError, match="stage"):
        sp.eval_cases("train")


def test_scenario_sequences_follow_the_items():
    sp = leave_last_out(_frame())
    assert list(sp.scenario_sequences["u1"]) == ["s1", "s2"]  # items a, b
    assert list(sp.scenario_sequences["u3"]) == ["s1", "s1"]
    v, t = sp.eval_cases("valid"), sp.eval_cases("test")
    assert [list(h) for h in v.history_scenarios] == [["s1", "s2"], ["s1"]]
    # the test history ends with the validation event, so do its scenarios (u1's "c" happened in s1)
    assert [list(h) for h in t.history_scenarios] == [["s1", "s2", "s1"], ["s1", "s1"]]
    no_scenario = leave_last_out(_frame().drop(columns="scenario"))
    assert no_scenario.scenario_sequences is None and no_scenario.eval_cases("test").history_scenarios is None


def test_split_bad_input():
    with pytest.raises(ValueError, match="missing column"):
        leave_last_out(_frame().drop(columns="timestamp"))
    with pytest.raises(ValueError, match="empty"):
        leave_last_out(_frame().iloc[:0])
    with pytest.raises(ValueError, match="min_interactions"):
        leave_last_out(_frame(), min_interactions=2)


def test_encode_ids_roundtrip_and_padding():
    enc = encode_ids(["b", "a", "c", "a"])
    assert enc.n_ids == 3 and enc.vocab_size == 4
    np.testing.assert_array_equal(enc.encode(["a", "b", "c"]), [1, 2, 3])  # 0 reserved for padding
    np.testing.assert_array_equal(enc.decode([3, 1]), ["c", "a"])
    np.testing.assert_array_equal(enc.encode(np.array([["c", "zz"]]), unknown="pad"), [[3, 0]])
    with pytest.raises(ValueError, match="not in the encoder"):
        enc.encode(["zz"])
    with pytest.raises(ValueError, match="indices must be in"):
        enc.decode([0])
    no_pad = encode_ids(["b", "a"], padding=False)
    np.testing.assert_array_equal(no_pad.encode(["a", "b"]), [0, 1])
    # deterministic: same id set in another order gives the same mapping
    np.testing.assert_array_equal(encode_ids(["c", "a", "b"]).ids, enc.ids)
