"""One refresh of the slow path: contexts -> instructions -> embeddings, as a frame for the feature store.

Instructions scale with activity, not with users x days: :func:`refresh_after_activity` writes one instruction
per user and *activity window* (``window_s``, the near-line aggregation window, 5 minutes by default) in which the
user did anything, generated at the end of that window from everything before it:

    as_of(user, w) = (w + 1) * window_s   for every window index w = floor(t / window_s) of the user's events t

An example at time t then reads the latest instruction with ``as_of <= t`` (Feast point-in-time join), i.e. one
built from all of the user's events up to the end of their previous activity window; users who are not active
get no new rows (their context did not change). The near-line update (:func:`refresh_instructions` for the users
of a fresh high-value action, as of now) is the same computation for a handful of users.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from models.embeddings.text import EmbeddingCache, TextEncoder

from .context import build_user_contexts
from .embed import embed_instructions, embed_intents
from .rules import RuleBasedReasoner

INSTRUCTION_COLUMNS = ["user_id", "instruction_text", "instruction_embedding", "generator_version", "generated_at", "intents"]


def refresh_instructions(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    as_of: int | np.ndarray,
    reasoner,
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    user_ids: Sequence[str] | None = None,
    window_days: int = 30,
    embedding: Literal["intents", "text"] = "intents",
) -> pd.DataFrame:
    """Instructions for ``user_ids`` (default: every user with history before ``as_of``), generated at ``as_of``
    (one time, or an int array aligned with ``user_ids``: one request per entry, users may repeat).

    ``embedding="intents"`` needs a reasoner with ``generate_structured`` (the rule-based one); free-text
    reasoners (an LLM) are always embedded as whole texts.
    """
    if user_ids is None:
        if not isinstance(as_of, (int, np.integer)):
            raise ValueError("refresh_instructions: per-request as_of needs user_ids")
        user_ids = interactions.loc[interactions["timestamp"] < as_of, "user_id"].astype(str).unique()
    user_ids = [str(u) for u in user_ids]
    if not user_ids:
        return pd.DataFrame(columns=INSTRUCTION_COLUMNS)
    contexts = build_user_contexts(interactions, items, users, as_of, window_days=window_days, user_ids=user_ids)
    if embedding == "intents" and isinstance(reasoner, RuleBasedReasoner):
        structured = reasoner.generate_structured(contexts)
        texts = [s.text for s in structured]
        intents = [";".join(s.intent_names()) for s in structured]
        vectors = embed_intents(structured, encoder, cache=cache)
    else:
        texts = reasoner.generate(contexts)
        intents = [""] * len(texts)
        vectors = embed_instructions(texts, encoder, cache=cache)
    return pd.DataFrame(
        {
            "user_id": [c.user_id for c in contexts],
            "instruction_text": texts,
            "instruction_embedding": list(np.asarray(vectors, dtype=np.float32)),
            "generator_version": getattr(reasoner, "version", type(reasoner).__name__),
            "generated_at": np.asarray([c.as_of for c in contexts], dtype=np.int64),
            "intents": intents,
        }
    )


def activity_requests(interactions: pd.DataFrame, start: int, end: int, window_s: int) -> pd.DataFrame:
    """``user_id, as_of``: one row per user and activity window whose end ``as_of`` lies in ``[start, end)``
    (module docstring), sorted by (as_of, user_id)."""
    if window_s < 1:
        raise ValueError(f"window_s must be >= 1 second, got {window_s}")
    ts = pd.to_numeric(interactions["timestamp"]).to_numpy(np.int64)
    ends = (ts // window_s + 1) * window_s
    keep = (ends >= start) & (ends < end)
    frame = pd.DataFrame({"user_id": interactions["user_id"].astype(str).to_numpy(dtype=object)[keep],
                          "as_of": ends[keep]})
    return frame.drop_duplicates().sort_values(["as_of", "user_id"], kind="stable").reset_index(drop=True)


def refresh_after_activity(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    start: int,
    end: int,
    reasoner,
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    window_s: int = 300,
    window_days: int = 30,
    embedding: Literal["intents", "text"] = "intents",
) -> pd.DataFrame:
    """Every instruction generated in ``[start, end)``: one per user and activity window that ends in it."""
    requests = activity_requests(interactions, start, end, window_s)
    if requests.empty:
        return pd.DataFrame(columns=INSTRUCTION_COLUMNS)
    return refresh_instructions(interactions, items, users, requests["as_of"].to_numpy(), reasoner, encoder,
                                cache=cache, user_ids=requests["user_id"].tolist(), window_days=window_days,
                                embedding=embedding)


def action_to_online_seconds(events: pd.DataFrame, user_ids, actions, readable_at: float) -> np.ndarray:
    """Per updated user (``user_ids``), the seconds from their latest landed high-value action (``actions``) in
    ``events`` to ``readable_at``, when the refreshed instruction became readable online; users without such an
    action are skipped."""
    if not len(events):
        return np.array([])
    latest = events[events["action"].isin(list(actions))].groupby("user_id")["timestamp"].max()
    return (readable_at - latest.reindex(pd.Index(user_ids)).dropna()).to_numpy(dtype=float)

