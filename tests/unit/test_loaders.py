"""Loaders for the standard schema: normalization and the errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data.loaders import (
    find_table,
    load_dataset,
    load_interactions,
    load_items,
    load_users,
    to_unix_seconds,
)
from models.data.schema import ACTIONS, DataSourceError

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ITEMS_CSV = (
    "item_id,title,category,brand,price\n"
    "0042,Red Mug,Kitchen,Acme,12.5\n"
    "7,Blue Pen,Office,,\n"
    "NA,Lamp,Home,Lux,30\n"
)
LOG_CSV = (
    "user_id,item_id,timestamp,scenario,rating\n"
    "u1,0042,881250949,homepage,3\n"
    "u1,7,2018-01-01T10:00:00+02:00, homepage ,4\n"
    "u2,7,2018-01-01 12:00:00,search,5\n"
)


# ------------------------------------------------------------------------- data shaped like MovieLens-100K
def test_movielens_shaped_data_loads_with_exact_counts(movielens_shaped):
    written = movielens_shaped
    items, interactions, users = load_dataset(written.directory)
    assert len(items) == 1682 and len(interactions) == 100_000 and len(users) == 943
    assert interactions["scenario"].unique().tolist() == ["movielens-100k"]
    assert interactions["timestamp"].dtype == np.int64
    assert interactions["timestamp"].between(874_724_710, 893_286_638).all()  # 1997-09 .. 1998-04
    # row order kept, ties in one second included: the same Unix seconds in the same rows as written
    assert interactions.duplicated(["user_id", "timestamp"]).sum() > 40_000
    assert interactions["timestamp"].tolist() == written.interactions["timestamp"].tolist()
    # ids are strings exactly as written in the CSV, and every rated item is in the catalog
    for column in ("user_id", "item_id"):
        assert interactions[column].tolist() == written.interactions[column].astype(str).tolist()
    assert all(isinstance(v, str) for v in items["item_id"].head(50))
    assert interactions["item_id"].isin(items["item_id"]).all()
    assert set(interactions["user_id"]) == set(users["user_id"])
    # defaults filled, extra columns kept (a quoted title with a comma survives)
    assert (interactions["action"] == "click").all() and (interactions["query"] == "").all()
    assert {"rating", "genre", "release_year"} <= set(interactions.columns) | set(items.columns)
    assert interactions["rating"].tolist() == written.interactions["rating"].tolist()
    assert items.loc[9, "title"] == "Title 10, The" and items.loc[9, "genre"] == written.items.loc[9, "genre"]
    assert items["price"].isna().all() and (items["brand"] == "").all()
    # the users file: its profile columns kept as they are
    assert users.columns.tolist() == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert users["user_id"].tolist() == [str(u) for u in range(1, 944)]
    assert users["occupation"].tolist() == written.users["occupation"].tolist()


# ------------------------------------------------------------------------------------------ normalization
def test_csv_ids_are_preserved_exactly(tmp_path):
    items = load_items(write(tmp_path / "items.csv", ITEMS_CSV))
    assert items["item_id"].tolist() == ["0042", "7", "NA"]  # leading zeros and "NA" survive
    assert items["price"].tolist()[0] == 12.5 and np.isnan(items["price"].tolist()[1])
    assert items["brand"].tolist() == ["Acme", "", "Lux"]
    assert items["description"].tolist() == ["", "", ""]


def test_interactions_normalized(tmp_path):
    log = load_interactions(write(tmp_path / "interactions.csv", LOG_CSV))
    assert log["item_id"].tolist() == ["0042", "7", "7"]
    # 10:00+02:00 is 08:00 UTC; a naive time is UTC (and is not shifted by the earlier row's offset)
    assert log["timestamp"].tolist() == [881250949, 1514793600, 1514808000]
    assert log["timestamp"].dtype == np.int64
    assert log["scenario"].tolist() == ["homepage", "homepage", "search"]
    assert log["action"].tolist() == ["click"] * 3 and log["query"].tolist() == [""] * 3
    assert log["rating"].tolist() == [3, 4, 5]


def test_parquet_integer_ids_become_plain_strings(tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "item_id": [242.0, np.nan, 7.0],  # an int column with a null, as pandas stores it
            "timestamp": [881250949.0, 881250950.0, 881250951.0],
            "scenario": ["a", "a", "b"],
            "action": [" Cart", None, "order"],
        }
    )
    frame.to_parquet(tmp_path / "interactions.parquet")
    log = load_interactions(tmp_path / "interactions.parquet", scenarios=["a", "b"])
    assert log["user_id"].tolist() == ["1", "2", "3"]
    assert log.loc[[0, 2], "item_id"].tolist() == ["242", "7"] and pd.isna(log.loc[1, "item_id"])
    assert log["timestamp"].tolist() == [881250949, 881250950, 881250951]
    assert log["action"].tolist() == ["cart", "click", "order"]


@pytest.mark.parametrize(
    "values, expected",
    [
        (pd.Series([881250949, 0]), [881250949, 0]),
        (pd.Series([881250949.0]), [881250949]),
        (pd.Series(["881250949", " 12 "]), [881250949, 12]),
        (pd.Series(["1970-01-02", "1970-01-01T00:01:00Z", "1970-01-01T01:00:00-01:00"]), [86400, 60, 7200]),
        (pd.Series(pd.to_datetime(["1970-01-01 00:00:10"])), [10]),
        (pd.Series(pd.to_datetime(["1970-01-01 02:00:00+02:00"])), [0]),
    ],
)
def test_timestamp_formats(values, expected):
    out = to_unix_seconds(values)
    assert out.dtype == np.int64 and out.tolist() == expected


@pytest.mark.parametrize(
    "values, n_bad, example",
    [
        (pd.Series(["881250949", "yesterday", "2018-13-45", "5"]), 2, "row 1: 'yesterday'"),
        (pd.Series([1.0, 2.5, np.nan]), 2, "row 1: 2.5"),
        (pd.Series([None, "1"], dtype=object), 1, "row 0: None"),
    ],
)
def test_malformed_timestamps_are_counted_with_an_example(values, n_bad, example):
    with pytest.raises(DataSourceError) as info:
        to_unix_seconds(values, file="log.csv")
    message = str(info.value)
    assert f"{n_bad} of {len(values)} rows" in message and example in message
    assert "log.csv" in message and "'timestamp'" in message
    assert info.value.column == "timestamp" and info.value.file == "log.csv"


# ----------------------------------------------------------------------------------------------- errors
def error_of(call, *args, **kwargs) -> DataSourceError:
    with pytest.raises(DataSourceError) as info:
        call(*args, **kwargs)
    return info.value


def test_missing_file(tmp_path):
    error = error_of(load_items, tmp_path / "items.csv")
    assert error.file == str(tmp_path / "items.csv") and "not found" in str(error)
    assert isinstance(error, ValueError)


def test_empty_files(tmp_path):
    error = error_of(load_items, write(tmp_path / "items.csv", ""))
    assert "empty" in str(error) and str(tmp_path / "items.csv") in str(error)
    error = error_of(load_interactions, write(tmp_path / "interactions.csv", "user_id,item_id,timestamp,scenario\n"))
    assert "no rows" in str(error)
    pd.DataFrame({"item_id": pd.Series([], dtype=str)}).to_parquet(tmp_path / "items.parquet")
    assert "no rows" in str(error_of(load_items, tmp_path / "items.parquet"))


def test_missing_required_column_is_named(tmp_path):
    path = write(tmp_path / "items.csv", "item_id,name,category\n1,Mug,Kitchen\n")
    error = error_of(load_items, path)
    assert error.column == "title" and error.file == str(path)
    assert "'title'" in str(error) and str(path) in str(error) and "'name'" in str(error)


def test_malformed_timestamp_in_file_names_file_and_column(tmp_path):
    path = write(tmp_path / "interactions.csv", LOG_CSV + "u3,7,not-a-time,search,1\n")
    error = error_of(load_interactions, path)
    assert error.column == "timestamp" and str(path) in str(error)
    assert "1 of 4 rows" in str(error) and "row 3: 'not-a-time'" in str(error)


def test_unknown_actions_are_listed(tmp_path):
    path = write(
        tmp_path / "interactions.csv",
        "user_id,item_id,timestamp,scenario,action\nu,1,5,a,click\nu,1,6,a,buy\nu,1,7,a,buy\nu,1,8,a,wish\n",
    )
    error = error_of(load_interactions, path)
    assert error.column == "action"
    assert "3 rows" in str(error) and "'buy' (2 rows)" in str(error) and "'wish' (1 rows)" in str(error)
    assert all(a in str(error) for a in ACTIONS)


def test_unknown_scenarios_are_listed_only_when_scenarios_given(tmp_path):
    path = write(tmp_path / "interactions.csv", LOG_CSV)
    assert len(load_interactions(path)) == 3
    assert len(load_interactions(path, scenarios=["homepage", "search", "feed"])) == 3
    error = error_of(load_interactions, path, scenarios=["homepage"])
    assert error.column == "scenario" and "'search' (1 rows)" in str(error) and str(path) in str(error)


def test_malformed_price(tmp_path):
    error = error_of(load_items, write(tmp_path / "items.csv", "item_id,title,category,price\n1,a,b,$12.99\n"))
    assert error.column == "price" and "'$12.99'" in str(error)


def test_duplicate_user_ids(tmp_path):
    error = error_of(load_users, write(tmp_path / "users.csv", "user_id,age\n1,20\n2,30\n1,40\n"))
    assert error.column == "user_id" and "1 user ids" in str(error) and "2 rows" in str(error)


def test_unsupported_and_corrupt_files(tmp_path):
    assert "unsupported" in str(error_of(load_items, write(tmp_path / "items.xlsx", "x")))
    assert "parquet" in str(error_of(load_items, write(tmp_path / "items.parquet", "not parquet")))


# ----------------------------------------------------------------------------------- find_table, dataset
def test_find_table_prefers_parquet(tmp_path):
    assert find_table(tmp_path, "items") is None
    write(tmp_path / "items.csv", ITEMS_CSV)
    assert find_table(tmp_path, "items") == tmp_path / "items.csv"
    load_items(tmp_path / "items.csv").to_parquet(tmp_path / "items.parquet")
    assert find_table(tmp_path, "items") == tmp_path / "items.parquet"


def test_load_dataset_without_users_and_with_missing_table(tmp_path):
    write(tmp_path / "items.csv", ITEMS_CSV)
    error = error_of(load_dataset, tmp_path)
    assert "interactions" in str(error) and str(tmp_path) in str(error)
    write(tmp_path / "interactions.csv", LOG_CSV)
    items, log, users = load_dataset(tmp_path)
    assert users is None and len(items) == 3 and len(log) == 3
    assert "does not exist" in str(error_of(load_dataset, tmp_path / "nope"))


def test_error_message_does_not_repeat_file_or_column():
    error = DataSourceError("data.csv: column 'x' is bad", file="data.csv", column="x")
    assert str(error) == "data.csv: column 'x' is bad"
    error = DataSourceError("is bad", file="data.csv", column="x")
    assert str(error) == "data.csv: column 'x': is bad" and error.detail == "is bad"
