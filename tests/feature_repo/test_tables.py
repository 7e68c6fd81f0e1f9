"""Feast source-table builders (models/features/tables.py) against hand-computed cases and naive references."""

import numpy as np
import pandas as pd
import pytest

from models.eval.split import leave_last_out
from models.features import (
    arrow_schema,
    event_micros,
    item_features_table,
    long_term_table,
    reasoning_instruction_table,
    scenario_instruction_table,
    short_term_table,
    training_entities,
    user_profile_table,
)

US = 1_000_000


def _log():
    # u1: two scenarios interleaved, a tie at t=20 (row order decides: "c" before "d"); u2 out of order in the file
    rows = [
        ("u1", "a", 10, "s1", "view"),
        ("u2", "x", 30, "s1", "click"),
        ("u1", "b", 15, "s2", "click"),
        ("u1", "c", 20, "s1", "cart"),
        ("u1", "d", 20, "s1", "order"),
        ("u2", "y", 5, "s1", "view"),
        ("u1", "e", 40, "s2", "view"),
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "scenario", "action"])


def _sids():
    items = list("abcdexy")
    return pd.DataFrame({"item_id": items, "sid_0": np.arange(7) * 10, "sid_1": np.arange(7) * 10 + 1,
                         "sid_2": np.zeros(7, np.int64)})


def test_event_micros_break_ties_by_row_order():
    ev = event_micros(_log())
    u1 = ev[ev.user_id == "u1"]
    assert u1.item_id.tolist() == ["a", "b", "c", "d", "e"]
    assert u1.event_micros.tolist() == [10 * US, 15 * US, 20 * US, 20 * US + 1, 40 * US]
    assert ev[ev.user_id == "u2"].item_id.tolist() == ["y", "x"]


