"""The embedded default dataset: a deterministic synthetic e-commerce world (items, users, interactions).

``generate_world(WorldConfig(seed=...))`` builds the same three frames for the same config, bit for bit. The
static knowledge (taxonomy, :data:`COMPLEMENTS`, :data:`HOLIDAYS`, :data:`LIFE_EVENTS`) lives in
:mod:`models.data.synthetic_catalog` and is re-exported here.

Generative story (all random draws come from ``np.random.SeedSequence(seed).spawn(4)``: catalog, users,
sessions, events, so e.g. the catalog does not change with ``n_users``)

Users
- ``age_band ~ Cat(AGE_PROBS)``, ``region ~ U(REGIONS)``, ``price_sensitivity ~ Cat(SENSITIVITY_PROBS[age])``.
- Interests over the 15 top categories: ``theta0 ~ Dir(0.12 * m_age)``, ``theta1 = 0.75 theta0 + 0.25 Dir(0.12 m_age)``
  (``m_age`` = AGE_INTEREST multipliers); on day ``d`` the interest is ``theta(d) = (1 - f) theta0 + f theta1``,
  ``f = d / (n_days - 1)`` (slow drift; sampled as a mixture: component 1 with probability f).
  Within a top category the user prefers subcategory ``s`` with weight ``v_us ~ Gamma(1, 1)``.
  ``top_interests`` = the (at most 3) categories with ``theta(mid) >= 0.08`` (always the largest one).
- Life event with probability ``life_event_rate``: ``event ~ Cat(LIFE_EVENT_AGE_WEIGHTS[age])`` on a day uniform in
  ``[0.15, 0.7] * n_days``.

Sessions
- ``n_sessions = clip(Poisson(sessions_per_user_mean * a_u), 2, cap)``, activity ``a_u ~ Gamma(2, 0.5)``; a life-event
  user also gets a trigger session on the event day and ``Poisson(3)`` extra sessions during the event.
- Day ~ traffic weights (weekend x1.15, Singles' Day and Black Friday to Cyber Monday x1.5), hour ~ HOUR_WEIGHTS.
  Session starts are pushed apart to at least ``GAP = 3600 s`` per user (forward running max, then a backward
  running min against the window end), so sessions never overlap and every timestamp stays in the window.
- Scenario template ~ ``Cat(template_weight * g_ut)``, ``g_ut ~ Gamma(3, 1/3)`` (per-user scenario habits).
- Session intent ~ ``Cat(w)`` with ``w_interest = 1``, ``w_h = weight_h * activity_h(day, region) * deal_h``
  (``deal_h = 1.5`` for price-sensitive users on deal holidays, 0.7 for insensitive ones) and
  ``w_life = 4`` from the trigger purchase until ``duration_days`` after it. The session subcategory is drawn
  from the intent: interest -> theta(d) and v_u; holiday/season -> uniform over its subcategories; life event ->
  uniform over its targets; trigger session -> uniform over the triggers.

Events (vectorized over sessions, one loop step per position in the session)
- homepage: 50% session subcategory, 30% popular item (``p ~ popularity``; 60% of them inside a top category
  drawn from theta(d), 40% global), 20% fresh interest draw.
- feed: 60% explore (uniform top category, uniform subcategory), 25% session subcategory, 15% interest.
- search: query = ``"{adjective} {noun}"`` (65%) or ``"{noun}"`` of the session subcategory; the item is drawn
  from the items whose title contains the query (93%) or from the same top category (7%, sponsored/related).
- product_detail: 80% the previous item's subcategory, 20% another subcategory of the same top category.
- cart: 90% a complement (COMPLEMENTS) of the last item clicked/carted in the session, 10% an alternative from
  that item's subcategory.
- checkout: an add-on complement of that item (60% when one exists), else a random add-on, cheapest-biased.
- Item inside a subcategory: ``p_i ∝ popularity_i^0.7 * (price_i / median_s)^beta`` with ``beta = +1.5, 0, -2``
  for low/mid/high price sensitivity (checkout always uses -2).
- Funnel: view -> click (P_CLICK) -> cart (P_CART) -> order (P_ORDER), per scenario; context intents click x1.2 and
  order x1.3. The event right before a cart page is at least "cart" (that is how the user got there);
  the trigger session orders its trigger item. One row per event with the deepest stage reached.
- Event times: session start + cumulative gaps ``5 + min(400, Exp(45))`` seconds (strictly increasing per user).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.data.schema import ACTIONS
from models.data.synthetic_catalog import (
    ADDON_SUBCATEGORIES,
    COMPLEMENTS,
    HOLIDAYS,
    LIFE_EVENTS,
    REGIONS,
    SUBCATEGORIES,
    SUBCATEGORY_KEYS,
    TOP_CATEGORIES,
    TOP_CATEGORY_KEYS,
    CalendarEvent,
    LifeEvent,
    Subcategory,
    build_catalog,
    calendar_activity,
)

__all__ = [
    "WorldConfig",
    "World",
    "generate_world",
    "write_world",
    "COMPLEMENTS",
    "HOLIDAYS",
    "LIFE_EVENTS",
    "SUBCATEGORIES",
    "TOP_CATEGORIES",
    "ADDON_SUBCATEGORIES",
    "REGIONS",
    "SCENARIOS",
    "INTENTS",
    "CalendarEvent",
    "LifeEvent",
    "Subcategory",
    "calendar_activity",
]

SCENARIOS: tuple[str, ...] = ("homepage", "product_detail", "cart", "feed", "search", "checkout")
INTENTS: tuple[str, ...] = (
    "interest", "season", "holiday", "life_event", "life_event_trigger",
    "similar", "complement", "explore", "addon", "popular",
)
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_PROBS = (0.16, 0.26, 0.22, 0.17, 0.11, 0.08)
SENSITIVITIES: tuple[str, ...] = ("low", "mid", "high")
SENSITIVITY_PROBS = {  # per age band: P(low), P(mid), P(high)
    "18-24": (0.10, 0.40, 0.50), "25-34": (0.20, 0.50, 0.30), "35-44": (0.30, 0.45, 0.25),
    "45-54": (0.35, 0.45, 0.20), "55-64": (0.30, 0.45, 0.25), "65+": (0.25, 0.45, 0.30),
}
PRICE_BETA = (1.5, 0.0, -2.0)  # price exponent of item choice for low / mid / high sensitivity
AGE_INTEREST: dict[str, dict[str, float]] = {  # Dirichlet multipliers (1 when absent)
    "18-24": {"electronics": 2.0, "womens_fashion": 1.5, "mens_fashion": 1.5, "books": 1.3, "sports": 1.5, "beauty": 1.3, "baby": 0.2, "garden": 0.3},
    "25-34": {"baby": 1.6, "home": 1.3, "electronics": 1.3, "sports": 1.3},
    "35-44": {"baby": 1.2, "home": 1.4, "kitchen": 1.4, "toys": 1.8},
    "45-54": {"home": 1.3, "kitchen": 1.4, "garden": 1.5, "outdoor": 1.3},
    "55-64": {"garden": 2.0, "books": 1.5, "kitchen": 1.3, "baby": 0.3, "outdoor": 1.2},
    "65+": {"garden": 2.0, "books": 1.8, "grocery": 1.5, "pets": 1.3, "baby": 0.2, "electronics": 0.6},
}
LIFE_EVENT_AGE_WEIGHTS: dict[str, dict[str, float]] = {  # event -> weight per age band (0 when absent)
    "new_baby": {"18-24": 0.5, "25-34": 3.0, "35-44": 1.5},
    "moving_house": {"18-24": 1.5, "25-34": 1.5, "35-44": 1.5, "45-54": 1.5, "55-64": 1.5, "65+": 1.0},
    "new_pet": {b: 1.0 for b in AGE_BANDS},
    "starting_university": {"18-24": 4.0, "25-34": 0.3},
    "wedding": {"18-24": 0.8, "25-34": 2.5, "35-44": 1.0, "45-54": 0.3, "55-64": 0.1, "65+": 0.1},
    "new_job": {"18-24": 1.5, "25-34": 1.5, "35-44": 1.2, "45-54": 1.0, "55-64": 0.4},
    "new_fitness_goal": {"18-24": 1.0, "25-34": 1.0, "35-44": 1.0, "45-54": 1.0, "55-64": 1.0, "65+": 0.6},
}
HOUR_WEIGHTS = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.4, 1.3, 1.2, 1.3,
                         1.8, 1.6, 1.2, 1.2, 1.3, 1.5, 1.8, 2.2, 2.4, 2.2, 1.5, 0.8])
SESSION_TEMPLATES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("homepage", "product_detail", "product_detail", "product_detail"), 0.12),
    (("homepage", "product_detail", "product_detail", "cart", "checkout"), 0.10),
    (("homepage", "homepage", "product_detail", "product_detail", "cart", "checkout"), 0.08),
    (("homepage", "product_detail", "cart", "product_detail", "cart", "checkout"), 0.04),
    (("search", "product_detail", "product_detail", "product_detail"), 0.10),
    (("search", "search", "product_detail", "product_detail", "cart", "checkout"), 0.07),
    (("search", "product_detail", "cart", "checkout"), 0.06),
    (("feed", "feed", "feed", "feed", "feed", "feed"), 0.08),
    (("feed", "feed", "product_detail", "product_detail"), 0.08),
    (("feed", "feed", "product_detail", "cart"), 0.05),
    (("homepage", "search", "product_detail", "product_detail"), 0.06),
    (("homepage", "feed", "feed", "feed", "product_detail"), 0.07),
    (("homepage", "homepage", "homepage", "product_detail"), 0.06),
)
TRIGGER_TEMPLATE: tuple[str, ...] = ("search", "product_detail", "cart", "checkout")
P_CLICK = {"homepage": 0.30, "product_detail": 0.50, "cart": 0.45, "feed": 0.25, "search": 0.50, "checkout": 0.50}
P_CART = {"homepage": 0.12, "product_detail": 0.25, "cart": 0.50, "feed": 0.08, "search": 0.22, "checkout": 0.65}
P_ORDER = {"homepage": 0.30, "product_detail": 0.30, "cart": 0.65, "feed": 0.25, "search": 0.35, "checkout": 0.80}
SESSION_GAP = 3600  # seconds between session starts of one user (sessions last < 41 min)
LIFE_WEIGHT = 4.0  # session-intent weight of an active life event (interest = 1)


@dataclass(frozen=True)
class WorldConfig:
    n_items: int = 5000
    n_users: int = 3000
    n_days: int = 90
    start_date: str = "2026-09-01"  # UTC; 90 days: back-to-school, Halloween, 11.11, Black Friday, winter onset
    seed: int = 0
    scenarios: tuple[str, ...] = SCENARIOS
    sessions_per_user_mean: float = 8.0  # default world: ~130k interaction rows
    life_event_rate: float = 0.3  # share of users with a life event inside the window

    def __post_init__(self) -> None:
        if self.n_items < len(SUBCATEGORY_KEYS):
            raise ValueError(f"WorldConfig.n_items must be >= {len(SUBCATEGORY_KEYS)} (one per subcategory), got {self.n_items}")
        if self.n_users < 1:
            raise ValueError(f"WorldConfig.n_users must be >= 1, got {self.n_users}")
        if self.n_days < 7:
            raise ValueError(f"WorldConfig.n_days must be >= 7, got {self.n_days}")
        try:
            dt.date.fromisoformat(self.start_date)
        except (TypeError, ValueError) as err:
            raise ValueError(f"WorldConfig.start_date must be 'YYYY-MM-DD', got {self.start_date!r}") from err
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if not self.scenarios or unknown or len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError(f"WorldConfig.scenarios must be distinct names from {SCENARIOS}, got {self.scenarios!r}")
        if not self.sessions_per_user_mean > 0:
            raise ValueError(f"WorldConfig.sessions_per_user_mean must be > 0, got {self.sessions_per_user_mean}")
        if not 0.0 <= self.life_event_rate <= 1.0:
            raise ValueError(f"WorldConfig.life_event_rate must be in [0, 1], got {self.life_event_rate}")

    @property
    def start_timestamp(self) -> int:
        """Unix seconds of ``start_date`` 00:00 UTC (first second of the window)."""
        d = dt.date.fromisoformat(self.start_date)
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp())

    @property
    def end_timestamp(self) -> int:
        """First second after the window (exclusive end)."""
        return self.start_timestamp + 86400 * self.n_days


@dataclass(frozen=True)
class World:
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame


# --------------------------------------------------------------------------------------------------- helpers
def _categorical_rows(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of a (n, k) non-negative weight matrix (rows need not be normalized)."""
    cum = np.cumsum(prob, axis=1)
    u = rng.random(len(prob)) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(axis=1), prob.shape[1] - 1)


