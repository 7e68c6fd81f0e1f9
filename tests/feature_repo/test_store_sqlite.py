"""Real Feast with the local profile: file registry, DuckDB offline store, SQLite online store."""

import os

import numpy as np
import pandas as pd
import pytest

from feature_repo import OxyFeatureStore
from models.features import training_entities
from tests.feature_repo.conftest import check_online_round_trip, check_push_updates_one_user, check_unknown_user_and_types

VIEWS = {
    "user_profile": {"age_band", "region", "price_sensitivity", "profile_fields"},
    "user_short_term": {"short_item_ids", "short_sids", "short_actions", "short_len"},
    "user_long_term": {"long_item_ids", "long_scenarios", "long_len"},
    "item_features": {"sid_codes", "category", "price", "popularity_count", "popularity_log"},
    "scenario_instruction": {"scenario_text", "scenario_embedding"},
    "reasoning_instruction": {"instruction_text", "instruction_embedding", "generator_version", "generated_at"},
}


def test_registry_summary(sqlite_store):
    summary = sqlite_store.registry_summary()
    assert summary["project"] == "oxyrec"
    assert summary["entities"] == {"user": "user_id", "item": "item_id", "scenario": "scenario"}
    assert {v: set(d["features"]) for v, d in summary["feature_views"].items()} == VIEWS
    assert summary["feature_views"]["user_short_term"]["entities"] == ["user", "scenario"]
    assert summary["feature_views"]["reasoning_instruction"]["features"]["instruction_embedding"] == "Array(Float32)"
    assert summary["feature_views"]["reasoning_instruction"]["ttl_s"] == 30 * 86400  # instruction max age
    assert summary["feature_views"]["user_short_term"]["ttl_s"] == 0  # behaviour never expires
    assert summary["feature_views"]["user_long_term"]["ttl_s"] == 0
    assert set(summary["feature_services"]["serving"]) == set(VIEWS) - {"item_features"}
    assert set(summary["feature_services"]["training"]) == set(VIEWS)
    assert "reasoning_instruction_push" in summary["data_sources"]
    assert (sqlite_store.data_dir / "registry.pb").exists() and (sqlite_store.data_dir / "online.db").exists()


def test_online_round_trip(sqlite_store, small_tables, small_world):
    users = small_world.users.user_id.tolist()
    st = small_tables["user_short_term"]
    scenario = st.scenario.value_counts().index[0]
    active = st[st.scenario == scenario].user_id.unique().tolist()
    check_online_round_trip(sqlite_store, small_tables, [u for u in users[:3] if u in active] + active[-2:], scenario)
    many = sqlite_store.online_features(active[:4], scenario)  # a list of users -> lists
    assert many["user_id"] == active[:4] and len(many["short_item_ids"]) == 4


def test_unknown_user_and_wrong_types(sqlite_store):
    check_unknown_user_and_types(sqlite_store, "homepage")


def test_push_updates_one_user_only(sqlite_store, small_world):
    users = small_world.users.user_id.tolist()
    check_push_updates_one_user(sqlite_store, [users[-1], users[-2]], "homepage")


def test_historical_rows_keep_input_order_and_defaults(sqlite_store, small_world):
    ent = training_entities(small_world.interactions).sample(frac=1.0, random_state=0).head(300)
    out = sqlite_store.historical_features(ent)
    assert len(out) == len(ent)
    assert out.user_id.tolist() == ent.user_id.tolist() and out.item_id.tolist() == ent.item_id.tolist()
    assert set().union(*VIEWS.values()) <= set(out.columns) and "has_instruction" in out
    assert out.short_len.dtype == np.int64 and (out.short_len == out.short_item_ids.map(len)).all()
    assert (out.short_sids.map(len) == 4 * out.short_len).all()
    assert out.sid_codes.map(len).eq(4).all()  # the target item's SID codes: the training label
    first = out[out.position == 0]
    assert (first.long_len == 0).all()  # nothing before a user's first interaction
    serving = sqlite_store.historical_features(ent.drop(columns="item_id").head(20), service="serving", chunk_rows=7)
    assert "sid_codes" not in serving and serving.short_item_ids.map(list).tolist() == out.short_item_ids.head(20).map(list).tolist()
    with pytest.raises(ValueError, match="item_id"):
        sqlite_store.historical_features(ent.drop(columns="item_id"))
    with pytest.raises(TypeError, match="user_id"):
        sqlite_store.historical_features(ent.assign(user_id=np.arange(len(ent))))


def test_works_from_any_working_directory(sqlite_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    again = OxyFeatureStore(os.path.relpath(sqlite_store.data_dir, tmp_path))
    assert again.data_dir == sqlite_store.data_dir
    assert again.online_features("u00010", "homepage")["known_user"]
    text = (sqlite_store.data_dir / "feature_store.yaml").read_text()
    assert str(sqlite_store.data_dir) in text and "${" not in text


def test_write_sources_rejects_bad_frames(tmp_path, small_tables):
    store = OxyFeatureStore(tmp_path)
    with pytest.raises(ValueError, match="missing"):
        store.write_sources({"user_long_term": small_tables["user_long_term"].drop(columns="long_len")})
    with pytest.raises(ValueError, match="unknown feature table"):
        store.write_sources({"nope": pd.DataFrame()})
    with pytest.raises(FileNotFoundError, match="write_sources first"):
        store.apply()
    store.write_sources({"user_long_term": small_tables["user_long_term"]})
    assert [p.name for p in store.source_dir.iterdir()] == ["user_long_term.parquet"]  # no temp files left
