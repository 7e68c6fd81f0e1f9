"""Leave-last-out split and item-id encoding: the shared evaluation protocol.

Protocol (Kang & McAuley 2018, SASRec; the usual next-item protocol):

* interactions are ordered per user by ``timestamp``; equal timestamps keep the original row order
  (stable sort on ``(user, timestamp, original row position)``);
* for every user with ``n >= min_interactions`` (default 3) interactions, the last one is the **test**
  interaction, the second last the **validation** interaction, the first ``n - 2`` are **train**;
* users with fewer than ``min_interactions`` interactions go entirely to train: they have no
  validation/test case (there would be no history left to predict from), but their items still count
  for popularity and as training sequences.

At evaluation time the history of a validation case is the user's train sequence, and the history of a
test case is the train sequence followed by the validation item (nothing is re-trained).

``encode_ids`` maps raw ids (e.g. strings) to contiguous ints ``offset .. offset + n - 1`` (sorted order of
the unique raw ids, so the same id set always gives the same mapping); with ``padding=True`` (default)
index 0 is reserved for padding, which is what the sequence models need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["EvalCases", "IdEncoder", "LeaveLastOutSplit", "encode_ids", "leave_last_out", "training_events"]

_ROW = "_row"  # helper column: original row position, the tie breaker


@dataclass(frozen=True, eq=False)  # eq=False: fields hold arrays
class IdEncoder:
    """Bijection between raw ids and contiguous ints; ``ids[j]`` is the raw id of index ``j + offset``."""

    ids: np.ndarray  # unique raw ids, sorted
    offset: int = 1  # 1 = index 0 is padding; 0 = no padding index

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", pd.Index(self.ids))
        if not self._index.is_unique:  # type: ignore[attr-defined]
            raise ValueError("IdEncoder.ids must be unique")

    @property
    def n_ids(self) -> int:
        """Number of real ids (without the padding index)."""
        return len(self.ids)

    @property
    def vocab_size(self) -> int:
        """Size of an embedding table indexed by the encoded ids (``n_ids + offset``)."""
        return len(self.ids) + self.offset

    def encode(self, values, *, unknown: Literal["raise", "pad"] = "raise") -> np.ndarray:
        """Raw ids -> int64 indices. Unknown ids raise ``ValueError`` or (``unknown="pad"``) map to 0."""
        values = np.asarray(values)
        pos = self._index.get_indexer(values.ravel())  # type: ignore[attr-defined]
        missing = pos < 0
        if missing.any():
            if unknown == "raise" or self.offset == 0:
                bad = values.ravel()[missing][:5].tolist()
                raise ValueError(f"{int(missing.sum())} ids not in the encoder, e.g. {bad}")
            pos = np.where(missing, -self.offset, pos)  # -> index 0 after the offset
        return (pos + self.offset).astype(np.int64).reshape(values.shape)

    def decode(self, indices) -> np.ndarray:
        """Int indices -> raw ids. The padding index (or anything out of range) raises ``ValueError``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < self.offset or idx.max() >= self.vocab_size):
            raise ValueError(
                f"indices must be in [{self.offset}, {self.vocab_size - 1}], got [{idx.min()}, {idx.max()}]"
            )
        return self.ids[idx - self.offset]


def encode_ids(values, *, padding: bool = True) -> IdEncoder:
    """Build an :class:`IdEncoder` over the unique values (sorted); index 0 is padding if ``padding``."""
    values = pd.unique(np.asarray(values).ravel())
    if len(values) == 0:
        raise ValueError("encode_ids: no ids given")
    if pd.isna(values).any():
        raise ValueError("encode_ids: ids contain missing values (NaN/None)")
    return IdEncoder(ids=np.sort(values), offset=1 if padding else 0)


@dataclass(frozen=True, eq=False)  # eq=False: fields hold arrays
class EvalCases:
    """Validation or test cases: one per user, history (chronological) -> held-out target."""

    users: np.ndarray  # [B] raw user ids
    histories: list[np.ndarray]  # B arrays of items (same id space as the split's item column)
    targets: np.ndarray  # [B] held-out item
    scenarios: np.ndarray  # [B] scenario of the held-out interaction (or None if no scenario column)
    # B arrays: the scenario of every history event (aligned with ``histories``); None without a scenario column
    history_scenarios: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, eq=False)  # eq=False: fields hold arrays
