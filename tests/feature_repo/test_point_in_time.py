"""Point-in-time correctness of training rows through real Feast (DuckDB offline store): nothing written after
an example's timestamp may appear in that example."""

import numpy as np
import pandas as pd
import pytest

from feature_repo import OxyFeatureStore
from models.features import (
    item_features_table,
    long_term_table,
    reasoning_instruction_table,
    scenario_instruction_table,
    short_term_table,
    training_entities,
    user_profile_table,
)

DAY = 86_400
BASE = 1_700_006_400  # a UTC day boundary (2023-11-15)
ITEMS = ["A", "B", "C", "D", "E", "F", "H", "X", "Y"]

# u1: B and C share a second (row order: B first); D is in another scenario; E and G the next day; F 40 days
# later (beyond the 30-day instruction max age); H 400 days after F (behaviour never expires). u2 interleaves in
# time and must never see u1's items.
LOG = pd.DataFrame(
    [
        ("u1", "A", BASE + 100, "home", "view"),
        ("u2", "X", BASE + 150, "home", "click"),
        ("u1", "B", BASE + 200, "home", "click"),
        ("u1", "C", BASE + 200, "home", "cart"),
        ("u2", "Y", BASE + 250, "home", "view"),
        ("u1", "D", BASE + 300, "cart", "order"),
        ("u1", "E", BASE + DAY + 50, "home", "view"),
        ("u1", "A", BASE + DAY + 60, "home", "click"),
        ("u1", "F", BASE + 40 * DAY, "home", "view"),
        ("u1", "H", BASE + 440 * DAY, "cart", "click"),
    ],
    columns=["user_id", "item_id", "timestamp", "scenario", "action"],
)


def _instructions():
    emb = np.eye(4, 384, dtype=np.float32)
    frame = pd.DataFrame({
        "user_id": ["u1", "u1", "u1"],
        "instruction_text": ["early", "late", "backfilled"],
        "instruction_embedding": list(emb[:3]),
        "generator_version": "v1",
        "generated_at": [BASE + 150, BASE + 250, BASE + 260],
    })
    table = reasoning_instruction_table(frame)
    # "backfilled": claims to be valid from BASE+260 but was only written two days later
    table.loc[table.instruction_text == "backfilled", "created_timestamp"] = pd.Timestamp(BASE + 2 * DAY, unit="s", tz="UTC")
    return table


@pytest.fixture(scope="module")
def pit_store(tmp_path_factory):
    items = pd.DataFrame({"item_id": ITEMS, "title": ITEMS, "category": "c", "price": 1.0})
    sids = pd.DataFrame({"item_id": ITEMS, "sid_0": np.arange(len(ITEMS)), "sid_1": np.arange(len(ITEMS)) + 10})
    users = pd.DataFrame({"user_id": ["u1", "u2"], "age_band": ["25-34", "65+"]})
    store = OxyFeatureStore(tmp_path_factory.mktemp("feast_pit"))
    store.write_sources({
        "user_profile": user_profile_table(users),
        "user_short_term": short_term_table(LOG, sids, n_short=20),
        "user_long_term": long_term_table(LOG, n_long=100),
        "item_features": item_features_table(items, sids, LOG),
        "scenario_instruction": scenario_instruction_table({"home": "h", "cart": "c"}, np.zeros((2, 384))),
        "reasoning_instruction": _instructions(),
    })
    store.apply()
    return store


@pytest.fixture(scope="module")
def joined(pit_store):
    out = pit_store.historical_features(training_entities(LOG))
    return {(r.user_id, r.position): r for r in out.itertuples()}


def _items(x):
    return [str(v) for v in x]


def test_the_target_and_later_events_never_leak(joined):
    b, c, d, e, g = (joined[("u1", p)] for p in (1, 2, 3, 4, 5))
    assert (b.item_id, c.item_id, d.item_id, e.item_id, g.item_id) == ("B", "C", "D", "E", "A")
    assert _items(b.short_item_ids) == ["A"]  # not B itself, not C from the same second
    assert _items(c.short_item_ids) == ["A", "B"]  # tie broken by row order: B is before C, C is not in
    assert _items(c.long_item_ids) == ["A", "B"]
    assert _items(d.short_item_ids) == [] and d.short_len == 0  # no earlier "cart" event
    assert _items(d.long_item_ids) == ["A", "B", "C"]
    assert _items(e.short_item_ids) == ["A", "B", "C"] and _items(e.long_item_ids) == ["A", "B", "C", "D"]
    assert list(b.short_sids) == [0, 10]  # SID codes of A only


