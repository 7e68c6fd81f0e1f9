"""Tests for the embedded synthetic world (models/data/synthetic.py).

Most tests share one SMALL world (800 items, 400 users, 60 days from 2026-09-01, i.e. up to 2026-10-30) built once
per module; one test builds the default world to check its size and speed. The behavioural tests measure the
structure later stages rely on, with margins well below the values measured on several seeds.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import numpy as np
import pandas as pd
import pytest

from models.data.schema import ACTIONS
from models.data.synthetic import (
    COMPLEMENTS,
    HOLIDAYS,
    LIFE_EVENTS,
    World,
    WorldConfig,
    generate_world,
    write_world,
)
from models.data.synthetic_catalog import ADDON_SUBCATEGORIES, SUBCATEGORIES, calendar_activity

SMALL = WorldConfig(n_items=800, n_users=400, n_days=60, seed=7)
ITEM_COLUMNS = ["item_id", "title", "category", "brand", "price", "description", "top_category", "subcategory", "popularity"]
USER_COLUMNS = ["user_id", "age_band", "region", "price_sensitivity", "life_event", "life_event_day", "top_interests"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "scenario", "action", "query", "intent"]


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SMALL)


@pytest.fixture(scope="module")
def joined(world: World) -> pd.DataFrame:
    """Interactions with the item's subcategory, top category and price, the user's profile and the day."""
    items = world.items.set_index("item_id")[["title", "subcategory", "top_category", "price"]]
    ix = world.interactions.join(items, on="item_id")
    ix = ix.merge(world.users, on="user_id", how="left", validate="many_to_one")
    ix["day"] = (ix["timestamp"] - SMALL.start_timestamp) // 86400
    return ix


def _date_day(date: str) -> int:
    return (dt.date.fromisoformat(date) - dt.date.fromisoformat(SMALL.start_date)).days


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_frames(world: World) -> None:
    again = generate_world(SMALL)
    pd.testing.assert_frame_equal(world.items, again.items)
    pd.testing.assert_frame_equal(world.users, again.users)
    pd.testing.assert_frame_equal(world.interactions, again.interactions)


def test_different_seed_gives_different_world(world: World) -> None:
    other = generate_world(WorldConfig(n_items=800, n_users=400, n_days=60, seed=8))
    assert not world.items[["title", "price"]].equals(other.items[["title", "price"]])
    assert not world.interactions.head(200).equals(other.interactions.head(200))


# ------------------------------------------------------------------------------------------------ schema
def test_columns_dtypes_and_ids(world: World) -> None:
    items, users, ix = world.items, world.users, world.interactions
    assert list(items.columns) == ITEM_COLUMNS
    assert list(users.columns) == USER_COLUMNS
    assert list(ix.columns) == INTERACTION_COLUMNS
    assert len(items) == SMALL.n_items and len(users) == SMALL.n_users
    assert items["item_id"].is_unique and users["user_id"].is_unique
    assert items["item_id"].str.fullmatch(r"i\d{6}").all() and users["user_id"].str.fullmatch(r"u\d{5}").all()
    for frame, cols in ((items, ["item_id", "title", "category", "brand", "description", "subcategory"]),
                        (users, ["user_id", "age_band", "region", "price_sensitivity", "life_event", "top_interests"]),
                        (ix, ["user_id", "item_id", "scenario", "action", "query", "intent"])):
        for c in cols:
            assert frame[c].map(type).eq(str).all(), c
    assert items["price"].dtype == np.float64 and (items["price"] > 0).all()
    assert items["popularity"].dtype == np.float64 and (items["popularity"] > 0).all()
    assert ix["timestamp"].dtype == np.int64 and users["life_event_day"].dtype == np.int64
    assert items["category"].str.contains(" > ").all()
    assert set(items["subcategory"]) == set(SUBCATEGORIES)  # every subcategory has an item
    assert set(ix["action"]) == set(ACTIONS)
    assert set(users["region"]) == {"north", "south", "east", "west", "central"}
    assert set(users["price_sensitivity"]) == {"low", "mid", "high"}
    # life events: name and day together, the trigger purchase on that day
    has = users["life_event"] != ""
    assert set(users.loc[has, "life_event"]) <= set(LIFE_EVENTS)
    assert (users.loc[has, "life_event_day"].between(0, SMALL.n_days - 1)).all()
    assert (users.loc[~has, "life_event_day"] == -1).all()
    assert 0.2 < has.mean() < 0.4  # life_event_rate = 0.3


def test_titles_are_readable(world: World) -> None:
    titles = world.items["title"]
    assert titles.str.len().between(8, 120).all()
    noun_in_title = [SUBCATEGORIES[s].noun in t for s, t in zip(world.items["subcategory"], titles)]
    assert all(noun_in_title)
    assert (world.items["description"].str.len() > 20).all()


def test_referential_integrity_window_and_order(world: World) -> None:
    ix = world.interactions
    assert ix["item_id"].isin(world.items["item_id"]).all()
    assert ix["user_id"].isin(world.users["user_id"]).all()
    assert ix["timestamp"].min() >= SMALL.start_timestamp
    assert ix["timestamp"].max() < SMALL.end_timestamp
    key = list(zip(ix["user_id"], ix["timestamp"]))
    assert key == sorted(key)
    assert not ix.duplicated(["user_id", "timestamp"]).any()  # unique per user
    assert ix.groupby("user_id").size().min() >= 5
    assert ix["user_id"].nunique() == SMALL.n_users
    assert set(ix["scenario"]) == set(SMALL.scenarios)
    assert (ix.loc[ix["scenario"] != "search", "query"] == "").all()
    assert (ix.loc[ix["scenario"] == "search", "query"] != "").all()


def test_restricted_scenarios_are_respected() -> None:
    cfg = WorldConfig(n_items=200, n_users=50, n_days=20, seed=1, scenarios=("homepage", "search"))
    ix = generate_world(cfg).interactions
    assert set(ix["scenario"]) == {"homepage", "search"}
    assert ix.groupby("user_id").size().min() >= 5


def test_bad_config_raises_value_error() -> None:
    with pytest.raises(ValueError, match="scenarios"):
        WorldConfig(scenarios=("homepage", "nope"))
    with pytest.raises(ValueError, match="n_items"):
        WorldConfig(n_items=10)
    with pytest.raises(ValueError, match="start_date"):
        WorldConfig(start_date="09/01/2026")


def test_write_world_round_trips(world: World, tmp_path) -> None:
    paths = write_world(world, tmp_path / "world")
    assert set(paths) == {"items", "users", "interactions"}
    for name, frame in (("items", world.items), ("users", world.users), ("interactions", world.interactions)):
        assert paths[name].name == f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(paths[name]), frame)
    assert sorted(p.name for p in (tmp_path / "world").iterdir()) == ["interactions.parquet", "items.parquet", "users.parquet"]


# ------------------------------------------------------------------------------------------------ behaviour
def complement_rate(ix: pd.DataFrame, scenario: str) -> float:
    """Share of ``scenario`` events whose subcategory complements a subcategory the user clicked/carted/ordered
    earlier (any session)."""
    hits = total = 0
    engaged_rank = ix["action"].isin(["click", "cart", "order"]).to_numpy()
    for _, g in ix.groupby("user_id", sort=False):  # loop over users (a test statistic, not a hot path)
        seen: set[str] = set()
        for sub, scen, eng in zip(g["subcategory"], g["scenario"], engaged_rank[g.index]):
            if scen == scenario:
                total += 1
                hits += any(sub in COMPLEMENTS[s] for s in seen)
            if eng:
                seen.add(sub)
    return hits / total


def same_as_previous_rate(ix: pd.DataFrame, scenario: str) -> float:
    prev = ix.groupby("user_id")["subcategory"].shift(1)
    m = (ix["scenario"] == scenario) & prev.notna()
    return float((ix.loc[m, "subcategory"] == prev[m]).mean())


def outside_interest_rate(ix: pd.DataFrame, scenario: str) -> float:
    m = ix["scenario"] == scenario
    inside = [t in s.split(",") for t, s in zip(ix.loc[m, "top_category"], ix.loc[m, "top_interests"])]
    return 1.0 - float(np.mean(inside))


def mean_user_entropy(ix: pd.DataFrame, scenario: str, k: int = 6) -> float:
    """Mean entropy (nats) of the top categories of each user's first k events in ``scenario``."""
    g = ix[ix["scenario"] == scenario].groupby("user_id").head(k)
    g = g[g.groupby("user_id")["user_id"].transform("size") == k]
    p = g.groupby(["user_id", "top_category"]).size() / k
    return float((-(p * np.log(p))).groupby("user_id").sum().mean())


