"""Shared fixtures of the Feast tests: a small synthetic world, its source tables, a throw-away Redis, checks."""

import numpy as np
import pandas as pd
import pytest

from feature_repo.store import local_redis_server
from models.data.synthetic import SCENARIOS, WorldConfig, generate_world
from models.features import (
    item_features_table,
    long_term_table,
    reasoning_instruction_table,
    scenario_instruction_table,
    short_term_table,
    user_profile_table,
)

DAY = 86_400
NO_INSTRUCTION = 5  # the first users of the world get no reasoning instruction


def fake_sids(items: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(items)
    return pd.DataFrame({"item_id": items.item_id, "sid_0": rng.integers(0, 16, n), "sid_1": rng.integers(0, 16, n),
                         "sid_2": rng.integers(0, 16, n), "sid_3": np.zeros(n, np.int64)})


def fake_instructions(users: pd.Series, start: int, seed: int = 0) -> pd.DataFrame:
    """Two generations per user (day 3 and day 10 after ``start``), none for the first NO_INSTRUCTION users."""
    rng = np.random.default_rng(seed)
    ids = users.to_numpy(dtype=object)[NO_INSTRUCTION:]
    n = len(ids)
    return pd.DataFrame({
        "user_id": np.concatenate([ids, ids]),
        "instruction_text": [f"{u} gen{g}" for g in (1, 2) for u in ids],
        "instruction_embedding": list(rng.standard_normal((2 * n, 384)).astype(np.float32)),
        "generator_version": "test-v1",
        "generated_at": np.repeat([start + 3 * DAY, start + 10 * DAY], n),
    })


def make_tables(world, seed: int = 0) -> dict[str, pd.DataFrame]:
    log = world.interactions
    sids = fake_sids(world.items, seed)
    rng = np.random.default_rng(seed)
    texts = {s: f"{s}: scenario instruction" for s in SCENARIOS}
    return {
        "user_profile": user_profile_table(world.users, columns=["age_band", "region", "price_sensitivity"]),
        "user_short_term": short_term_table(log, sids, n_short=20),
        "user_long_term": long_term_table(log, n_long=100),
        "item_features": item_features_table(world.items, sids, log),
        "scenario_instruction": scenario_instruction_table(texts, rng.standard_normal((len(texts), 384))),
        "reasoning_instruction": reasoning_instruction_table(fake_instructions(world.users.user_id, int(log.timestamp.min()), seed)),
    }


@pytest.fixture(scope="session")
def small_world():
    return generate_world(WorldConfig(n_users=40, n_items=300, n_days=14, seed=3))


@pytest.fixture(scope="session")
def small_tables(small_world):
    return make_tables(small_world)


@pytest.fixture(scope="session")
def redis_url():
    with local_redis_server() as url:
        yield url


def latest(frame: pd.DataFrame, **keys) -> pd.Series:
    rows = frame
    for k, v in keys.items():
        rows = rows[rows[k] == v]
    return rows.sort_values(["event_timestamp", "created_timestamp"], kind="stable").iloc[-1]


def check_online_round_trip(store, tables: dict[str, pd.DataFrame], users: list[str], scenario: str) -> None:
    """Online values of one request == the newest source rows of each view (what materialize must load)."""
    for user in users:
        got = store.online_features(user, scenario)
        st = latest(tables["user_short_term"], user_id=user, scenario=scenario)
        assert got["short_item_ids"] == list(st.short_item_ids)
        assert got["short_sids"] == list(st.short_sids) and got["short_len"] == st.short_len
        assert got["short_actions"] == list(st.short_actions)
        lt = latest(tables["user_long_term"], user_id=user)
        assert got["long_item_ids"] == list(lt.long_item_ids) and got["long_len"] == lt.long_len
        prof = latest(tables["user_profile"], user_id=user)
        assert got["age_band"] == prof.age_band and got["profile_fields"] == list(prof.profile_fields)
        sc = latest(tables["scenario_instruction"], scenario=scenario)
        assert got["scenario_text"] == sc.scenario_text
        np.testing.assert_allclose(got["scenario_embedding"], np.asarray(sc.scenario_embedding), rtol=0, atol=0)
        ins = tables["reasoning_instruction"]
        if (ins.user_id == user).any():
            row = latest(ins, user_id=user)
            assert got["has_instruction"] and got["instruction_text"] == row.instruction_text
            assert got["generated_at"] == row.generated_at and got["generator_version"] == row.generator_version
            assert np.asarray(got["instruction_embedding"], np.float32).tolist() == list(row.instruction_embedding)
        else:
            assert not got["has_instruction"] and got["instruction_text"] is None
        assert got["known_user"]


def check_unknown_user_and_types(store, scenario: str) -> None:
    got = store.online_features("no-such-user", scenario)
    assert got["has_instruction"] is False and got["known_user"] is False
    assert got["short_item_ids"] == [] and got["long_item_ids"] == [] and got["instruction_embedding"] == []
    assert got["short_len"] == 0 and got["long_len"] == 0
    assert got["instruction_text"] is None and got["age_band"] is None
    assert got["scenario_text"] is not None  # the scenario is known even if the user is not
    with pytest.raises(TypeError, match="user_id"):
        store.online_features(12345, scenario)
    with pytest.raises(TypeError, match="user_id"):
        store.online_features(["u00000", 7], scenario)
    with pytest.raises(TypeError, match="scenario"):
        store.online_features("u00000", 3)


def check_push_updates_one_user(store, users: list[str], scenario: str) -> None:
    target, other = users
    before_other = store.online_features(other, scenario)
    before_target = store.online_features(target, scenario)
    emb = np.linspace(-1, 1, 384, dtype=np.float32)
    new = pd.DataFrame({"user_id": [target], "instruction_text": ["pushed: gifts for a new baby"],
                        "instruction_embedding": [emb], "generator_version": "test-v2",
                        "generated_at": [before_target["generated_at"] + 3600]})
    assert store.push_instructions(new) == 1
    after = store.online_features(target, scenario)
    assert after["instruction_text"] == "pushed: gifts for a new baby" and after["generator_version"] == "test-v2"
    np.testing.assert_allclose(after["instruction_embedding"], emb, rtol=0, atol=0)
    assert after["short_item_ids"] == before_target["short_item_ids"]  # other views of the user untouched
    after_other = store.online_features(other, scenario)
    assert after_other == before_other


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory, small_tables):
    """The small world applied and materialized into a SQLite online store (shared: Feast calls are slow)."""
    from feature_repo import OxyFeatureStore

    store = OxyFeatureStore(tmp_path_factory.mktemp("feast_sqlite"), online="sqlite")
    store.write_sources(small_tables)
    store.apply()
    store.materialize()
    return store
