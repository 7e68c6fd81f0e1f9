"""Amazon Reviews 2014/2018 and 2023 dumps -> standard schema, round-tripped through the loaders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data.amazon import convert_amazon, iter_records, main, parse_prices, scenario_name
from models.data.loaders import load_dataset
from models.data.schema import DataSourceError

DAY = 86_400
T0 = 1_400_000_000  # 2014-05-13


def write_lines(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def review_2018(user, asin, ts=None, rating=5.0, review_time=None):
    record = {"reviewerID": user, "asin": asin, "overall": rating, "reviewText": "ok", "summary": "fine"}
    if ts is not None:
        record["unixReviewTime"] = ts
    if review_time is not None:
        record["reviewTime"] = review_time
    return json.dumps(record)


@pytest.fixture
def dump_2018(tmp_path) -> Path:
    d = tmp_path / "amazon2018"
    d.mkdir()
    # 2014-style file names, plain JSON reviews; meta with one Python-literal line (single quotes)
    write_lines(
        d / "reviews_Beauty_5.json",
        [
            review_2018("A1", "B001", T0),
            review_2018("A1", "B002", T0 + DAY),
            review_2018("A1", "B002", T0 + DAY),  # exact duplicate: dropped
            review_2018("A2", "B001", None, 3.0, review_time="05 14, 2014"),  # no unixReviewTime
            review_2018("A2", "B999", T0 + 2 * DAY),  # B999 has no metadata: dropped
            review_2018("A2", "B003", T0 + 2 * DAY),  # B003's metadata has no title: dropped
            json.dumps({"asin": "B001", "overall": 1.0, "unixReviewTime": T0}),  # no reviewer: malformed
        ],
    )
    write_lines(
        d / "meta_Beauty.json",
        [
            "{'asin': 'B001', 'title': 'Rose &amp; Oud Soap', 'price': 12.99, 'brand': \"L'Oreal\", "
            "'categories': [['Beauty', 'Bath & Body', 'Soaps']], 'description': 'A soap.'}",
            json.dumps({"asin": "B002", "title": "Shampoo", "categories": [["Beauty", "Hair Care"]]}),
            json.dumps({"asin": "B003", "title": "", "categories": [["Beauty"]]}),  # no title: dropped
        ],
    )
    # 2018-style names, gzipped; B002 is in both categories (one item row, from the first file in order)
    write_lines(
        d / "All_Beauty.json.gz",
        [review_2018("A3", "B002", T0 + 3 * DAY), review_2018("A3", "B004", T0 + 4 * DAY, 4.0)],
    )
    write_lines(
        d / "meta_All_Beauty.json.gz",
        [
            json.dumps(
                {
                    "asin": "B002",
                    "title": "Shampoo (All Beauty)",
                    "category": ["All Beauty", "Hair", "Shampoo"],
                    "price": "$1,299.00",
                    "description": ["Gentle.", "For all hair."],
                    "main_cat": "All Beauty",
                }
            ),
            json.dumps({"asin": "B004", "title": "Comb", "category": [], "price": "", "main_cat": "Tools"}),
        ],
    )
    return d


@pytest.fixture
def dump_2023(tmp_path) -> Path:
    d = tmp_path / "amazon2023"
    d.mkdir()
    ms = lambda s: s * 1000  # noqa: E731 - 2023 timestamps are milliseconds
    write_lines(
        d / "All_Beauty.jsonl",
        [
            json.dumps({"user_id": "U1", "asin": "X1", "parent_asin": "P1", "rating": 5.0, "timestamp": ms(T0)}),
            json.dumps({"user_id": "U1", "asin": "X2", "parent_asin": "P1", "rating": 4.0, "timestamp": ms(T0 + 60)}),
            json.dumps({"user_id": "U2", "asin": "X9", "parent_asin": "P9", "rating": 2.0, "timestamp": ms(T0)}),
        ],
    )
    write_lines(
        d / "meta_All_Beauty.jsonl.gz",
        [
            json.dumps(
                {
                    "parent_asin": "P1",
                    "title": "Lip Balm",
                    "main_category": "All Beauty",
                    "categories": [],
                    "price": None,
                    "store": "Burt's",
                    "description": ["Moisturizing", "balm"],
                }
            )
        ],
    )
    write_lines(
        d / "Toys_and_Games.jsonl.gz",
        [json.dumps({"user_id": "U2", "asin": "T1", "parent_asin": "Q1", "rating": 3.0, "timestamp": ms(T0 + 5)})],
    )
    write_lines(
        d / "meta_Toys_and_Games.jsonl",
        [
            json.dumps(
                {
                    "parent_asin": "Q1",
                    "title": "Puzzle",
                    "main_category": "Toys & Games",
                    "categories": ["Toys & Games", "Puzzles", "Jigsaw Puzzles"],
                    "price": 9.5,
                    "store": "Ravensburger",
                    "description": [],
                }
            ),
            json.dumps({"parent_asin": "Q2", "title": "Unreviewed Kite", "categories": [], "price": 20.0}),
        ],
    )
    return d


def test_scenario_names():
    assert scenario_name("All_Beauty") == "all_beauty"
    assert scenario_name("Beauty") == "beauty"
    assert scenario_name("Clothing_Shoes_and_Jewelry") == "clothing_shoes_and_jewelry"
    assert scenario_name("CDs & Vinyl") == "cds_vinyl"
    with pytest.raises(ValueError):
        scenario_name("__")


def test_parse_prices():
    values = pd.Series(["$12.99", "$1,299.00", "$8.99 - $12.99", "", None, 7.5, "19", "-3", ".a-box{color:#13f}", 0.0])
    out = parse_prices(values.astype(object))
    assert out.iloc[:3].tolist() == [12.99, 1299.0, 8.99]
    assert out.iloc[5:7].tolist() == [7.5, 19.0]
    assert out.iloc[[3, 4, 7, 8, 9]].isna().all()


def test_convert_2018_round_trip(dump_2018, tmp_path):
    summary = convert_amazon(dump_2018, tmp_path / "out", "auto")
    assert summary["format"] == "2018"
    assert summary["scenarios"] == {"all_beauty": 2, "beauty": 3}
    assert summary["reviews_read"] == 9 and summary["reviews_malformed"] == 1
    assert summary["reviews_without_metadata"] == 2 and summary["duplicate_reviews"] == 1
    assert summary["items_without_title"] == 1 and summary["duplicate_meta_records"] == 1

    items, log, users = load_dataset(tmp_path / "out")
    assert users is None
    assert sorted(items["item_id"]) == ["B001", "B002", "B004"]  # B002 once, B003 (no title) and B999 gone
    by_id = items.set_index("item_id")
    # B002 comes from meta_All_Beauty (first file in sorted order): its title, leaf category and "$" price
    assert by_id.loc["B002", "title"] == "Shampoo (All Beauty)"
    assert by_id.loc["B002", "category"] == "Shampoo" and by_id.loc["B002", "price"] == 1299.0
    assert by_id.loc["B002", "description"] == "Gentle. For all hair."
    # the Python-literal line: HTML unescaped, 2014 list-of-lists categories, float price, str description
    assert by_id.loc["B001", "title"] == "Rose & Oud Soap" and by_id.loc["B001", "brand"] == "L'Oreal"
    assert by_id.loc["B001", "category"] == "Soaps" and by_id.loc["B001", "price"] == 12.99
    assert by_id.loc["B001", "category_path"] == "Beauty > Bath & Body > Soaps"
    assert by_id.loc["B004", "category"] == "Tools" and np.isnan(by_id.loc["B004", "price"])

    assert log[["user_id", "item_id", "scenario"]].values.tolist() == [
        ["A1", "B001", "beauty"],
        ["A1", "B002", "beauty"],
        ["A2", "B001", "beauty"],
        ["A3", "B002", "all_beauty"],
        ["A3", "B004", "all_beauty"],
    ]
    assert log["timestamp"].tolist() == [T0, T0 + DAY, 1_400_025_600, T0 + 3 * DAY, T0 + 4 * DAY]
    assert (log["action"] == "click").all() and (log["query"] == "").all()
    assert log["rating"].tolist() == [5.0, 5.0, 3.0, 5.0, 4.0]


def test_convert_2023_round_trip(dump_2023, tmp_path):
    summary = convert_amazon(dump_2023, tmp_path / "out", "2023")
    assert summary["scenarios"] == {"all_beauty": 2, "toys_and_games": 1}
    assert summary["reviews_without_metadata"] == 1  # P9
    items, log, _ = load_dataset(tmp_path / "out")
    # parent_asin is the item: both variants X1/X2 are P1; the unreviewed Q2 is not written by default
    assert sorted(items["item_id"]) == ["P1", "Q1"]
    assert log["item_id"].tolist() == ["P1", "P1", "Q1"]
    assert log["timestamp"].tolist() == [T0, T0 + 60, T0 + 5]  # milliseconds -> seconds
    by_id = items.set_index("item_id")
    assert by_id.loc["P1", "brand"] == "Burt's" and np.isnan(by_id.loc["P1", "price"])
    assert by_id.loc["P1", "category"] == "All Beauty"  # no categories list: the main category
    assert by_id.loc["P1", "description"] == "Moisturizing balm"
    assert by_id.loc["Q1", "category"] == "Jigsaw Puzzles" and by_id.loc["Q1", "price"] == 9.5


def test_options_keep_items_and_min_user_history(dump_2023, tmp_path):
    summary = convert_amazon(dump_2023, tmp_path / "out", keep_unreviewed_items=True, min_interactions_per_user=2)
    items, log, _ = load_dataset(tmp_path / "out")
    assert sorted(items["item_id"]) == ["P1", "Q1", "Q2"]
    assert log["user_id"].unique().tolist() == ["U1"] and summary["reviews_dropped_min_user"] == 1


def test_cli(dump_2023, tmp_path, capsys):
    summary = main(["--input", str(dump_2023), "--output", str(tmp_path / "cli"), "--format", "auto"])
    assert json.loads(capsys.readouterr().out) == summary
    assert (tmp_path / "cli" / "items.parquet").exists() and (tmp_path / "cli" / "interactions.parquet").exists()


def test_errors(tmp_path, dump_2018, dump_2023):
    with pytest.raises(DataSourceError, match="does not exist"):
        convert_amazon(tmp_path / "missing", tmp_path / "out")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for source in (dump_2018 / "meta_Beauty.json", dump_2023 / "All_Beauty.jsonl"):
        (mixed / source.name).write_bytes(source.read_bytes())
    with pytest.raises(DataSourceError, match="both .json and .jsonl"):
        convert_amazon(mixed, tmp_path / "out")
    with pytest.raises(DataSourceError, match="no meta files"):
        convert_amazon(mixed, tmp_path / "out", "2023")
    bad = write_lines(tmp_path / "bad.json", ['{"asin": "B1"}', "{'asin': oops}"])
    with pytest.raises(DataSourceError, match="line 2 is neither JSON nor a Python literal") as info:
        list(iter_records(bad))
    assert info.value.file == str(bad)
    with pytest.raises(DataSourceError, match="expected an object"):
        list(iter_records(write_lines(tmp_path / "list.json", ["[1, 2]"])))


def test_python_literal_lines_are_never_evaluated(tmp_path):
    path = write_lines(tmp_path / "meta_X.json", ["__import__('os').system('echo pwned')"])
    with pytest.raises(DataSourceError, match="neither JSON nor a Python literal"):
        list(iter_records(path))