def test_cart_recommends_complements(joined: pd.DataFrame) -> None:
    cart, home = complement_rate(joined, "cart"), complement_rate(joined, "homepage")
    assert cart > 0.8 and cart > home + 0.4, (cart, home)


def test_product_detail_is_similar_to_previous_item(joined: pd.DataFrame) -> None:
    pdp, feed = same_as_previous_rate(joined, "product_detail"), same_as_previous_rate(joined, "feed")
    assert pdp > 0.7 and pdp > feed + 0.4, (pdp, feed)


def test_feed_explores_more_than_homepage(joined: pd.DataFrame) -> None:
    out_feed, out_home = outside_interest_rate(joined, "feed"), outside_interest_rate(joined, "homepage")
    assert out_feed > out_home + 0.1, (out_feed, out_home)
    h_feed, h_home = mean_user_entropy(joined, "feed"), mean_user_entropy(joined, "homepage")
    assert h_feed > h_home + 0.1, (h_feed, h_home)


def test_search_results_match_the_query(joined: pd.DataFrame) -> None:
    s = joined[joined["scenario"] == "search"]
    tok = lambda text: set(re.findall(r"[a-z0-9]+", text.lower()))  # noqa: E731
    match = [tok(q) <= tok(t) for q, t in zip(s["query"], s["title"])]
    assert np.mean(match) > 0.85, np.mean(match)