def test_users_do_not_see_each_other(joined):
    y = joined[("u2", 1)]
    assert y.item_id == "Y" and _items(y.short_item_ids) == ["X"] and _items(y.long_item_ids) == ["X"]
    assert not y.has_instruction
    assert joined[("u2", 0)].long_len == 0


def test_instructions_only_from_before_and_within_ttl(joined):
    b, d, e, f = (joined[("u1", p)] for p in (1, 3, 4, 6))
    assert b.instruction_text == "early"  # "late" (BASE+250) is after B (BASE+200)
    assert d.instruction_text == "late"
    # "backfilled" has an earlier event time than E but was written after E: the created-time filter drops it
    assert e.instruction_text == "late"
    assert f.item_id == "F" and not f.has_instruction and pd.isna(f.instruction_text)  # 40 days > 30-day max age
    assert list(f.long_item_ids)[-1] == "A"  # behaviour 40 days old is still there
    assert not joined[("u1", 0)].has_instruction  # nothing generated before the first event


def test_history_400_days_old_is_not_dropped(joined):
    h = joined[("u1", 7)]  # H comes 400 days after the user's previous event; it is u1's test example
    assert h.item_id == "H" and h.split == "test"
    assert _items(h.long_item_ids) == ["A", "B", "C", "D", "E", "A", "F"] and h.long_len == 7
    assert _items(h.long_scenarios) == ["home", "home", "home", "cart", "home", "home", "home"]
    assert _items(h.short_item_ids) == ["D"]  # the user's last cart-scenario event, 440 days earlier


def test_online_history_does_not_expire(pit_store):
    pit_store.materialize()
    online = pit_store.online_features("u1", "cart")
    assert _items(online["long_item_ids"]) == ["A", "B", "C", "D", "E", "A", "F", "H"]
    assert _items(online["short_item_ids"]) == ["D", "H"]


def test_item_popularity_only_from_closed_days(joined):
    assert joined[("u1", 0)].popularity_count == 0  # A on day 0: no day has closed yet
    g = joined[("u1", 5)]  # A again on day 1: sees the day-0 count (1), not its own interaction
    assert g.item_id == "A" and g.popularity_count == 1 and list(g.sid_codes) == [0, 10]


def test_every_example_of_a_world_sees_exactly_the_strictly_earlier_window(sqlite_store, small_world):
    log = small_world.interactions
    ent = training_entities(log)
    out = sqlite_store.historical_features(ent)
    # reference without Feast: the events before each target in the same (user, scenario), in log order
    df = log.assign(row=np.arange(len(log))).sort_values(["user_id", "timestamp", "row"], kind="stable")
    expected = []
    for _, g in df.groupby(["user_id", "scenario"], sort=False):
        items = g.item_id.tolist()
        expected += [((u, t, s, it), items[max(0, i - 20): i]) for i, (u, t, s, it) in
                     enumerate(zip(g.user_id, g.timestamp, g.scenario, items))]
    want = {}
    for key, window in expected:  # (user, second, scenario, item) can repeat in ties: keep a list
        want.setdefault(key, []).append(window)
    seen = {}
    for r in out.itertuples():
        key = (r.user_id, r.target_timestamp, r.scenario, r.item_id)
        k = seen.get(key, 0)
        seen[key] = k + 1
        assert _items(r.short_item_ids) == want[key][k]
        target_us = r.target_timestamp * 1_000_000
        assert r.event_timestamp.value // 1000 < target_us + k + 1  # strictly before the target's event time


def test_push_online_and_offline_reaches_later_examples_only(pit_store, joined):
    emb = np.full(384, 0.5, np.float32)
    frame = pd.DataFrame({"user_id": ["u2"], "instruction_text": ["pushed"], "instruction_embedding": [emb],
                          "generator_version": "v2", "generated_at": [BASE + 260]})
    assert pit_store.push_instructions(frame, to="online_and_offline") == 1
    assert pit_store.online_features("u2", "home")["instruction_text"] == "pushed"
    ent = pd.DataFrame({"user_id": ["u2", "u2"], "scenario": "home", "item_id": "Y",
                        "event_timestamp": pd.to_datetime([BASE + 259, BASE + 261], unit="s", utc=True)})
    out = pit_store.historical_features(ent)
    assert out.has_instruction.tolist() == [False, True] and out.instruction_text.iloc[1] == "pushed"
    assert np.allclose(out.instruction_embedding.iloc[1], emb)
    with pytest.raises(ValueError, match="to must be"):
        pit_store.push_instructions(frame, to="offline")
