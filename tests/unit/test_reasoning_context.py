import datetime as dt

import numpy as np
import pandas as pd
import pytest

from models.data.synthetic import WorldConfig, generate_world
from models.reasoning.context import (
    GENERIC_CALENDAR,
    HIDDEN_USER_COLUMNS,
    UserContext,
    build_user_contexts,
    calendar_at,
    to_prompt,
)

DAY = 86400


def ts(date: str, hour: int = 12) -> int:
    d = dt.date.fromisoformat(date)
    return int(dt.datetime(d.year, d.month, d.day, hour, tzinfo=dt.timezone.utc).timestamp())


def _items(with_sub: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "item_id": ["i0", "i1", "i2", "i3", "i4"],
            "title": ["Cuddlebug foldable stroller", "Voltix 5g smartphone", "Voltix braided phone cable",
                      "Homely heavy-duty moving boxes", "Stride running shoes"],
            "category": ["Baby > Strollers", "Electronics > Smartphones", "Electronics > Phone Cables",
                         "Home > Moving Boxes", "Sports > Running Shoes"],
            "brand": ["Cuddlebug", "Voltix", "Voltix", "Homely", "Stride"],
            "price": [200.0, 600.0, 10.0, 30.0, 90.0],
            "description": [""] * 5,
        }
    )
    if with_sub:
        frame["subcategory"] = ["strollers", "smartphones", "phone_cables", "moving_boxes", "running_shoes"]
    return frame


AS_OF = ts("2026-10-25", 0)


def _log() -> pd.DataFrame:
    rows = [
        # user a: orders a stroller, carts a phone (never orders it), carts a cable then orders it
        ("a", "i0", AS_OF - 6 * DAY, "search", "order", "foldable stroller"),
        ("a", "i1", AS_OF - 2 * DAY, "product_detail", "cart", ""),
        ("a", "i2", AS_OF - 3 * DAY, "cart", "cart", ""),
        ("a", "i2", AS_OF - 1 * DAY, "checkout", "order", ""),
        ("a", "i4", AS_OF - 1 * DAY + 60, "search", "view", "running shoes"),
        ("a", "i4", AS_OF - 1 * DAY + 120, "search", "view", "foldable stroller"),
        # leakage probes for user a: at as_of, after as_of, before the window
        ("a", "i3", AS_OF, "homepage", "order", "moving boxes"),
        ("a", "i3", AS_OF + DAY, "homepage", "order", "moving boxes"),
        ("a", "i3", AS_OF - 31 * DAY, "homepage", "order", "moving boxes"),
        # user b: only events after as_of
        ("b", "i3", AS_OF + 10, "homepage", "order", ""),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "scenario", "action", "query"])
    frame["intent"] = "life_event"  # hidden truth column: must be ignored
    return frame


def _users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "age_band": ["25-34", "45-54", "65+"],
            "region": ["north", "south", "nowhere"],
            "price_sensitivity": ["mid", "high", "low"],
            "life_event": ["new_baby", "", ""],
            "life_event_day": [3, -1, -1],
            "top_interests": ["baby", "home", "books"],
        }
    )


def _by_user(contexts):
    return {c.user_id: c for c in contexts}


def test_point_in_time_and_fields():
    ctxs = _by_user(build_user_contexts(_log(), _items(), _users(), AS_OF))
    assert list(ctxs) == ["a", "b", "c"]  # users-table order, no-history users included
    a = ctxs["a"]
    assert isinstance(a, UserContext) and a.as_of == AS_OF
    # nothing at or after as_of, nothing before the 30-day window
    assert all(AS_OF - 30 * DAY <= e.timestamp < AS_OF for e in a.events)
    assert "i3" not in {e.item_id for e in a.events}
    assert a.n_events == 6
    assert [e.timestamp for e in a.events] == sorted(e.timestamp for e in a.events)
    # orders newest first; cart = carted and not ordered afterwards
    assert [e.item_id for e in a.orders] == ["i2", "i0"]
    assert [e.item_id for e in a.cart] == ["i1"]
    assert a.orders[1].subcategory == "strollers" and a.orders[1].title.startswith("Cuddlebug")
    # distinct queries, newest first
    assert a.queries == ("foldable stroller", "running shoes")
    # scores: order 4 per order row, view 1, cart 3
    assert dict(a.top_subcategories)["phone_cables"] == 7.0
    assert a.top_subcategories[0][0] == "phone_cables"
    assert dict(a.top_categories)["Electronics > Phone Cables"] == 7.0
    # b: only future events -> empty context
    assert not ctxs["b"].has_history and ctxs["b"].events == () and ctxs["b"].orders == ()
    # profile without hidden truth columns
    for c in ctxs.values():
        assert not set(HIDDEN_USER_COLUMNS) & set(c.profile)
    assert a.profile == {"age_band": "25-34", "region": "north", "price_sensitivity": "mid"}
    assert a.region == "north"