def _group_cumsum_max(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running max of ``values`` restarting at each new ``group`` (groups contiguous, ids ascending)."""
    offset = group.astype(np.int64) * (1 << 40)  # values are < 2**36, so groups never mix
    return np.maximum.accumulate(values + offset) - offset


def _padded(table: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """A ragged list of int tuples as a (-1)-padded matrix plus the row lengths."""
    width = max(1, max(len(t) for t in table))
    mat = np.full((len(table), width), -1, dtype=np.int64)
    for i, t in enumerate(table):  # small static tables (one row per subcategory / category)
        mat[i, : len(t)] = t
    return mat, np.array([len(t) for t in table], dtype=np.int64)


def _uniform_pick(mat: np.ndarray, counts: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row id, a uniform entry of ``mat[row, :counts[row]]`` (counts must be > 0)."""
    k = np.minimum((rng.random(len(rows)) * counts[rows]).astype(np.int64), counts[rows] - 1)
    return mat[rows, k]


# static index tables
_SUB_INDEX = {k: i for i, k in enumerate(SUBCATEGORY_KEYS)}
_TOP_INDEX = {k: i for i, k in enumerate(TOP_CATEGORY_KEYS)}
_SUB_TOP = np.array([_TOP_INDEX[SUBCATEGORIES[k].top] for k in SUBCATEGORY_KEYS], dtype=np.int64)
_TOP_SUBS, _TOP_NSUB = _padded([tuple(np.flatnonzero(_SUB_TOP == t)) for t in range(len(TOP_CATEGORY_KEYS))])
_COMP, _COMP_N = _padded([tuple(_SUB_INDEX[c] for c in COMPLEMENTS[k]) for k in SUBCATEGORY_KEYS])
_ADDON_IDX = np.array([_SUB_INDEX[k] for k in ADDON_SUBCATEGORIES], dtype=np.int64)
_ADDON_COMP, _ADDON_COMP_N = _padded(
    [tuple(_SUB_INDEX[c] for c in COMPLEMENTS[k] if c in ADDON_SUBCATEGORIES) for k in SUBCATEGORY_KEYS]
)
_NOUN = np.array([SUBCATEGORIES[k].noun for k in SUBCATEGORY_KEYS], dtype=object)
_ADJ_TABLE = np.array(
    [list(SUBCATEGORIES[k].adjectives) + [""] * (8 - len(SUBCATEGORIES[k].adjectives)) for k in SUBCATEGORY_KEYS],
    dtype=object,
)
_EVENT_NAMES = tuple(LIFE_EVENTS)
_EVENT_TRIG, _EVENT_TRIG_N = _padded([tuple(_SUB_INDEX[s] for s in LIFE_EVENTS[e].trigger) for e in _EVENT_NAMES])
_EVENT_TGT, _EVENT_TGT_N = _padded([tuple(_SUB_INDEX[s] for s in LIFE_EVENTS[e].targets) for e in _EVENT_NAMES])
_EVENT_DUR = np.array([LIFE_EVENTS[e].duration_days for e in _EVENT_NAMES], dtype=np.int64)
_HOL_SUBS, _HOL_N = _padded([tuple(_SUB_INDEX[s] for s in h.subcategories) for h in HOLIDAYS])
_SCEN = {s: i for i, s in enumerate(SCENARIOS)}
_INTENT = {s: i for i, s in enumerate(INTENTS)}


class _Catalog:
    """Index of the item table for vectorized sampling: items sorted by (subcategory, adjective) and one
    cumulative weight array per price-sensitivity class over that order."""

    def __init__(self, items: pd.DataFrame):
        sub_of = {k: i for i, k in enumerate(SUBCATEGORY_KEYS)}
        self.sub = items["subcategory"].map(sub_of).to_numpy(np.int64)
        self.adj = items["adj_idx"].to_numpy(np.int64)
        self.price = items["price"].to_numpy(np.float64)
        pop = items["popularity"].to_numpy(np.float64)
        self.order = np.lexsort((self.adj, self.sub))
        self.key_sorted = self.sub[self.order] * 8 + self.adj[self.order]
        n_sub = len(SUBCATEGORY_KEYS)
        self.sub_start = np.searchsorted(self.sub[self.order], np.arange(n_sub + 1))
        median = np.array([SUBCATEGORIES[k].price for k in SUBCATEGORY_KEYS])[self.sub]
        rel = self.price / median
        self.cum = []
        for beta in PRICE_BETA:
            w = (pop ** 0.7) * rel ** beta
            self.cum.append(np.concatenate([[0.0], np.cumsum(w[self.order])]))
        self.pop_cum = np.concatenate([[0.0], np.cumsum(pop)])
        self.pop_cum_sorted = np.concatenate([[0.0], np.cumsum(pop[self.order])])
        # subcategories of one top category are contiguous in SUBCATEGORY_KEYS, so tops are contiguous too
        first_sub = np.array([np.flatnonzero(_SUB_TOP == t)[0] for t in range(len(TOP_CATEGORY_KEYS))] + [n_sub])
        self.top_start = self.sub_start[first_sub]

    def _draw(self, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        target = cum[lo] + rng.random(len(lo)) * (cum[hi] - cum[lo])
        pos = np.clip(np.searchsorted(cum, target, side="right") - 1, lo, hi - 1)
        return self.order[pos]

    def in_subcategory(self, sub: np.ndarray, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Item ids (row indices) drawn inside ``sub`` with the price preference of class ``cls``."""
        out = np.empty(len(sub), dtype=np.int64)
        for c in range(len(PRICE_BETA)):  # loop over 3 classes
            m = cls == c
            if m.any():
                out[m] = self._draw(self.cum[c], self.sub_start[sub[m]], self.sub_start[sub[m] + 1], rng)
        return out

    def in_group(self, sub: np.ndarray, adj: np.ndarray, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Items of subcategory ``sub`` whose title uses adjective ``adj`` (the group must be non-empty)."""
        key = sub * 8 + adj
        lo = np.searchsorted(self.key_sorted, key, side="left")
        hi = np.searchsorted(self.key_sorted, key, side="right")
        out = np.empty(len(sub), dtype=np.int64)
        for c in range(len(PRICE_BETA)):
            m = cls == c
            if m.any():
                out[m] = self._draw(self.cum[c], lo[m], hi[m], rng)
        return out

    def popular_in_top(self, top: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Items drawn by popularity inside top categories ``top``."""
        return self._draw(self.pop_cum_sorted, self.top_start[top], self.top_start[top + 1], rng)

    def popular(self, n: int, rng: np.random.Generator) -> np.ndarray:
        target = rng.random(n) * self.pop_cum[-1]
        return np.minimum(np.searchsorted(self.pop_cum, target, side="right") - 1, len(self.price) - 1)


def _traffic_weights(config: WorldConfig) -> np.ndarray:
    """Relative number of sessions per day: weekend x1.15; 11.09-11.11 and Black Friday..Cyber Monday x1.5."""
    first = dt.date.fromisoformat(config.start_date)
    w = np.ones(config.n_days)
    for d in range(config.n_days):  # loop over days, tiny
        day = first + dt.timedelta(days=d)
        nov1 = dt.date(day.year, 11, 1)
        thanksgiving = nov1 + dt.timedelta(days=(3 - nov1.weekday()) % 7 + 21)  # 4th Thursday of November
        if day.weekday() >= 5:
            w[d] *= 1.15
        if (day.month, day.day) in ((11, 9), (11, 10), (11, 11)):
            w[d] *= 1.5
        if 1 <= (day - thanksgiving).days <= 4:
            w[d] *= 1.5
    return w / w.sum()


# --------------------------------------------------------------------------------------------------- users
def _make_users(config: WorldConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, n_top, n_sub = config.n_users, len(TOP_CATEGORY_KEYS), len(SUBCATEGORY_KEYS)
    age = rng.choice(len(AGE_BANDS), size=n, p=np.asarray(AGE_PROBS) / sum(AGE_PROBS))
    region = rng.integers(len(REGIONS), size=n)
    sens_table = np.array([SENSITIVITY_PROBS[b] for b in AGE_BANDS])
    sens = _categorical_rows(sens_table[age], rng)

    mult = np.array([[AGE_INTEREST[b].get(t, 1.0) for t in TOP_CATEGORY_KEYS] for b in AGE_BANDS])
    alpha = 0.12 * mult[age]

    def dirichlet() -> np.ndarray:
        g = rng.gamma(alpha) + 1e-12  # the epsilon keeps all-zero rows (tiny shapes underflow) well defined
        return g / g.sum(axis=1, keepdims=True)

    theta0 = dirichlet()
    theta1 = 0.75 * theta0 + 0.25 * dirichlet()
    sub_pref = rng.gamma(1.0, size=(n, n_sub))
    theta_mid = 0.5 * (theta0 + theta1)
    ranked = np.argsort(-theta_mid, axis=1, kind="stable")[:, :3]
    keep = np.take_along_axis(theta_mid, ranked, axis=1) >= 0.08
    keep[:, 0] = True
    top_names = np.asarray(TOP_CATEGORY_KEYS, dtype=object)[ranked]
    top_interests = np.where(keep[:, 0], top_names[:, 0], "")
    for j in (1, 2):  # three columns, vectorized over users
        top_interests = np.where(keep[:, j], top_interests + "," + top_names[:, j], top_interests)

    activity = rng.gamma(2.0, 0.5, size=n)
    has_event = rng.random(n) < config.life_event_rate
    ev_w = np.array([[LIFE_EVENT_AGE_WEIGHTS[e].get(b, 0.0) for e in _EVENT_NAMES] for b in AGE_BANDS])
    event = np.where(has_event, _categorical_rows(ev_w[age], rng), -1)
    lo = max(1, round(0.15 * config.n_days))
    hi = max(lo, round(0.7 * config.n_days))
    event_day = np.where(has_event, rng.integers(lo, hi + 1, size=n), -1)
    template_mult = rng.gamma(3.0, 1.0 / 3.0, size=(n, len(SESSION_TEMPLATES)))
    return dict(age=age, region=region, sens=sens, theta0=theta0, theta1=theta1, sub_pref=sub_pref,
                top_interests=top_interests.astype(object), activity=activity, event=event, event_day=event_day,
                template_mult=template_mult)


def _interest_top(u: dict, users: np.ndarray, frac: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Top-category draws from theta_u(d): the mixture of theta0/theta1 with weight frac."""
    use_end = rng.random(len(users)) < frac
    theta = np.where(use_end[:, None], u["theta1"][users], u["theta0"][users])
    return _categorical_rows(theta, rng)


def _interest_subcategory(u: dict, users: np.ndarray, frac: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Subcategory draws: a top category from theta_u(d), then a subcategory by the user's weights v_us."""
    top = _interest_top(u, users, frac, rng)
    cand = _TOP_SUBS[top]  # (n, 8) padded with -1
    w = np.where(cand >= 0, u["sub_pref"][users[:, None], np.maximum(cand, 0)], 0.0)
    return cand[np.arange(len(users)), _categorical_rows(w, rng)]


def _explore_subcategory(n: int, rng: np.random.Generator) -> np.ndarray:
    top = rng.integers(len(TOP_CATEGORY_KEYS), size=n)
    return _uniform_pick(_TOP_SUBS, _TOP_NSUB, top, rng)


# --------------------------------------------------------------------------------------------------- sessions
def _templates(config: WorldConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scenario templates restricted to ``config.scenarios`` (padded code matrix, lengths, weights) and the
    trigger template (as row index into the matrix: the last row)."""
    allowed = set(config.scenarios)
    rows, weights = [], []

    def restrict(t: tuple[str, ...]) -> tuple[int, ...]:
        kept = [s for s in t if s in allowed] or list(config.scenarios[:1])
        while len(kept) < 3:  # every session has >= 3 events, so 2 sessions give >= 5 interactions
            kept.append(kept[len(kept) % len(kept)])
        return tuple(_SCEN[s] for s in kept)

    for t, w in SESSION_TEMPLATES:
        rows.append(restrict(t))
        weights.append(w)
    rows.append(restrict(TRIGGER_TEMPLATE))
    mat, lens = _padded(rows)
    return mat, lens, np.asarray(weights), np.array(len(rows) - 1)


def _make_sessions(config: WorldConfig, u: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_users, n_days = config.n_users, config.n_days
    t0, t_end = config.start_timestamp, config.end_timestamp
    cap = min(400, (86400 * n_days - SESSION_GAP) // SESSION_GAP)  # keeps the gap schedule feasible
    n_reg = np.clip(rng.poisson(config.sessions_per_user_mean * u["activity"]), 2, cap)
    has_event = u["event"] >= 0
    dur = np.where(has_event, _EVENT_DUR[np.maximum(u["event"], 0)], 0)
    n_extra = np.where(has_event, rng.poisson(3.0, size=n_users), 0)
    n_extra = np.minimum(n_extra, cap - n_reg - 1)  # trigger + extras still fit
    n_trig = np.where(has_event & (n_extra >= 0), 1, 0)
    n_extra = np.maximum(n_extra, 0)

    traffic = _traffic_weights(config)
    hours = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
    # regular sessions
    user_reg = np.repeat(np.arange(n_users), n_reg)
    day_reg = rng.choice(n_days, size=len(user_reg), p=traffic)
    # trigger sessions (on the event day) and extra sessions (during the event)
    user_trig = np.repeat(np.arange(n_users), n_trig)
    day_trig = u["event_day"][user_trig]
    user_ext = np.repeat(np.arange(n_users), n_extra)
    day_ext = np.minimum(u["event_day"][user_ext] + (rng.random(len(user_ext)) * dur[user_ext]).astype(np.int64), n_days - 1)

    user = np.concatenate([user_reg, user_trig, user_ext])
    day = np.concatenate([day_reg, day_trig, day_ext])
    is_trig = np.concatenate([np.zeros(len(user_reg), bool), np.ones(len(user_trig), bool), np.zeros(len(user_ext), bool)])
    hour = rng.choice(24, size=len(user), p=hours)
    start = t0 + day * 86400 + hour * 3600 + rng.integers(3600, size=len(user))

    order = np.lexsort((start, user))
    user, start, is_trig = user[order], start[order], is_trig[order]
    # push starts apart: forward running max of (s_i - G i), then backward min against the window end
    n_per = np.bincount(user, minlength=n_users)
    first = np.concatenate([[0], np.cumsum(n_per)[:-1]])
    i = np.arange(len(user)) - first[user]
    start = _group_cumsum_max(start - t0 - SESSION_GAP * i, user) + t0 + SESSION_GAP * i
    last_start = t_end - SESSION_GAP
    start = np.minimum(start, last_start - SESSION_GAP * (n_per[user] - 1 - i))

    trig_start = np.full(n_users, np.iinfo(np.int64).max // 2)
    trig_start[user[is_trig]] = start[is_trig]
    event_day = np.where(n_trig > 0, (trig_start - t0) // 86400, -1)
    day = (start - t0) // 86400
    frac = day / max(1, n_days - 1)

    # scenario template (trigger sessions use the trigger template)
    tmat, tlen, tw, trig_row = _templates(config)
    tpl = _categorical_rows(tw[None, :] * u["template_mult"][user], rng)
    tpl = np.where(is_trig, trig_row, tpl)

    # session intent: interest (1), calendar events, active life event
    act = calendar_activity(config.start_date, n_days)  # (day, region, holiday)
    sens = u["sens"][user]
    deal = np.array([h.deal_event for h in HOLIDAYS])
    deal_mult = np.where(deal[None, :], np.array([0.7, 1.0, 1.5])[sens][:, None], 1.0)
    w_hol = act[day, u["region"][user]] * np.array([h.weight for h in HOLIDAYS])[None, :] * deal_mult
    ev = u["event"][user]
    life_on = (ev >= 0) & (start > trig_start[user]) & (start < trig_start[user] + 86400 * dur[user])
    w = np.concatenate([np.ones((len(user), 1)), w_hol, (LIFE_WEIGHT * life_on)[:, None]], axis=1)
    src = _categorical_rows(w, rng)
    n_hol = len(HOLIDAYS)
    hol_kind = np.array([_INTENT["season"] if h.kind == "season" else _INTENT["holiday"] for h in HOLIDAYS])
    intent = np.full(len(user), _INTENT["interest"])
    sub = _interest_subcategory(u, user, frac, rng)
    is_hol = (src >= 1) & (src <= n_hol)
    intent[is_hol] = hol_kind[src[is_hol] - 1]
    sub[is_hol] = _uniform_pick(_HOL_SUBS, _HOL_N, src[is_hol] - 1, rng)
    is_life = src == n_hol + 1
    intent[is_life] = _INTENT["life_event"]
    sub[is_life] = _uniform_pick(_EVENT_TGT, _EVENT_TGT_N, ev[is_life], rng)
    intent[is_trig] = _INTENT["life_event_trigger"]
    sub[is_trig] = _uniform_pick(_EVENT_TRIG, _EVENT_TRIG_N, ev[is_trig], rng)
    return dict(user=user, start=start, is_trig=is_trig, frac=frac, tpl=tpl, tmat=tmat, tlen=tlen,
                intent=intent, sub=sub, sens=sens, event_day=event_day)


# --------------------------------------------------------------------------------------------------- events
def _make_events(config: WorldConfig, cat: _Catalog, u: dict, s: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_s = len(s["user"])
    tmat, lens = s["tmat"][s["tpl"]], s["tlen"][s["tpl"]]
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
    n_ev = int(lens.sum())
    ev_item = np.empty(n_ev, dtype=np.int64)
    ev_scen = np.empty(n_ev, dtype=np.int64)
    ev_intent = np.empty(n_ev, dtype=np.int64)
    ev_stage = np.empty(n_ev, dtype=np.int64)
    ev_query = np.full(n_ev, "", dtype=object)
    ev_time = np.empty(n_ev, dtype=np.int64)

    prev_item = np.full(n_s, -1, dtype=np.int64)
    anchor_sub = np.full(n_s, -1, dtype=np.int64)  # last clicked/carted/ordered subcategory in the session
    clock = s["start"].copy()
    context_intents = [_INTENT[k] for k in ("season", "holiday", "life_event", "life_event_trigger")]
    p_click = np.array([P_CLICK[k] for k in SCENARIOS])
    p_cart = np.array([P_CART[k] for k in SCENARIOS])
    p_order = np.array([P_ORDER[k] for k in SCENARIOS])
    H, PD, CART, FEED, SEARCH, CHECKOUT = (_SCEN[k] for k in ("homepage", "product_detail", "cart", "feed", "search", "checkout"))

    for p in range(tmat.shape[1]):  # loop over positions in a session (<= 6)
        rows = np.flatnonzero(lens > p)
        sc = tmat[rows, p]
        m = len(rows)
        user, cls, trig = s["user"][rows], s["sens"][rows], s["is_trig"][rows]
        sess_sub, sess_intent, frac = s["sub"][rows], s["intent"][rows], s["frac"][rows]
        sub = sess_sub.copy()
        intent = sess_intent.copy()
        item = np.full(m, -1, dtype=np.int64)
        r = rng.random(m)

        # homepage: session intent / popular (in an interest category or global) / fresh interest
        hm = (sc == H) & ~trig
        pop = hm & (r >= 0.5) & (r < 0.8)
        pop_top = pop & (rng.random(m) < 0.6)
        item[pop_top] = cat.popular_in_top(_interest_top(u, user[pop_top], frac[pop_top], rng), rng)
        pop_all = pop & ~pop_top
        item[pop_all] = cat.popular(int(pop_all.sum()), rng)
        intent[pop] = _INTENT["popular"]
        fresh = (hm & (r >= 0.8)) | ((sc == FEED) & ~trig & (r >= 0.85))
        sub[fresh] = _interest_subcategory(u, user[fresh], frac[fresh], rng)
        intent[fresh] = _INTENT["interest"]
        # feed: exploration (uniform over all top categories)
        exp = (sc == FEED) & ~trig & (r < 0.6)
        sub[exp] = _explore_subcategory(int(exp.sum()), rng)
        intent[exp] = _INTENT["explore"]
        # product detail: similar to the previous item
        pd_ = (sc == PD) & (prev_item[rows] >= 0) & ~trig
        prev_sub = cat.sub[np.maximum(prev_item[rows], 0)]
        same = pd_ & (r < 0.8)
        sub[same] = prev_sub[same]
        other = pd_ & (r >= 0.8)
        sub[other] = _uniform_pick(_TOP_SUBS, _TOP_NSUB, _SUB_TOP[prev_sub[other]], rng)
        intent[pd_] = _INTENT["similar"]
        # cart: complements of the engaged item; checkout: cheap add-ons
        anchor = np.where(anchor_sub[rows] >= 0, anchor_sub[rows], np.where(prev_item[rows] >= 0, prev_sub, sess_sub))
        ct = sc == CART
        sub[ct] = _uniform_pick(_COMP, _COMP_N, anchor[ct], rng)
        intent[ct] = _INTENT["complement"]
        alt = ct & (r >= 0.9)  # "you may also like": an alternative to the carted item
        sub[alt] = anchor[alt]
        intent[alt] = _INTENT["similar"]
        co = sc == CHECKOUT
        has_addon = co & (_ADDON_COMP_N[anchor] > 0) & (r < 0.6)
        sub[has_addon] = _uniform_pick(_ADDON_COMP, _ADDON_COMP_N, anchor[has_addon], rng)
        rand_addon = co & ~has_addon
        sub[rand_addon] = _ADDON_IDX[rng.integers(len(_ADDON_IDX), size=int(rand_addon.sum()))]
        intent[co] = _INTENT["addon"]
        cls_eff = np.where(co, 2, cls)  # add-ons: cheapest-biased regardless of the user

        # search: query from the session subcategory, results whose title contains the query
        se = sc == SEARCH
        if se.any():
            s_sub, s_cls = sub[se], cls[se]
            probe = cat.in_subcategory(s_sub, s_cls, rng)
            a = cat.adj[probe]
            use_adj = rng.random(len(probe)) < 0.65
            found = probe.copy()
            if use_adj.any():
                found[use_adj] = cat.in_group(s_sub[use_adj], a[use_adj], s_cls[use_adj], rng)
            query = np.where(use_adj, _ADJ_TABLE[s_sub, a] + " " + _NOUN[s_sub], _NOUN[s_sub])
            related = (rng.random(len(probe)) < 0.07) & ~trig[se]
            if related.any():
                rel_sub = _uniform_pick(_TOP_SUBS, _TOP_NSUB, _SUB_TOP[s_sub[related]], rng)
                found[related] = cat.in_subcategory(rel_sub, s_cls[related], rng)
            item[se] = found
            ev_query[offsets[rows[se]] + p] = query

        # the trigger session: its first two events show (and the second buys) a trigger item, whatever the page
        tr_head = trig & (p <= 1)
        redraw = tr_head & (sc != SEARCH)
        sub[redraw] = sess_sub[redraw]
        item[redraw] = -1
        intent[tr_head] = _INTENT["life_event_trigger"]
        need = item < 0
        item[need] = cat.in_subcategory(sub[need], cls_eff[need], rng)

        # funnel
        ctx = np.isin(intent, context_intents)  # a need from the context converts better
        boost_click = np.where(ctx, 1.2, 1.0)
        boost_order = np.where(ctx, 1.3, 1.0)
        uu = rng.random((m, 3))
        stage = (uu[:, 0] < np.minimum(0.95, p_click[sc] * boost_click)).astype(np.int64)
        stage += (stage == 1) & (uu[:, 1] < p_cart[sc])
        stage += (stage == 2) & (uu[:, 2] < np.minimum(0.95, p_order[sc] * boost_order))
        nxt = np.where(lens[rows] > p + 1, tmat[rows, np.minimum(p + 1, tmat.shape[1] - 1)], -1)
        stage = np.where(nxt == CART, np.maximum(stage, 2), stage)
        stage = np.where(trig & (p == np.minimum(1, lens[rows] - 1)), 3, stage)

        # time: first event at the session start, then gaps of 5 + min(400, Exp(45)) seconds
        if p > 0:
            clock[rows] += 5 + np.minimum(400, rng.exponential(45.0, size=m)).astype(np.int64)
        idx = offsets[rows] + p
        ev_item[idx], ev_scen[idx], ev_intent[idx], ev_stage[idx], ev_time[idx] = item, sc, intent, stage, clock[rows]
        prev_item[rows] = item
        engaged = stage >= 1
        anchor_sub[rows[engaged]] = cat.sub[item[engaged]]

    ev_user = np.repeat(s["user"], lens)
    return dict(user=ev_user, item=ev_item, time=ev_time, scen=ev_scen, stage=ev_stage, query=ev_query, intent=ev_intent)


# --------------------------------------------------------------------------------------------------- public API
def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    width = max(width, len(str(max(0, n - 1))))
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def generate_world(config: WorldConfig = WorldConfig()) -> World:
    """Build the synthetic world for ``config`` (deterministic in ``config``; see the module docstring)."""
    ss = np.random.SeedSequence(config.seed)
    rng_items, rng_users, rng_sessions, rng_events = (np.random.default_rng(x) for x in ss.spawn(4))
    items = build_catalog(config.n_items, rng_items)
    cat = _Catalog(items)
    u = _make_users(config, rng_users)
    s = _make_sessions(config, u, rng_sessions)
    e = _make_events(config, cat, u, s, rng_events)

    user_ids = _ids("u", config.n_users, 5)
    ev_names = np.asarray(_EVENT_NAMES, dtype=object)
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "age_band": np.asarray(AGE_BANDS, dtype=object)[u["age"]],
            "region": np.asarray(REGIONS, dtype=object)[u["region"]],
            "price_sensitivity": np.asarray(SENSITIVITIES, dtype=object)[u["sens"]],
            "life_event": np.where(s["event_day"] >= 0, ev_names[np.maximum(u["event"], 0)], "").astype(object),
            "life_event_day": s["event_day"].astype(np.int64),
            "top_interests": u["top_interests"],
        }
    )
    item_ids = items["item_id"].to_numpy(dtype=object)
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[e["user"]],
            "item_id": item_ids[e["item"]],
            "timestamp": e["time"].astype(np.int64),
            "scenario": np.asarray(SCENARIOS, dtype=object)[e["scen"]],
            "action": np.asarray(ACTIONS, dtype=object)[e["stage"]],
            "query": e["query"],
            "intent": np.asarray(INTENTS, dtype=object)[e["intent"]],
        }
    )
    # events were laid out per user, sessions in time order and non-overlapping: already sorted
    return World(items=items.drop(columns="adj_idx"), users=users, interactions=interactions)


def write_world(world: World, directory: str | Path) -> dict[str, Path]:
    """Write ``items/users/interactions.parquet`` into ``directory`` (temp file + ``os.replace``, so a reader
    never sees a half-written file). Returns ``{"items": path, "users": path, "interactions": path}``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, frame in (("items", world.items), ("users", world.users), ("interactions", world.interactions)):
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"World.{name} must be a pandas DataFrame, got {type(frame).__name__}")
        target = out / f"{name}.parquet"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".parquet.tmp", dir=out)
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths[name] = target
    return paths