def test_checkout_suggests_cheap_addons(world: World, joined: pd.DataFrame) -> None:
    co = joined[joined["scenario"] == "checkout"]
    assert co["price"].mean() < 0.3 * world.items["price"].mean()
    assert co["subcategory"].isin(ADDON_SUBCATEGORIES).mean() > 0.95


def test_funnel_converts_more_on_cart_and_checkout(joined: pd.DataFrame) -> None:
    order = joined.assign(o=joined["action"] == "order").groupby("scenario")["o"].mean()
    assert min(order["cart"], order["checkout"]) > 2 * max(order["homepage"], order["feed"]), order.to_dict()


def test_halloween_boosts_costumes(joined: pd.DataFrame) -> None:
    costume = joined["subcategory"] == "costumes"
    early = costume[joined["day"] < _date_day("2026-09-15")].mean()
    late = costume[joined["day"].between(_date_day("2026-10-18"), _date_day("2026-10-31"))].mean()
    assert late > 3 * early and late > 0.03, (early, late)


def test_back_to_school_early_september(joined: pd.DataFrame) -> None:
    school = joined["subcategory"].isin(["school_supplies", "backpacks", "textbooks", "pens", "planners"])
    early = school[joined["day"] < _date_day("2026-09-15")].mean()
    late = school[joined["day"] >= _date_day("2026-10-10")].mean()
    assert early > 2 * late, (early, late)


def test_winter_comes_earlier_in_the_north(joined: pd.DataFrame) -> None:
    winter = next(h for h in HOLIDAYS if h.name == "winter_onset")
    window = joined["day"] >= _date_day("2026-10-15")
    share = joined[window].assign(w=joined["subcategory"].isin(winter.subcategories)).groupby("region")["w"].mean()
    assert share["north"] > 1.5 * share["south"], share.to_dict()
    act = calendar_activity(SMALL.start_date, SMALL.n_days)
    assert act[:, 0, HOLIDAYS.index(winter)].sum() > act[:, 1, HOLIDAYS.index(winter)].sum()