def test_future_events_do_not_change_the_context():
    log = _log()
    base = build_user_contexts(log, _items(), _users(), AS_OF)
    noisy = pd.concat(
        [log, pd.DataFrame({"user_id": ["a", "c"], "item_id": ["i1", "i0"], "timestamp": [AS_OF, AS_OF + 5],
                            "scenario": ["cart", "cart"], "action": ["order", "order"], "query": ["x", "y"],
                            "intent": ["", ""]})],
        ignore_index=True,
    )
    noisy["intent"] = "something else"
    assert build_user_contexts(noisy, _items(), _users(), AS_OF) == base


def test_per_user_as_of_series_and_max_events():
    as_of = pd.Series({"a": AS_OF - 2 * DAY, "b": AS_OF + DAY})
    ctxs = _by_user(build_user_contexts(_log(), _items(), _users(), as_of, max_events=2))
    assert list(ctxs) == ["a", "b"]  # the Series decides the users
    a = ctxs["a"]
    assert a.as_of == AS_OF - 2 * DAY
    assert a.n_events == 3  # moving boxes (now inside the window), stroller order, cable cart
    assert [e.item_id for e in a.events] == ["i0", "i2"]
    assert [e.item_id for e in a.cart] == ["i2"]  # its order comes later than as_of
    b = ctxs["b"]
    assert [e.item_id for e in b.events] == ["i3"]
    a3 = _by_user(build_user_contexts(_log(), _items(), _users(), AS_OF, max_events=3))["a"]
    assert a3.n_events == 6 and len(a3.events) == 3
    assert [e.timestamp for e in a3.events] == sorted(e.timestamp for e in _by_user(
        build_user_contexts(_log(), _items(), _users(), AS_OF))["a"].events)[-3:]


def test_calendar_regional_and_generic():
    late_oct = ts("2026-10-25")
    north = {c.name for c in calendar_at(late_oct, "north")}
    south = {c.name for c in calendar_at(late_oct, "south")}
    assert {"halloween", "winter_onset", "singles_day"} <= north
    assert "winter_onset" not in south and "halloween" in south
    halloween = next(c for c in calendar_at(late_oct, "north") if c.name == "halloween")
    assert halloween.days_left == 6 and 0 < halloween.activity <= 1
    assert calendar_at(ts("2026-07-01"), "north") == ()
    # unknown region: unshifted; without a subcategory column the generic calendar is used
    ctxs = _by_user(build_user_contexts(_log(), _items(with_sub=False), _users(), AS_OF))
    assert {c.name for c in ctxs["a"].calendar} <= {e.name for e in GENERIC_CALENDAR}
    assert "halloween" in {c.name for c in ctxs["c"].calendar}
    assert all(e.subcategory == "" for e in ctxs["a"].events)
    assert ctxs["a"].top_subcategories == ()


def test_price_level_from_purchases():
    items = _items()
    extra = pd.DataFrame({"item_id": ["i5", "i6"], "title": ["cheap stroller", "luxury stroller"],
                          "category": ["Baby > Strollers"] * 2, "brand": ["x", "y"], "price": [100.0, 400.0],
                          "description": ["", ""], "subcategory": ["strollers", "strollers"]})
    items = pd.concat([items, extra], ignore_index=True)  # stroller median = 200
    log = pd.DataFrame({"user_id": ["cheap", "rich"], "item_id": ["i5", "i6"], "timestamp": [AS_OF - DAY] * 2,
                        "scenario": ["cart"] * 2, "action": ["order"] * 2})
    ctxs = _by_user(build_user_contexts(log, items, None, AS_OF))
    assert ctxs["cheap"].price_level == "budget" and ctxs["cheap"].price_ratio == pytest.approx(0.5)
    assert ctxs["rich"].price_level == "premium" and ctxs["rich"].price_ratio == pytest.approx(2.0)
    assert ctxs["cheap"].profile == {} and ctxs["cheap"].region is None
    assert ctxs["cheap"].queries == ()  # no query column: defaults to ""


def _reference(world, as_of, window_days=30, max_events=30):
    """Naive per-user reference (slow, obviously right) for events / orders / cart / queries."""
    it = world.items.set_index("item_id")
    ix = world.interactions
    out = {}
    for uid, g in ix.groupby("user_id", sort=False):
        g = g[(g.timestamp < as_of) & (g.timestamp >= as_of - window_days * DAY)].sort_values("timestamp", kind="stable")
        events = list(g.item_id)[-max_events:]
        orders = list(g[g.action == "order"].item_id)[::-1][:10]
        cart = []
        for item, gi in g.groupby("item_id"):
            c = gi[gi.action == "cart"].timestamp.max()
            o = gi[gi.action == "order"].timestamp.max()
            if pd.notna(c) and (pd.isna(o) or c > o):
                cart.append((c, item))
        cart = [i for _, i in sorted(cart, reverse=True)][:10]
        queries = list(dict.fromkeys(q for q in g["query"].iloc[::-1] if q))[:5]
        out[uid] = (events, orders, cart, queries, int(len(g)))
    return out, it