class LeaveLastOutSplit:
    """Result of :func:`leave_last_out`.

    ``train`` / ``valid`` / ``test`` keep the input columns and the input index (sorted by user, then
    time); ``sequences`` maps each user to the item array of their train interactions (chronological),
    ``scenario_sequences`` (None without a scenario column) to the scenarios of the same interactions.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    sequences: dict  # user -> np.ndarray of train items, chronological
    user_col: str = "user_id"
    item_col: str = "item_id"
    scenario_col: str | None = "scenario"
    scenario_sequences: dict | None = None  # user -> np.ndarray of the train interactions' scenarios

    @property
    def items(self) -> np.ndarray:
        """Unique items over train, valid and test (input to :func:`encode_ids` for the full catalog)."""
        col = self.item_col
        return pd.unique(pd.concat([self.train[col], self.valid[col], self.test[col]]).to_numpy())

    def eval_cases(self, stage: Literal["valid", "test"]) -> EvalCases:
        """Histories and targets for ``stage``; the test history also contains the validation item."""
        if stage not in ("valid", "test"):
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        frame = self.valid if stage == "valid" else self.test
        users = frame[self.user_col].to_numpy()
        histories = [self.sequences[u] for u in users]
        has_scenarios = self.scenario_col is not None and self.scenario_col in frame
        hist_scen = [self.scenario_sequences[u] for u in users] if has_scenarios and self.scenario_sequences else None
        if stage == "test":
            valid_item = dict(zip(self.valid[self.user_col], self.valid[self.item_col]))
            histories = [np.append(h, np.asarray([valid_item[u]], dtype=h.dtype)) for h, u in zip(histories, users)]
            if hist_scen is not None:
                valid_scen = dict(zip(self.valid[self.user_col], self.valid[self.scenario_col]))
                hist_scen = [np.append(h, np.asarray([valid_scen[u]], dtype=h.dtype)) for h, u in zip(hist_scen, users)]
        scen = frame[self.scenario_col].to_numpy() if has_scenarios else np.full(len(frame), None, dtype=object)
        return EvalCases(users=users, histories=histories, targets=frame[self.item_col].to_numpy(), scenarios=scen,
                         history_scenarios=hist_scen)


def leave_last_out(
    interactions: pd.DataFrame,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    scenario_col: str | None = "scenario",
    min_interactions: int = 3,
) -> LeaveLastOutSplit:
    """Split per user: last = test, second last = validation, rest = train (see module docstring)."""
    missing = [c for c in (user_col, item_col, time_col) if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions is missing column(s) {missing}; has {list(interactions.columns)}")
    if min_interactions < 3:
        raise ValueError(f"min_interactions must be >= 3 (train, valid, test), got {min_interactions}")
    if interactions.empty:
        raise ValueError("interactions is empty")
    if interactions[[user_col, item_col, time_col]].isna().any().any():
        raise ValueError(f"interactions has missing values in {user_col!r}, {item_col!r} or {time_col!r}")
    if scenario_col is not None and scenario_col not in interactions.columns:
        scenario_col = None

    df = interactions.assign(**{_ROW: np.arange(len(interactions))})
    df = df.sort_values([user_col, time_col, _ROW], kind="stable")
    n_user = df.groupby(user_col, sort=False)[item_col].transform("size").to_numpy()
    from_end = df.groupby(user_col, sort=False).cumcount(ascending=False).to_numpy()  # 0 = last
    eligible = n_user >= min_interactions
    is_test = eligible & (from_end == 0)
    is_valid = eligible & (from_end == 1)
    df = df.drop(columns=_ROW)

    train = df[~(is_test | is_valid)]
    # groupby on the sorted frame keeps the chronological order inside each group
    sequences = {u: g.to_numpy() for u, g in train.groupby(user_col, sort=False)[item_col]}
    scenario_sequences = (
        {u: g.to_numpy() for u, g in train.groupby(user_col, sort=False)[scenario_col]} if scenario_col else None
    )
    return LeaveLastOutSplit(
        train=train,
        valid=df[is_valid],
        test=df[is_test],
        sequences=sequences,
        user_col=user_col,
        item_col=item_col,
        scenario_col=scenario_col,
        scenario_sequences=scenario_sequences,
    )


def training_events(interactions: pd.DataFrame, *, min_interactions: int = 3, **columns) -> pd.DataFrame:
    """The interactions anything may be *fitted* on (behaviour embeddings, codebooks, popularity, reward
    models, any statistic): every user's events except their held-out validation and test events (the
    ``train`` part of :func:`leave_last_out`, sorted per user by time with ties in row order)."""
    return leave_last_out(interactions, min_interactions=min_interactions, **columns).train