def test_life_events_shift_purchases_to_targets(joined: pd.DataFrame) -> None:
    ev = joined[(joined["life_event"] != "") & (joined["action"] != "view")].copy()
    targets = {name: set(e.targets) for name, e in LIFE_EVENTS.items()}
    ev["target"] = [s in targets[e] for s, e in zip(ev["subcategory"], ev["life_event"])]
    dur = ev["life_event"].map({k: e.duration_days for k, e in LIFE_EVENTS.items()})
    after = ev["day"].between(ev["life_event_day"] + 1, ev["life_event_day"] + dur)
    before = ev["day"] < ev["life_event_day"]
    share_after, share_before = ev.loc[after, "target"].mean(), ev.loc[before, "target"].mean()
    assert share_after > 3 * share_before and share_after > 0.25, (share_before, share_after)
    # the trigger: each life-event user ordered a trigger item on the event day
    trig = {name: set(e.trigger) for name, e in LIFE_EVENTS.items()}
    on_day = joined[(joined["life_event"] != "") & (joined["day"] == joined["life_event_day"]) & (joined["action"] == "order")]
    ok = on_day[[s in trig[e] for s, e in zip(on_day["subcategory"], on_day["life_event"])]]
    assert ok["user_id"].nunique() == (joined.drop_duplicates("user_id")["life_event"] != "").sum()


def test_price_sensitivity_shifts_price_level(world: World, joined: pd.DataFrame) -> None:
    chosen = joined[joined["intent"] != "popular"]  # popular picks ignore the user's price preference
    raw = chosen.groupby("price_sensitivity")["price"].mean()
    assert raw["low"] > 1.15 * raw["high"], raw.to_dict()
    # controlling for the category mix: log price relative to the subcategory's median catalog price
    median = world.items.groupby("subcategory")["price"].median()
    rel = np.log(chosen["price"] / chosen["subcategory"].map(median))
    by = rel.groupby(chosen["price_sensitivity"]).mean()
    assert by["low"] > by["mid"] > by["high"] and by["low"] - by["high"] > 0.25, by.to_dict()


def test_interests_drift_but_persist(joined: pd.DataFrame) -> None:
    """Interest-driven events mostly fall in top_interests, and the top-category mix of the first and last
    thirds differs (slow drift) by more than between two random halves of the same period."""
    it = joined[joined["intent"] == "interest"]
    inside = np.mean([t in s.split(",") for t, s in zip(it["top_category"], it["top_interests"])])
    assert inside > 0.6, inside

    def l1(a: pd.DataFrame, b: pd.DataFrame) -> float:
        pa = a.groupby(["user_id", "top_category"]).size() / a.groupby("user_id").size()
        pb = b.groupby(["user_id", "top_category"]).size() / b.groupby("user_id").size()
        users = pa.index.get_level_values(0).unique().intersection(pb.index.get_level_values(0).unique())
        d = pa.unstack(fill_value=0).reindex(users).sub(pb.unstack(fill_value=0).reindex(users), fill_value=0)
        return float(d.abs().sum(axis=1).mean())

    n = SMALL.n_days
    first, last = it[it["day"] < n // 3], it[it["day"] >= 2 * n // 3]
    both = pd.concat([first, last])
    shuffled = np.random.default_rng(0).permutation(len(both)) < len(first)  # same sizes, no time order
    drift, control = l1(first, last), l1(both[shuffled], both[~shuffled])
    assert drift > control + 0.05, (drift, control)


# ------------------------------------------------------------------------------------------------ default size
def test_default_world_size_and_speed() -> None:
    t = time.perf_counter()
    w = generate_world(WorldConfig())
    elapsed = time.perf_counter() - t
    assert elapsed < 15.0, elapsed
    assert 100_000 <= len(w.interactions) <= 200_000, len(w.interactions)
    assert w.interactions.groupby("user_id").size().min() >= 5
    assert set(w.interactions["scenario"]) == set(WorldConfig().scenarios)
