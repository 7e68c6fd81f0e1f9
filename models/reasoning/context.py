"""Point-in-time user contexts for the "slow thinking" reasoner (what an LLM would be shown about a user).

:func:`build_user_contexts` turns the standard-schema tables into one :class:`UserContext` per user, using only
what is observable at ``as_of`` (Unix seconds, per user or global):

- rows kept: ``as_of - 86400 * window_days <= timestamp < as_of`` (strictly before ``as_of``: no leakage).
- ``events``: the last ``max_events`` kept rows, oldest first (title, category, subcategory if the items table has
  one, action, timestamp, scenario, price).
- ``orders``: the last ``max_orders`` rows with ``action == "order"``, newest first.
- ``cart``: items whose latest ``cart`` row is later than their latest ``order`` row (carted, not bought), newest
  first, at most ``max_cart``.
- ``queries``: distinct non-empty search queries, newest first, at most ``max_queries``.
- ``top_categories`` / ``top_subcategories``: ``score(c) = sum over kept rows in c of w(action)`` with
  ``w = {view: 1, click: 2, cart: 3, order: 4}``; the ``max_top`` best, ties broken by name.
- ``price_ratio``: ``exp(mean(log(price_i / median_price(group_i))))`` over kept cart/order rows with a price, where
  ``group`` is the subcategory when known, else the category; ``price_level`` is "budget" below ``exp(-0.15)``,
  "premium" above ``exp(0.15)``, else "mid-price" (None without priced purchases).
- ``calendar``: the calendar events active on the UTC date of ``as_of`` in the user's region (activity > 0 from
  :func:`models.data.synthetic_catalog.calendar_activity`), with ``days_left`` until the range ends. The
  calendar is the synthetic world's :data:`HOLIDAYS` (regional shifts) when the items table has a ``subcategory``
  column, else :data:`GENERIC_CALENDAR` (month-based, no regional shift); unknown regions get no shift.
- ``profile``: every users-table column except ``user_id`` and the hidden ground-truth columns
  (:data:`HIDDEN_USER_COLUMNS`); the interactions' ``intent`` column is never read.

Everything up to the final per-user assembly is vectorized (numpy sorts and group boundaries; no Python loop over
events). :func:`to_prompt` renders a context as plain text for an LLM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gc
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from models.data.synthetic_catalog import HOLIDAYS, REGIONS, CalendarEvent, calendar_activity

HIDDEN_USER_COLUMNS = ("life_event", "life_event_day", "top_interests")  # synthetic ground truth: never read
HIDDEN_INTERACTION_COLUMNS = ("intent",)
ACTION_WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "order": 4.0}
PRICE_BAND = 0.15  # |mean log price ratio| above this is budget / premium
DAY = 86400

# Month-based calendar for datasets without the synthetic taxonomy. ``subcategories`` holds plain keywords here
# (matched against titles/categories downstream), not subcategory keys.
_G = CalendarEvent
GENERIC_CALENDAR: tuple[CalendarEvent, ...] = (
    _G("new_year_sales", "holiday", "12-26", "01-10", ("sale", "clearance", "fitness", "planner"), 0.5),
    _G("valentines_day", "holiday", "02-01", "02-14", ("gift", "jewelry", "perfume", "chocolate", "flowers"), 0.8, ramp_days=7),
    _G("spring", "season", "03-01", "05-31", ("garden", "outdoor", "cleaning", "light jacket"), 0.5, ramp_days=14),
    _G("mothers_day", "holiday", "04-25", "05-12", ("gift", "jewelry", "beauty", "flowers"), 0.6, ramp_days=7),
    _G("summer", "season", "06-01", "08-31", ("swimwear", "travel", "outdoor", "fan", "sunscreen"), 0.7, ramp_days=14),
    _G("back_to_school", "holiday", "08-15", "09-20", ("school supplies", "backpack", "laptop", "notebook", "pens"), 0.6),
    _G("halloween", "holiday", "10-08", "10-31", ("costume", "candy", "decoration", "makeup"), 1.0, ramp_days=10),
    _G("singles_day", "holiday", "10-25", "11-11", ("electronics", "gift", "beauty", "deal"), 0.6, ramp_days=7, deal_event=True),
    _G("black_friday", "holiday", "11-20", "11-30", ("electronics", "tv", "appliance", "deal", "toys"), 0.7, ramp_days=5, deal_event=True),
    _G("christmas_gifting", "holiday", "11-24", "12-24", ("gift", "toys", "decoration", "gift wrap", "books"), 0.6, ramp_days=14),
    _G("winter_onset", "season", "11-01", "02-28", ("coat", "jacket", "boots", "scarf", "heater", "blanket"), 0.8, ramp_days=21),
)


class ContextEvent(NamedTuple):
    """One observed interaction (a NamedTuple: cheap to create by the million, immutable)."""

    item_id: str
    title: str
    category: str
    subcategory: str  # "" when the items table has no subcategory column
    action: str
    timestamp: int
    scenario: str
    price: float  # nan when unknown


class CalendarEntry(NamedTuple):
    name: str  # e.g. "halloween", "winter_onset"
    kind: str  # "holiday" or "season"
    activity: float  # in (0, 1]
    days_left: int  # days until the (regional) range ends, 0 = ends today
    weight: float  # the event's weight at full activity
    targets: tuple[str, ...]  # subcategory keys (synthetic calendar) or keywords (generic calendar)
    deal_event: bool


@dataclass(frozen=True)
class UserContext:
    user_id: str
    as_of: int  # Unix seconds; only events strictly before it are used
    profile: dict  # observable profile columns (age_band, price_sensitivity, region, ...)
    region: str | None
    events: tuple[ContextEvent, ...] = ()  # oldest first, at most max_events
    cart: tuple[ContextEvent, ...] = ()  # carted and not ordered since, newest first
    orders: tuple[ContextEvent, ...] = ()  # newest first
    queries: tuple[str, ...] = ()  # distinct, newest first
    top_categories: tuple[tuple[str, float], ...] = ()  # (category, action-weighted score), best first
    top_subcategories: tuple[tuple[str, float], ...] = ()  # empty when subcategories are unknown
    price_ratio: float | None = None  # geometric mean of price / group median over purchases
    price_level: str | None = None  # "budget" | "mid-price" | "premium" | None
    calendar: tuple[CalendarEntry, ...] = ()  # active events, strongest first
    n_events: int = 0  # all events in the window (before the max_events cut)
    window_days: int = 30

    @property
    def has_history(self) -> bool:
        return self.n_events > 0


@dataclass(frozen=True)
class ContextConfig:
    window_days: int = 30
    max_events: int = 30
    max_orders: int = 10
    max_cart: int = 10
    max_queries: int = 5
    max_top: int = 5


@contextlib.contextmanager
def paused_gc():
    """Pause the cyclic garbage collector while building millions of small acyclic objects (tuples, contexts):
    its repeated full-heap passes made a 100k-user refresh ~1.5x slower. Restores the previous state."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------------------------------- calendar
