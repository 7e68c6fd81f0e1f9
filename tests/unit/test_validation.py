"""Great Expectations gates: clean data passes, each corruption fails exactly the expectation it should."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.data.amazon import convert_amazon
from models.data.loaders import load_dataset
from models.data.validation import (
    ExpectationResult,
    ValidationReport,
    _batch_definition,
    validate_interactions,
    validate_items,
)

SCENARIOS = ["homepage", "search"]
T = 1_700_000_000  # 2023-11-14


def clean_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "title": ["Mug", "Pen", "Lamp", "Desk"],
            "category": ["Kitchen", "Office", "Home", "Office"],
            "brand": ["", "Acme", "", ""],
            "price": [9.5, np.nan, 30.0, 120.0],  # a null price is allowed
            "description": ["", "", "", ""],
        }
    )


def clean_log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1"] * 3 + ["u2"] * 4,
            "item_id": ["i1", "i2", "i3", "i1", "i4", "i4", "i2"],
            "timestamp": np.arange(7, dtype=np.int64) * 60 + T,
            "scenario": ["homepage", "search", "homepage", "search", "search", "homepage", "homepage"],
            "action": ["view", "click", "cart", "order", "click", "click", "view"],
            "query": ["", "pen", "", "", "", "", ""],
        }
    )


def check_logs(log: pd.DataFrame) -> ValidationReport:
    return validate_interactions(log, clean_items()["item_id"], SCENARIOS, min_interactions_per_user=3)


def test_clean_frames_pass():
    items = validate_items(clean_items())
    log = check_logs(clean_log())
    assert items.success and log.success, items.summary() + log.summary()
    assert items.failures() == [] and log.row_count == 7 and items.row_count == 4
    names = {(r.expectation, r.column) for r in log.results}
    assert {
        ("expect_column_values_to_be_in_set", "item_id"),
        ("expect_column_values_to_be_in_set", "scenario"),
        ("expect_column_values_to_be_in_set", "action"),
        ("expect_column_values_to_be_between", "timestamp"),
        ("expect_interactions_per_user_to_be_at_least", "user_id"),
    } <= names
    assert "all 15 expectations passed" in log.summary()


def corrupt(frame: pd.DataFrame, **cells) -> pd.DataFrame:
    frame = frame.copy()
    for key, value in cells.items():
        column, row = key.rsplit("_", 1)
        frame.loc[int(row), column] = value
    return frame


@pytest.mark.parametrize(
    "items, expectation, column, count, example",
    [
        (corrupt(clean_items(), item_id_1="i1"), "expect_column_values_to_be_unique", "item_id", 2, "i1"),
        (corrupt(clean_items(), title_2=None), "expect_column_values_to_not_be_null", "title", 1, None),
        (corrupt(clean_items(), category_0=np.nan), "expect_column_values_to_not_be_null", "category", 1, None),
        (corrupt(clean_items(), item_id_3=None), "expect_column_values_to_not_be_null", "item_id", 1, None),
        (corrupt(clean_items(), price_0=-1.0), "expect_column_values_to_be_between", "price", 1, -1.0),
        (corrupt(clean_items(), price_2=0.0), "expect_column_values_to_be_between", "price", 1, 0.0),
        (clean_items().drop(columns="title"), "expect_column_to_exist", "title", 4, None),
        (clean_items().iloc[:0], "expect_table_row_count_to_be_between", None, 0, None),
    ],
    ids=["duplicate-id", "null-title", "null-category", "null-id", "negative-price", "zero-price", "no-title", "empty"],
)
def test_item_corruptions_fail_exactly_one_expectation(items, expectation, column, count, example):
    report = validate_items(items)
    failures = report.failures()
    assert not report.success and len(failures) == 1, report.summary()
    failure = failures[0]
    assert (failure.expectation, failure.column, failure.unexpected_count) == (expectation, column, count)
    if example is not None:
        assert failure.examples == [example]
    where = f"items.{column}" if column else "items:"
    assert where in report.summary() and expectation in report.summary()


def with_lonely_user(log: pd.DataFrame) -> pd.DataFrame:
    extra = pd.DataFrame(
        {"user_id": ["u9"], "item_id": ["i1"], "timestamp": [T], "scenario": ["search"], "action": ["view"],
         "query": [""]}
    )
    return pd.concat([log, extra], ignore_index=True)


@pytest.mark.parametrize(
    "log, expectation, column, count, example",
    [
        (corrupt(clean_log(), item_id_2="i404"), "expect_column_values_to_be_in_set", "item_id", 1, "i404"),
        (corrupt(clean_log(), scenario_4="checkout"), "expect_column_values_to_be_in_set", "scenario", 1, "checkout"),
        (corrupt(clean_log(), action_5="buy"), "expect_column_values_to_be_in_set", "action", 1, "buy"),
        (corrupt(clean_log(), timestamp_1=86_400), "expect_column_values_to_be_between", "timestamp", 1, 86_400),
        (corrupt(clean_log(), timestamp_6=7_258_118_400), "expect_column_values_to_be_between", "timestamp", 1,
         7_258_118_400),
        (with_lonely_user(clean_log()), "expect_interactions_per_user_to_be_at_least", "user_id", 1, "u9"),
        (corrupt(clean_log(), scenario_0=None), "expect_column_values_to_not_be_null", "scenario", 1, None),
        (clean_log().astype({"timestamp": float}), "expect_column_values_to_be_in_type_list", "timestamp", 7, None),
        (clean_log().drop(columns="scenario"), "expect_column_to_exist", "scenario", 7, None),
    ],
    ids=["unknown-item", "unknown-scenario", "bad-action", "ts-1970", "ts-2200", "lonely-user", "null-scenario",
         "float-ts", "no-scenario"],
)
def test_interaction_corruptions_fail_exactly_one_expectation(log, expectation, column, count, example):
    report = check_logs(log)
    failures = report.failures()
    assert not report.success and len(failures) == 1, report.summary()
    failure = failures[0]
    assert (failure.expectation, failure.column, failure.unexpected_count) == (expectation, column, count)
    if example is not None:
        assert failure.examples == [example]
    summary = report.summary()
    assert summary.startswith(f"interactions.{column}: {expectation} failed on {count} ")
    assert ("users" if column == "user_id" else "rows") in summary


def test_percentages_examples_and_markdown():
    log = corrupt(clean_log(), action_0="buy", action_1="buy", action_2="wish")
    report = check_logs(log)
    (failure,) = report.failures()
    assert failure.unexpected_count == 3 and failure.unexpected_percent == pytest.approx(100 * 3 / 7)
    assert failure.examples == ["buy", "wish"]  # distinct values
    assert "(42.9%), e.g. ['buy', 'wish']" in report.summary()
    markdown = report.to_markdown()
    assert markdown.count("\n| pass |") == len(report.results) - 1 and markdown.count("| **FAIL** |") == 1
    assert "expect_column_values_to_be_in_set | action | 3 rows" in markdown
    assert report.to_dict()["results"][0]["expectation"] == report.results[0].expectation


def test_optional_checks_are_skipped_when_not_given():
    log = corrupt(clean_log(), item_id_2="i404", scenario_4="checkout")
    report = validate_interactions(log, item_ids=None, known_scenarios=None)
    assert report.success
    assert all(r.column not in ("item_id", "scenario") or "in_set" not in r.expectation for r in report.results)


def test_many_problems_at_once_and_custom_range():
    log = corrupt(clean_log(), item_id_0="x", timestamp_3=10)
    report = validate_interactions(log, ["i1", "i2", "i3", "i4"], SCENARIOS, 3, timestamp_range=(0, T))
    failed = {(r.column, r.expectation, r.unexpected_count) for r in report.failures()}
    # with the range ending at T only the 5 rows after T are out of range (row 3, now at 10 s, is inside)
    assert failed == {
        ("item_id", "expect_column_values_to_be_in_set", 1),
        ("timestamp", "expect_column_values_to_be_between", 5),
    }
    assert len(report.summary().splitlines()) == 2


def test_context_is_built_once_and_reports_are_frozen():
    assert _batch_definition() is _batch_definition()
    report = validate_items(clean_items())
    with pytest.raises(AttributeError):
        report.success = False  # type: ignore[misc]
    assert isinstance(report.results[0], ExpectationResult)


def test_movielens_shaped_timings_and_the_default_time_window(movielens_shaped):
    items, log, _ = load_dataset(movielens_shaped.directory)
    item_report = validate_items(items)
    assert item_report.success, item_report.summary()
    # MovieLens-100K (and data in its shape) is from 1997-98: the default window (2000-01-01 .. 2100-01-01)
    # rejects every row
    default = validate_interactions(log, items["item_id"], ["movielens-100k"])
    (failure,) = default.failures()
    assert (failure.column, failure.unexpected_count) == ("timestamp", 100_000)
    report = validate_interactions(log, items["item_id"], ["movielens-100k"], 20, timestamp_range=(0, 4102444800))
    assert report.success, report.summary()
    assert report.row_count == 100_000 and report.seconds < 5.0  # ~0.2-0.3 s measured on 2 cores
    # user "3" has exactly 20 ratings: the history gate's edge
    strict = validate_interactions(log, items["item_id"], ["movielens-100k"], 21, timestamp_range=(0, 4102444800))
    assert [(f.column, f.unexpected_count, f.examples) for f in strict.failures()] == [("user_id", 1, ["3"])]


def test_converted_amazon_data_passes_the_gates(tmp_path):
    (tmp_path / "in").mkdir()
    reviews = [("U1", "P1", 0), ("U1", "P2", 60), ("U1", "P1", 120), ("U2", "P2", 30), ("U2", "P404", 90)]
    lines = [
        json.dumps({"user_id": u, "parent_asin": p, "rating": 5.0, "timestamp": (T + dt) * 1000}) for u, p, dt in reviews
    ]
    (tmp_path / "in" / "Toys_and_Games.jsonl").write_text("\n".join(lines))
    meta = [{"parent_asin": "P1", "title": "Kite", "price": None}, {"parent_asin": "P2", "title": "Ball", "price": 3.0}]
    (tmp_path / "in" / "meta_Toys_and_Games.jsonl").write_text("\n".join(map(json.dumps, meta)))
    summary = convert_amazon(tmp_path / "in", tmp_path / "out")
    assert summary["reviews_without_metadata"] == 1
    items, log, _ = load_dataset(tmp_path / "out")
    assert validate_items(items).success
    report = validate_interactions(log, items["item_id"], ["toys_and_games"], min_interactions_per_user=1)
    assert report.success, report.summary()
    # U2 kept a single review (the other had no metadata): the default history gate catches it
    strict = validate_interactions(log, items["item_id"], ["toys_and_games"])
    assert [(f.column, f.unexpected_count, f.examples) for f in strict.failures()] == [("user_id", 1, ["U2"])]
