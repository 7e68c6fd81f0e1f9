"""One refresh of the slow path: contexts -> instructions -> embeddings, as a frame for the feature store.

Used by the daily full refresh (every user, as of the start of a day) and by the near-line incremental
update (only the users who just did something that matters, as of now).
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
    as_of: int,
    reasoner,
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    user_ids: Sequence[str] | None = None,
    window_days: int = 30,
    embedding: Literal["intents", "text"] = "intents",
) -> pd.DataFrame:
    """Instructions for ``user_ids`` (default: every user with history before ``as_of``), generated at ``as_of``.

    ``embedding="intents"`` needs a reasoner with ``generate_structured`` (the rule-based one); free-text
    reasoners (an LLM) are always embedded as whole texts.
    """
    if user_ids is None:
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
            "generated_at": np.full(len(contexts), int(as_of), dtype=np.int64),
            "intents": intents,
        }
    )