def test_matches_naive_reference_on_synthetic_world():
    cfg = WorldConfig(n_users=60, n_items=500, n_days=40, seed=3)
    world = generate_world(cfg)
    as_of = cfg.start_timestamp + 30 * DAY + 3600
    ref, it = _reference(world, as_of)
    ctxs = _by_user(build_user_contexts(world.interactions, world.items, world.users, as_of))
    assert len(ctxs) == 60
    checked = 0
    for uid, (events, orders, cart, queries, n) in ref.items():
        c = ctxs[uid]
        assert [e.item_id for e in c.events] == events
        assert [e.item_id for e in c.orders] == orders
        assert [e.item_id for e in c.cart] == cart
        assert list(c.queries) == queries
        assert c.n_events == n
        assert all(e.timestamp < as_of for e in c.events + c.orders + c.cart)
        assert all(e.subcategory == it.loc[e.item_id, "subcategory"] for e in c.events)
        checked += n > 0
    assert checked > 40


def test_to_prompt_renders_context_without_hidden_truth():
    ctxs = _by_user(build_user_contexts(_log(), _items(), _users(), AS_OF))
    text = to_prompt(ctxs["a"])
    assert "Cuddlebug foldable stroller" in text and "order" in text
    assert "halloween" in text and "winter_onset" in text
    assert '"foldable stroller"' in text and "In cart" in text
    assert "new_baby" not in text and "life_event" not in text
    assert to_prompt(ctxs["a"]) == text  # deterministic
    empty = to_prompt(ctxs["b"])
    assert "No activity" in empty and "45-54" in empty


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="item_id"):
        build_user_contexts(_log().drop(columns="item_id"), _items(), None, AS_OF)
    with pytest.raises(ValueError, match="title"):
        build_user_contexts(_log(), _items().drop(columns="title"), None, AS_OF)
    with pytest.raises(ValueError, match="no value for user"):
        build_user_contexts(_log(), _items(), None, pd.Series({"a": AS_OF}), user_ids=["a", "zz"])
    with pytest.raises(ValueError, match="as_of"):
        build_user_contexts(_log(), _items(), None, "yesterday")
    with pytest.raises(ValueError, match="duplicate ids"):
        build_user_contexts(_log(), pd.concat([_items(), _items()]), None, AS_OF)
    with pytest.raises(ValueError, match="window_days"):
        build_user_contexts(_log(), _items(), None, AS_OF, window_days=0)


def test_empty_interactions_give_empty_contexts():
    log = _log().iloc[:0]
    ctxs = build_user_contexts(log, _items(), _users(), AS_OF)
    assert [c.user_id for c in ctxs] == ["a", "b", "c"]
    assert not any(c.has_history for c in ctxs)
    assert {c.name for c in ctxs[0].calendar} >= {"halloween", "winter_onset"}  # calendar-only context


def test_garbage_collector_state_is_restored():
    import gc

    assert gc.isenabled()
    build_user_contexts(_log(), _items(), _users(), AS_OF)
    assert gc.isenabled()
    gc.disable()
    try:
        build_user_contexts(_log(), _items(), _users(), AS_OF)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_requests_with_repeated_users_each_see_their_own_past():
    """One context per (user, as_of) request: the same user twice, each built as if alone at its time."""
    times = [AS_OF - 2 * DAY, AS_OF, AS_OF + 2 * DAY]
    ctxs = build_user_contexts(_log(), _items(), _users(), np.array(times), user_ids=["a", "a", "b"])
    alone = [build_user_contexts(_log(), _items(), _users(), t, user_ids=[u])[0] for u, t in zip(["a", "a", "b"], times)]
    assert ctxs == alone
    assert [c.n_events for c in ctxs] == [3, 6, 1]
    assert all(e.timestamp < c.as_of for c in ctxs for e in c.events)


def test_users_table_with_ids_only_gives_empty_profiles():
    ids_only = _users()[["user_id"]]
    ctxs = _by_user(build_user_contexts(_log(), _items(), ids_only, AS_OF))
    assert ctxs["a"].profile == {} and ctxs["a"].n_events == 6


def test_activity_requests_one_per_user_and_window():
    from models.reasoning.refresh import activity_requests

    log = pd.DataFrame({"user_id": ["a", "a", "a", "b", "a"],
                        "timestamp": [1000, 1100, 1250, 1290, 5000]})
    req = activity_requests(log, 0, 10_000, 300)  # windows [900, 1200) and [1200, 1500) for a; b in the second
    assert req.values.tolist() == [["a", 1200], ["a", 1500], ["b", 1500], ["a", 5100]]
    assert activity_requests(log, 1200, 1500, 300).values.tolist() == [["a", 1200]]  # end-exclusive range
    with pytest.raises(ValueError, match="window_s"):
        activity_requests(log, 0, 1, 0)