def test_short_term_last_n_window_per_user_and_scenario():
    st = short_term_table(_log(), _sids(), n_short=2)
    got = {(r.user_id, r.scenario, r.event_timestamp.value // 1000): list(r.short_item_ids) for r in st.itertuples()}
    assert got == {
        ("u1", "s1", 10 * US): ["a"],
        ("u1", "s1", 20 * US): ["a", "c"],
        ("u1", "s1", 20 * US + 1): ["c", "d"],  # window of 2: "a" dropped
        ("u1", "s2", 15 * US): ["b"],
        ("u1", "s2", 40 * US): ["b", "e"],
        ("u2", "s1", 5 * US): ["y"],
        ("u2", "s1", 30 * US): ["y", "x"],
    }
    row = st[(st.user_id == "u1") & (st.scenario == "s1")].iloc[-1]
    assert list(row.short_actions) == ["cart", "order"]
    assert list(row.short_sids) == [20, 21, 0, 30, 31, 0]  # items c, d: L+1 = 3 codes each, item by item
    assert row.short_len == 2
    assert (st.event_timestamp == st.created_timestamp).all()


def test_long_term_window_crosses_scenarios():
    lt = long_term_table(_log(), n_long=3)
    u1 = lt[lt.user_id == "u1"]
    assert [list(x) for x in u1.long_item_ids] == [["a"], ["a", "b"], ["a", "b", "c"], ["b", "c", "d"], ["c", "d", "e"]]
    assert u1.long_len.tolist() == [1, 2, 3, 3, 3]


def _naive_windows(log, keys, n):
    """Reference: for each event, the last n events of the same group with (time, row) <= its own."""
    df = log.assign(row=np.arange(len(log))).sort_values(["user_id", "timestamp", "row"], kind="stable")
    out = {}
    for _, g in df.groupby(keys, sort=False):
        items = g.item_id.tolist()
        for i, r in enumerate(g.itertuples()):
            out[(r.user_id, getattr(r, "scenario", None) if "scenario" in keys else None, r.row)] = items[max(0, i - n + 1): i + 1]
    return df, out


def test_windows_match_a_naive_reference_and_hold_no_future_items():
    rng = np.random.default_rng(0)
    n = 400
    log = pd.DataFrame({
        "user_id": rng.choice(["u1", "u2", "u3", "u4"], n).astype(object),
        "item_id": rng.choice([f"i{k}" for k in range(30)], n).astype(object),
        "timestamp": rng.integers(0, 60, n),  # many ties
        "scenario": rng.choice(["s1", "s2", "s3"], n).astype(object),
    })
    sids = pd.DataFrame({"item_id": [f"i{k}" for k in range(30)], "sid_0": np.arange(30), "sid_1": np.arange(30) + 100})
    df, ref = _naive_windows(log, ["user_id", "scenario"], 5)
    st = short_term_table(log, sids, n_short=5)
    ev = event_micros(log)  # same order as df
    micros = dict(zip(zip(ev.user_id, ev.event_micros), df.row))
    for r in st.itertuples():
        row = micros[(r.user_id, r.event_timestamp.value // 1000)]
        assert list(r.short_item_ids) == ref[(r.user_id, r.scenario, row)]
        assert list(r.short_sids) == [v for it in r.short_item_ids for v in (int(it[1:]), int(it[1:]) + 100)]
    # no future item: every window item has an event time <= the row's time (same user and scenario)
    times = ev.assign(scenario=df.scenario.to_numpy())
    for r in st.sample(50, random_state=0).itertuples():
        t = r.event_timestamp.value // 1000
        past = times[(times.user_id == r.user_id) & (times.scenario == r.scenario) & (times.event_micros <= t)]
        assert list(r.short_item_ids) == past.item_id.tolist()[-5:]
    _, ref_long = _naive_windows(log, ["user_id"], 7)
    lt = long_term_table(log, n_long=7)
    for r in lt.itertuples():
        assert list(r.long_item_ids) == ref_long[(r.user_id, None, micros[(r.user_id, r.event_timestamp.value // 1000)])]


def test_training_entities_leave_last_out_and_timestamps():
    ent = training_entities(_log())
    u1 = ent[ent.user_id == "u1"]
    assert u1.item_id.tolist() == ["a", "b", "c", "d", "e"]
    assert u1.split.tolist() == ["train", "train", "train", "valid", "test"]
    assert ent[ent.user_id == "u2"].split.tolist() == ["train", "train"]  # < 3 interactions: all train
    # just before the target: the target's own state row (stamped at its micros) can never be joined
    assert [t.value // 1000 for t in u1.event_timestamp] == [10 * US - 1, 15 * US - 1, 20 * US - 1, 20 * US, 40 * US - 1]
    assert u1.position.tolist() == [0, 1, 2, 3, 4]
    assert str(ent.event_timestamp.dt.tz) == "UTC"
    assert training_entities(_log(), split="test").item_id.tolist() == ["e"]
    assert set(training_entities(_log(), split=["train", "valid"]).split) == {"train", "valid"}
    with pytest.raises(ValueError, match="split"):
        training_entities(_log(), split="val")


def test_training_entities_agree_with_the_shared_split():
    rng = np.random.default_rng(1)
    n = 300
    log = pd.DataFrame({
        "user_id": rng.choice([f"u{k}" for k in range(12)], n).astype(object),
        "item_id": rng.choice([f"i{k}" for k in range(20)], n).astype(object),
        "timestamp": rng.integers(0, 40, n),
        "scenario": "s",
    })
    ent = training_entities(log)
    sp = leave_last_out(log)
    for name, frame in (("valid", sp.valid), ("test", sp.test)):
        mine = ent[ent.split == name].set_index("user_id").item_id.sort_index()
        theirs = frame.set_index("user_id").item_id.sort_index()
        assert mine.equals(theirs)
    assert (ent.split == "train").sum() == len(sp.train)


def test_item_features_popularity_only_from_closed_days():
    day = 86_400
    log = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["a", "a", "a", "b"],
                        "timestamp": [10, 20, 2 * day + 5, 2 * day + 6], "scenario": "s"})
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": "t", "category": ["x", "y", None], "price": [1.0, None, 3.0]})
    sids = pd.DataFrame({"item_id": ["c", "b", "a"], "sid_0": [3, 2, 1], "sid_1": [0, 0, 0]})
    it = item_features_table(items, sids, log)
    rows = {(r.item_id, r.event_timestamp.value // 1000 // US): r.popularity_count for r in it.itertuples()}
    assert rows == {("a", 0): 0, ("b", 0): 0, ("c", 0): 0, ("a", day): 2, ("a", 3 * day): 3, ("b", 3 * day): 1}
    a = it[it.item_id == "a"].iloc[-1]
    assert list(a.sid_codes) == [1, 0] and a.category == "x" and a.price == 1.0
    assert np.isclose(a.popularity_log, np.log1p(3))
    c = it[it.item_id == "c"].iloc[0]
    assert c.category == "" and c.price == 3.0
    with pytest.raises(ValueError, match="semantic ID"):
        item_features_table(items, sids[sids.item_id != "c"], log)


def test_user_profile_strings_tokens_and_bad_columns():
    users = pd.DataFrame({"user_id": ["u1", "u2"], "age": [31, None], "tags": [["a", "b"], []], "region": ["n", "s"]})
    prof = user_profile_table(users, as_of=100)
    assert prof.age.tolist() == ["31.0", ""] and prof.tags.tolist() == ["a,b", ""]
    assert [list(x) for x in prof.profile_fields] == [["age=31.0", "tags=a,b", "region=n"], ["region=s"]]
    assert (prof.event_timestamp == pd.Timestamp(100, unit="s", tz="UTC")).all()
    assert user_profile_table(users, columns=["region"]).columns.tolist()[:2] == ["user_id", "region"]
    assert len(user_profile_table(users[["user_id"]]).profile_fields.iloc[0]) == 0  # no profile columns is fine
    with pytest.raises(ValueError, match="event_timestamp"):
        user_profile_table(users.assign(event_timestamp=1))
    schema = arrow_schema("user_profile", ["age", "tags", "region"])
    assert schema.names == ["user_id", "age", "tags", "region", "profile_fields", "event_timestamp", "created_timestamp"]


def test_instruction_tables():
    emb = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "instruction_text": ["x", "y", "z"],
                          "instruction_embedding": list(emb), "generator_version": "v1",
                          "generated_at": [100, 100, 200]})
    tab = reasoning_instruction_table(frame)
    assert tab.instruction_text.tolist() == ["y", "z"]  # duplicate (user, time): the last one wins
    assert np.allclose(np.asarray(tab.instruction_embedding.iloc[0]), emb[1])
    assert tab.generated_at.tolist() == [100, 200]
    same = reasoning_instruction_table(frame.assign(generated_at=pd.to_datetime(frame.generated_at, unit="s")))
    assert (same.event_timestamp == tab.event_timestamp).all()
    with pytest.raises(ValueError, match="384"):
        reasoning_instruction_table(frame.assign(instruction_embedding=list(emb[:, :10])))
    scen = scenario_instruction_table({"home": "broad", "cart": "complements"}, {"cart": emb[0], "home": emb[1]})
    assert scen.scenario.tolist() == ["home", "cart"]
    assert np.allclose(np.asarray(scen.scenario_embedding.iloc[0]), emb[1])
    with pytest.raises(ValueError, match="missing"):
        scenario_instruction_table({"home": "broad"}, {"cart": emb[0]})


def test_bad_input_names_the_column():
    log = _log()
    with pytest.raises(ValueError, match="user_id"):
        short_term_table(log.assign(user_id=np.arange(len(log))), _sids())
    with pytest.raises(ValueError, match="timestamp"):
        long_term_table(log.assign(timestamp=log.timestamp.astype(str)))
    with pytest.raises(ValueError, match="scenario"):
        training_entities(log.drop(columns="scenario"))
    with pytest.raises(ValueError, match="semantic ID"):
        short_term_table(log, _sids().iloc[1:])
