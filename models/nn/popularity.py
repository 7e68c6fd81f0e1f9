"""Most-popular baseline, global and per scenario.

Item indices are the encoded ids of :func:`models.eval.split.encode_ids` (``1..n_items``; 0 = padding).
Fit counts interactions in the train split:

    count_global[i]    = #{train rows with item i}
    count_scenario[s,i] = #{train rows with item i and scenario s}

``recommend`` ranks items by count (descending; ties by smaller item index, so results are deterministic).
With ``per_scenario=True`` a row whose scenario was seen in training uses that scenario's counts, any other
row falls back to the global counts. With ``exclude_seen=True`` items in the row's history (given
explicitly, or the user's train items recorded at fit time) are removed before taking the top k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["MostPopular"]


class MostPopular:
    """Counts over the train split; ``recommend`` returns ``[B, k]`` int64 item indices."""

    def __init__(
        self,
        n_items: int,
        counts: np.ndarray,
        scenario_counts: dict | None = None,
        user_items: dict | None = None,
    ) -> None:
        if counts.shape != (n_items + 1,):
            raise ValueError(f"counts must have shape ({n_items + 1},) (index 0 = padding), got {counts.shape}")
        self.n_items = n_items
        self.counts = counts
        self.scenario_counts = scenario_counts or {}
        self.user_items = user_items or {}  # user -> train items, for exclude_seen with users=
        self._order = self._ranking(counts)
        self._scenario_order = {s: self._ranking(c) for s, c in self.scenario_counts.items()}

    @staticmethod
    def _ranking(counts: np.ndarray) -> np.ndarray:
        # stable sort on -count: ties keep ascending item index; the padding item 0 goes last
        score = counts.astype(np.float64)
        score[0] = -np.inf
        return np.argsort(-score, kind="stable")[:-1]  # drop the padding item (last after sorting)

    @classmethod
    def fit(
        cls,
        items,
        n_items: int,
        *,
        scenarios=None,
        users=None,
    ) -> MostPopular:
        """Fit on parallel arrays of train interactions (``items`` already encoded, in ``1..n_items``)."""
        items = np.asarray(items, dtype=np.int64)
        if items.size and (items.min() < 1 or items.max() > n_items):
            raise ValueError(f"items must be encoded indices in [1, {n_items}], got [{items.min()}, {items.max()}]")
        counts = np.bincount(items, minlength=n_items + 1)
        scenario_counts = None
        if scenarios is not None:
            scenarios = np.asarray(scenarios)
            if scenarios.shape != items.shape:
                raise ValueError(f"scenarios must align with items: {scenarios.shape} vs {items.shape}")
            codes, uniques = pd.factorize(scenarios)
            # one bincount over (scenario, item) pairs instead of a loop over rows
            flat = np.bincount(codes * (n_items + 1) + items, minlength=len(uniques) * (n_items + 1))
            per = flat.reshape(len(uniques), n_items + 1)
            scenario_counts = {s: per[j] for j, s in enumerate(uniques)}
        user_items = None
        if users is not None:
            users = np.asarray(users)
            if users.shape != items.shape:
                raise ValueError(f"users must align with items: {users.shape} vs {items.shape}")
            user_items = {u: g.to_numpy() for u, g in pd.Series(items).groupby(users, sort=False)}
        return cls(n_items, counts, scenario_counts, user_items)

    @classmethod
    def from_frame(
        cls,
        train: pd.DataFrame,
        encoder,
        *,
        item_col: str = "item_id",
        scenario_col: str | None = "scenario",
        user_col: str | None = "user_id",
    ) -> MostPopular:
        """Fit on a train DataFrame with raw item ids, encoded with ``encoder`` (an ``IdEncoder``)."""
        if item_col not in train.columns:
            raise ValueError(f"train has no column {item_col!r}; has {list(train.columns)}")
        if encoder.offset != 1:
            raise ValueError("MostPopular needs an encoder with the padding index 0 (padding=True)")
        has = lambda c: c is not None and c in train.columns  # noqa: E731
        return cls.fit(
            encoder.encode(train[item_col].to_numpy()),
            encoder.n_ids,
            scenarios=train[scenario_col].to_numpy() if has(scenario_col) else None,
            users=train[user_col].to_numpy() if has(user_col) else None,
        )

    def recommend(
        self,
        k: int,
        *,
        n: int | None = None,
        scenarios: Sequence | None = None,
        users: Sequence | None = None,
        histories: Sequence[np.ndarray] | None = None,
        exclude_seen: bool = False,
        per_scenario: bool = False,
    ) -> np.ndarray:
        """Top-``k`` items for each of ``B`` rows.

        ``B`` is the length of ``scenarios`` / ``users`` / ``histories`` (whichever is given) or ``n``.
        With ``exclude_seen``, items in ``histories[b]`` and (if ``users`` is given) the user's train items
        are excluded. ``per_scenario`` needs ``scenarios``.
        """
        lengths = {len(x) for x in (scenarios, users, histories) if x is not None}
        if n is not None:
            lengths.add(n)
        if len(lengths) != 1:
            raise ValueError(f"give n or scenarios/users/histories of one common length, got lengths {lengths}")
        B = lengths.pop()
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k must be in [1, {self.n_items}], got {k}")
        if per_scenario and scenarios is None:
            raise ValueError("per_scenario=True needs scenarios")

        # each row gets a ranking (the global one or its scenario's); rows sharing one are handled together
        if per_scenario:
            keys = np.asarray(scenarios, dtype=object)
            known = np.array([s in self._scenario_order for s in keys], dtype=bool)
            keys[~known] = None
        else:
            keys = np.full(B, None, dtype=object)
        out = np.empty((B, k), dtype=np.int64)
        codes, uniques = pd.factorize(pd.Series(keys, dtype=object), use_na_sentinel=False)
        for j, key in enumerate(uniques):  # loop over scenarios, not items
            rows = np.flatnonzero(codes == j)
            order = self._order if key is None or pd.isna(key) else self._scenario_order[key]
            if not exclude_seen:
                out[rows] = order[:k]
                continue
            seen = [self._seen(int(r), users, histories) for r in rows]
            out[rows] = self._top_unseen(order, seen, k)
        return out

    def _seen(self, row: int, users, histories) -> np.ndarray:
        parts = []
        if histories is not None:
            parts.append(np.asarray(histories[row], dtype=np.int64))
        if users is not None:
            parts.append(self.user_items.get(users[row], np.empty(0, dtype=np.int64)))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _top_unseen(self, order: np.ndarray, seen: list[np.ndarray], k: int) -> np.ndarray:
        # only the first k + |seen| items of the ranking can be needed, so mask that prefix only
        width = min(len(order), k + max((len(s) for s in seen), default=0))
        prefix = order[:width]  # [W]
        rank_of = np.full(self.n_items + 1, width, dtype=np.int64)
        rank_of[prefix] = np.arange(width)
        mask = np.zeros((len(seen), width + 1), dtype=bool)  # column `width` collects items outside the prefix
        rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
        cols = rank_of[np.concatenate(seen)] if rows.size else np.empty(0, dtype=np.int64)
        mask[rows, cols] = True
        keep = ~mask[:, :width]
        # stable argsort of "is excluded" keeps the popularity order among the kept items
        pick = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        if not np.take_along_axis(keep, pick, axis=1).all():
            raise ValueError(f"fewer than k={k} unseen items left for some row")
        return prefix[pick]