def _utc_date(ts: int) -> dt.date:
    return dt.datetime.fromtimestamp(int(ts), tz=dt.timezone.utc).date()


_HORIZON = 400  # longest range (winter, ~120 days) plus any regional shift fits comfortably


@functools.lru_cache(maxsize=16)
def _year_table(year: int, events: tuple[CalendarEvent, ...]) -> np.ndarray:
    """Activity from Jan 1st of ``year`` for 366 + _HORIZON days: shape (days, len(REGIONS) + 1, H); the last
    region column is the unshifted calendar (unknown regions)."""
    n = 366 + _HORIZON
    shifted = calendar_activity(f"{year}-01-01", n, events)
    flat = calendar_activity(f"{year}-01-01", n, tuple(dataclasses.replace(e, region_shift_days=()) for e in events))
    return np.concatenate([shifted, flat[:, :1, :]], axis=1)


@functools.lru_cache(maxsize=8192)
def _calendar_for(date_iso: str, region: str | None, events: tuple[CalendarEvent, ...]) -> tuple[CalendarEntry, ...]:
    """Active events on ``date_iso`` for ``region`` (no shift for an unknown region), strongest first.

    Cached per (date, region, calendar): a refresh touches a handful of dates, not one per user.
    """
    date = dt.date.fromisoformat(date_iso)
    d0 = (date - dt.date(date.year, 1, 1)).days
    r = REGIONS.index(region) if region in REGIONS else len(REGIONS)
    act = _year_table(date.year, events)[d0 : d0 + _HORIZON, r, :]
    out = []
    for h, ev in enumerate(events):  # loop over ~10 events
        if act[0, h] <= 0:
            continue
        off = np.flatnonzero(act[:, h] <= 0)
        days_left = int(off[0]) - 1 if len(off) else _HORIZON - 1
        out.append(CalendarEntry(ev.name, ev.kind, float(act[0, h]), days_left, ev.weight, ev.subcategories, ev.deal_event))
    out.sort(key=lambda e: (-e.activity * e.weight, e.name))
    return tuple(out)


def calendar_at(as_of: int, region: str | None, events: Sequence[CalendarEvent] = HOLIDAYS) -> tuple[CalendarEntry, ...]:
    """Calendar events active at ``as_of`` (Unix s, UTC date) in ``region``, strongest first."""
    return _calendar_for(_utc_date(as_of).isoformat(), region, tuple(events))


# --------------------------------------------------------------------------------------------------- helpers
def _require(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing required column(s) {missing}; has {list(frame.columns)}")


def _str_col(frame: pd.DataFrame, col: str, n: int, default: str = "") -> np.ndarray:
    if col not in frame.columns:
        return np.full(n, default, dtype=object)
    return frame[col].fillna(default).astype(str).to_numpy(dtype=object)


def _last_k(group: np.ndarray, k: int) -> np.ndarray:
    """Mask of the last ``k`` rows of each contiguous run of ``group`` (rows sorted by group then time)."""
    if len(group) == 0:
        return np.zeros(0, dtype=bool)
    new = np.r_[True, group[1:] != group[:-1]]
    end = np.r_[np.flatnonzero(new)[1:], len(group)]
    run_end = end[np.cumsum(new) - 1]
    return (run_end - np.arange(len(group))) <= k


def _window_pairs(row_users: np.ndarray, ts: np.ndarray, request_users: np.ndarray, as_of: np.ndarray,
                  window_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(interaction row, request) pairs with the row's user = the request's and ``as_of - window_s <= ts < as_of``.

    Rows are sorted once by (user, time); each request's rows are one contiguous range found with two binary
    searches on the composite key ``user * span + (ts - t0)``; the ranges are expanded without a Python loop."""
    codes, names = pd.factorize(np.concatenate([row_users, request_users]))
    row_u, req_u = codes[: len(row_users)].astype(np.int64), codes[len(row_users):].astype(np.int64)
    t0 = min(int(ts.min(initial=0)), int((as_of - window_s).min(initial=0)))
    span = max(int(ts.max(initial=0)), int(as_of.max(initial=0))) - t0 + 2
    order = np.argsort(row_u * span + (ts - t0), kind="stable")
    keys = (row_u * span + (ts - t0))[order]
    lo = np.searchsorted(keys, req_u * span + (as_of - window_s - t0), side="left")
    hi = np.searchsorted(keys, req_u * span + (as_of - t0), side="left")  # ts < as_of
    length = np.maximum(hi - lo, 0)
    offsets = np.concatenate([[0], np.cumsum(length)[:-1]])
    flat = np.repeat(lo - offsets, length) + np.arange(int(length.sum()), dtype=np.int64)
    return order[flat], np.repeat(np.arange(len(request_users), dtype=np.int64), length)


def _bounds(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Start offsets (length n_groups + 1) of each group in an array sorted by group."""
    return np.searchsorted(group, np.arange(n_groups + 1))


def _top_scores(uc: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_users: int, k: int) -> list[tuple]:
    """Per user, the ``k`` labels with the largest summed weight (ties by label), as tuples of (label, score)."""
    out: list[tuple] = [()] * n_users
    keep = labels != ""
    if not keep.any():
        return out
    frame = pd.DataFrame({"u": uc[keep], "c": labels[keep], "w": weights[keep]})
    agg = frame.groupby(["u", "c"], sort=False)["w"].sum().reset_index()
    agg = agg.sort_values(["u", "w", "c"], ascending=[True, False, True], kind="stable")
    agg = agg[_last_k(agg["u"].to_numpy()[::-1], k)[::-1]]  # first k of each user
    u = agg["u"].to_numpy()
    pairs = list(zip(agg["c"].tolist(), np.round(agg["w"].to_numpy(), 3).tolist()))
    b = _bounds(u, n_users)
    for i in np.flatnonzero(np.diff(b)):  # loop over users that have any
        out[i] = tuple(pairs[b[i] : b[i + 1]])
    return out


def _as_of_array(as_of, user_ids: np.ndarray) -> np.ndarray:
    if isinstance(as_of, (np.ndarray, list, tuple)):  # one as_of per request row (users may repeat)
        arr = np.asarray(as_of)
        if arr.shape != (len(user_ids),) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"as_of as an array must hold one int per user_ids entry ({len(user_ids)}), "
                             f"got shape {arr.shape} dtype {arr.dtype}")
        return arr.astype(np.int64)
    if isinstance(as_of, pd.Series):
        vals = as_of.reindex(pd.Index(user_ids))
        if vals.isna().any():
            missing = list(user_ids[vals.isna().to_numpy()][:5])
            raise ValueError(f"as_of Series has no value for user(s) {missing}")
        return vals.to_numpy().astype(np.int64)
    if isinstance(as_of, (int, np.integer)) and not isinstance(as_of, bool):
        return np.full(len(user_ids), int(as_of), dtype=np.int64)
    raise ValueError(f"as_of must be an int (Unix seconds) or a pandas Series user_id -> int, got {type(as_of).__name__}")


# --------------------------------------------------------------------------------------------------- builder
def build_user_contexts(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    as_of: int | pd.Series | np.ndarray,
    window_days: int = 30,
    max_events: int = 30,
    *,
    user_ids: Sequence[str] | None = None,
    calendar: Sequence[CalendarEvent] | None = None,
    config: ContextConfig | None = None,
) -> list[UserContext]:
    """One :class:`UserContext` per user (see the module docstring for every field).

    Users, in output order: ``user_ids`` if given, else the index of an ``as_of`` Series, else ``users.user_id``,
    else the distinct interaction users in first-seen order. Users without events get an empty context (the
    reasoners turn it into their default instruction). ``calendar`` overrides the automatic choice.

    ``as_of`` is one time for everyone, a Series user_id -> time, or an int array aligned with ``user_ids``: then
    each entry is a request (user, as_of) and a user may appear several times (e.g. one context after each of
    their bursts of activity), each context built from that user's events before its own ``as_of``.
    """
    with paused_gc():
        return _build_user_contexts(interactions, items, users, as_of, window_days, max_events,
                                    user_ids=user_ids, calendar=calendar, config=config)


def _build_user_contexts(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    as_of: int | pd.Series,
    window_days: int = 30,
    max_events: int = 30,
    *,
    user_ids: Sequence[str] | None = None,
    calendar: Sequence[CalendarEvent] | None = None,
    config: ContextConfig | None = None,
) -> list[UserContext]:
    cfg = dataclasses.replace(config or ContextConfig(), window_days=window_days, max_events=max_events)
    if cfg.window_days <= 0 or cfg.max_events <= 0:
        raise ValueError(f"window_days and max_events must be > 0, got {cfg.window_days}, {cfg.max_events}")
    _require(interactions, "interactions", ("user_id", "item_id", "timestamp"))
    _require(items, "items", ("item_id", "title", "category"))
    if users is not None:
        _require(users, "users", ("user_id",))
    has_sub = "subcategory" in items.columns
    events_cal = tuple(calendar) if calendar is not None else (HOLIDAYS if has_sub else GENERIC_CALENDAR)

    # ---- users and their as_of
    if user_ids is not None:
        uids = np.asarray(list(user_ids), dtype=object)
    elif isinstance(as_of, pd.Series):
        uids = as_of.index.astype(str).to_numpy(dtype=object)
    elif users is not None:
        uids = users["user_id"].astype(str).to_numpy(dtype=object)
    else:
        uids = pd.unique(interactions["user_id"].astype(str).to_numpy(dtype=object))
    per_request = isinstance(as_of, (np.ndarray, list, tuple))
    if per_request and user_ids is None:
        raise ValueError("as_of as an array needs user_ids (one request per entry)")
    if not per_request and len(set(uids)) != len(uids):
        raise ValueError("user ids must be unique")
    n_users = len(uids)  # contexts to build (requests)
    as_of_arr = _as_of_array(as_of.set_axis(as_of.index.astype(str)) if isinstance(as_of, pd.Series) else as_of, uids)

    # ---- item attributes, price relative to the item's group median
    item_index = pd.Index(items["item_id"].astype(str))
    if not item_index.is_unique:
        dup = list(item_index[item_index.duplicated()][:5])
        raise ValueError(f"items column 'item_id' has duplicate ids, e.g. {dup}")
    n_items = len(items)
    i_title = _str_col(items, "title", n_items)
    i_cat = _str_col(items, "category", n_items)
    i_sub = _str_col(items, "subcategory", n_items)
    i_price = pd.to_numeric(items["price"], errors="coerce").to_numpy(np.float64) if "price" in items else np.full(n_items, np.nan)
    i_price = np.where(i_price > 0, i_price, np.nan)
    group = i_sub if has_sub else i_cat
    median = pd.Series(i_price).groupby(group).transform("median").to_numpy(np.float64)
    i_logrel = np.log(i_price / median)

    # ---- point-in-time filter (vectorized over all rows): (interaction row, context) pairs in each window
    ts = pd.to_numeric(interactions["timestamp"], errors="coerce").to_numpy()
    if np.isnan(ts.astype(np.float64)).any():
        raise ValueError("interactions column 'timestamp' has missing or non-numeric values")
    ts = ts.astype(np.int64)
    n_rows = len(interactions)
    rows, uc = _window_pairs(interactions["user_id"].astype(str).to_numpy(dtype=object), ts, uids, as_of_arr,
                             DAY * cfg.window_days)
    ts = ts[rows]
    order = np.lexsort((rows, ts, uc))  # by user, then time, then original row (stable)
    rows, uc, ts = rows[order], uc[order], ts[order]
    item_id = interactions["item_id"].astype(str).to_numpy(dtype=object)[rows]
    ii = item_index.get_indexer(item_id)
    known = ii >= 0
    iis = np.maximum(ii, 0)
    title = np.where(known, i_title[iis], "")
    cat = np.where(known, i_cat[iis], "")
    sub = np.where(known, i_sub[iis], "")
    price = np.where(known, i_price[iis], np.nan)
    logrel = np.where(known, i_logrel[iis], np.nan)
    action = _str_col(interactions, "action", n_rows, "click")[rows]
    scenario = _str_col(interactions, "scenario", n_rows)[rows]
    query = _str_col(interactions, "query", n_rows)[rows]
    bounds = _bounds(uc, n_users)
    n_events = np.diff(bounds)

    def make_events(mask: np.ndarray) -> list[ContextEvent]:
        return list(map(ContextEvent._make, zip(
            item_id[mask].tolist(), title[mask].tolist(), cat[mask].tolist(), sub[mask].tolist(),
            action[mask].tolist(), ts[mask].tolist(), scenario[mask].tolist(), price[mask].tolist(),
        )))

    # events: last max_events per user, oldest first
    ev_mask = _last_k(uc, cfg.max_events)
    ev_list, ev_b = make_events(ev_mask), _bounds(uc[ev_mask], n_users)

    # orders: last max_orders, newest first (reverse the slice later)
    is_order = action == "order"
    ou = uc[is_order]
    o_mask = np.zeros(len(uc), dtype=bool)
    o_mask[np.flatnonzero(is_order)[_last_k(ou, cfg.max_orders)]] = True
    o_list, o_b = make_events(o_mask), _bounds(uc[o_mask], n_users)

    # cart: latest cart row per (user, item) later than the latest order of that (user, item)
    item_code = pd.factorize(item_id)[0].astype(np.int64)
    key = uc.astype(np.int64) * (item_code.max(initial=0) + 1) + item_code
    last_order = pd.Series(ts[is_order]).groupby(key[is_order]).max()
    is_cart = action == "cart"
    lo = last_order.reindex(key[is_cart]).to_numpy()
    c_rows = np.flatnonzero(is_cart)[~(lo >= ts[is_cart])]  # nan (never ordered) compares False
    # keep the last cart row of each (user, item): rows are time-sorted inside a user
    c_rows = c_rows[~pd.Series(key[c_rows]).duplicated(keep="last").to_numpy()]
    c_rows = c_rows[_last_k(uc[c_rows], cfg.max_cart)]
    c_mask = np.zeros(len(uc), dtype=bool)
    c_mask[c_rows] = True
    c_list, c_b = make_events(c_mask), _bounds(uc[c_mask], n_users)

    # queries: distinct per user, newest first
    q_rows = np.flatnonzero(query != "")
    q_frame = pd.DataFrame({"u": uc[q_rows], "q": query[q_rows]})
    q_rows = q_rows[~q_frame.duplicated(keep="last").to_numpy()]
    q_rows = q_rows[_last_k(uc[q_rows], cfg.max_queries)]
    q_list, q_b = query[q_rows].tolist(), _bounds(uc[q_rows], n_users)

    # action-weighted category / subcategory scores
    w = pd.Series(action).map(ACTION_WEIGHTS).fillna(1.0).to_numpy(np.float64)
    top_cat = _top_scores(uc, cat, w, n_users, cfg.max_top)
    top_sub = _top_scores(uc, sub, w, n_users, cfg.max_top) if has_sub else [()] * n_users

    # price level of purchases: geometric mean of price / group median
    bought = ((action == "cart") | (action == "order")) & np.isfinite(logrel)
    mean_log = np.full(n_users, np.nan)
    if bought.any():
        s = pd.Series(logrel[bought]).groupby(uc[bought]).mean()
        mean_log[s.index.to_numpy()] = s.to_numpy()

    # ---- profiles (hidden truth columns dropped)
    profiles: list[dict] = [{} for _ in range(n_users)]
    cols = [] if users is None else [c for c in users.columns if c != "user_id" and c not in HIDDEN_USER_COLUMNS]
    if cols:  # a users table with ids only (or none at all) leaves every profile empty
        u_index = pd.Index(users["user_id"].astype(str)).get_indexer(uids)
        recs = users[cols].to_dict("records")
        for i in np.flatnonzero(u_index >= 0):  # per-user assembly
            profiles[i] = {k: v for k, v in recs[u_index[i]].items() if not (isinstance(v, float) and np.isnan(v))}

    # ---- per-user assembly
    out: list[UserContext] = []
    calendars: dict[tuple[int, str | None], tuple[CalendarEntry, ...]] = {}  # (UTC day, region) -> entries
    for i in range(n_users):
        region = profiles[i].get("region")
        region = str(region) if region is not None else None
        cal_key = (int(as_of_arr[i]) // DAY, region)
        if cal_key not in calendars:
            calendars[cal_key] = calendar_at(int(as_of_arr[i]), region, events_cal)
        ml = mean_log[i]
        ratio = None if np.isnan(ml) else float(np.exp(ml))
        level = None if ratio is None else ("budget" if ml < -PRICE_BAND else "premium" if ml > PRICE_BAND else "mid-price")
        out.append(
            UserContext(
                user_id=str(uids[i]),
                as_of=int(as_of_arr[i]),
                profile=profiles[i],
                region=region,
                events=tuple(ev_list[ev_b[i] : ev_b[i + 1]]),
                cart=tuple(c_list[c_b[i] : c_b[i + 1]][::-1]),
                orders=tuple(o_list[o_b[i] : o_b[i + 1]][::-1]),
                queries=tuple(q_list[q_b[i] : q_b[i + 1]][::-1]),
                top_categories=top_cat[i],
                top_subcategories=top_sub[i],
                price_ratio=ratio,
                price_level=level,
                calendar=calendars[cal_key],
                n_events=int(n_events[i]),
                window_days=cfg.window_days,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------- prompt
def _fmt_time(ts: int) -> str:
    return dt.datetime.fromtimestamp(int(ts), tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _fmt_event(e: ContextEvent, as_of: int) -> str:
    ago = (as_of - e.timestamp) / DAY
    where = e.category + (f" / {e.subcategory}" if e.subcategory else "")
    price = "" if e.price != e.price else f", {e.price:.2f}"
    return f"- {_fmt_time(e.timestamp)} ({ago:.1f} days ago) {e.action} via {e.scenario or '?'}: \"{e.title}\" [{where}{price}]"


def to_prompt(ctx: UserContext, max_events: int = 15) -> str:
    """Render a context as plain text for an LLM (deterministic; newest events first, at most ``max_events``)."""
    lines = [f"User {ctx.user_id}, as of {_fmt_time(ctx.as_of)} UTC."]
    prof = ", ".join(f"{k}={v}" for k, v in sorted(ctx.profile.items(), key=lambda kv: str(kv[0])))
    lines.append(f"Profile: {prof or 'unknown'}.")
    if ctx.calendar:
        cal = "; ".join(f"{c.name} ({c.kind}, activity {c.activity:.2f}, ends in {c.days_left} days)" for c in ctx.calendar)
        lines.append(f"Calendar now: {cal}.")
    else:
        lines.append("Calendar now: no special holiday or season.")
    if not ctx.has_history:
        lines.append(f"No activity in the last {ctx.window_days} days.")
        return "\n".join(lines)
    lines.append(f"Activity in the last {ctx.window_days} days: {ctx.n_events} events.")
    if ctx.orders:
        lines.append("Recent orders:")
        lines += [_fmt_event(e, ctx.as_of) for e in ctx.orders]
    if ctx.cart:
        lines.append("In cart (not ordered):")
        lines += [_fmt_event(e, ctx.as_of) for e in ctx.cart]
    if ctx.queries:
        lines.append("Searches: " + ", ".join(f'"{q}"' for q in ctx.queries) + ".")
    top = ctx.top_subcategories or ctx.top_categories
    if top:
        lines.append("Most engaged: " + ", ".join(f"{c} ({s:g})" for c, s in top) + ".")
    if ctx.price_level:
        lines.append(f"Price level of recent purchases: {ctx.price_level} ({ctx.price_ratio:.2f}x the category median).")
    lines.append("Recent events (newest first):")
    lines += [_fmt_event(e, ctx.as_of) for e in ctx.events[::-1][:max_events]]
    return "\n".join(lines)
