"""Catalog embeddings: one fused vector per item from its text and from user behaviour.

Fusion methods (``FusionConfig.fusion``), with t = text vector (unit norm) and b = behaviour vector
(unit norm, or zero for items nobody interacted with), w = ``text_weight``:

- ``text_only``:   e = t                                     (the paper's "V1", text-only semantic IDs)
- ``concat``:      e = normalize([w * t, (1 - w) * b])       (multi-source, the paper's "V4" idea)
- ``pca_concat``:  e = normalize(PCA_d([w * t, (1 - w) * b])) (concat, then reduced to ``fused_dim``)

For an item without behaviour, ``concat`` degenerates gracefully to its (scaled) text vector, so new
items still get sensible semantic IDs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .behaviour import behaviour_embeddings
from .text import EmbeddingCache, TextEncoder, embed_texts

ITEM_TEXT_FIELDS = ("title", "category", "brand", "description")


@dataclass(frozen=True)
class FusionConfig:
    fusion: Literal["concat", "text_only", "pca_concat"] = "concat"
    text_weight: float = 0.8
    behaviour_dim: int = 64
    behaviour_window: int = 5
    fused_dim: int = 256
    batch_size: int = 128
    seed: int = 0


@dataclass(frozen=True)
class CatalogEmbeddings:
    item_ids: np.ndarray        # [N] str, same order as the catalog
    fused: np.ndarray           # [N, D] float32, what the semantic-ID tokenizer consumes
    text: np.ndarray            # [N, 384] float32, kept for the text-only comparison and for IGR
    has_behaviour: np.ndarray   # [N] bool
    n_embedded: int
    n_cached: int
    text_seconds: float
    total_seconds: float


def item_texts(items: pd.DataFrame) -> list[str]:
    """"title. category. brand. description" with missing optional fields left out."""
    parts = [items[c].fillna("").astype(str).str.strip() for c in ITEM_TEXT_FIELDS if c in items.columns]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.str.cat(part, sep=". ")
    return joined.str.replace(r"(\. )+$", "", regex=True).str.replace(r"(\. ){2,}", ". ", regex=True).tolist()


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def fuse(text: np.ndarray, behaviour: np.ndarray, config: FusionConfig) -> np.ndarray:
    if config.fusion == "text_only":
        return _normalize(text.astype(np.float32))
    joined = np.concatenate([config.text_weight * text, (1.0 - config.text_weight) * behaviour], axis=1)
    if config.fusion == "pca_concat":
        centered = joined - joined.mean(axis=0, keepdims=True)
        k = min(config.fused_dim, min(centered.shape) - 1)
        # Deterministic: SVD via LAPACK plus a sign convention.
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        components = vt[:k]
        signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
        joined = centered @ (components * signs[:, None]).T
    elif config.fusion != "concat":
        raise ValueError(f"unknown fusion method {config.fusion!r}; use concat, text_only or pca_concat")
    return _normalize(joined.astype(np.float32))


def build_catalog_embeddings(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    encoder: TextEncoder,
    config: FusionConfig = FusionConfig(),
    cache: EmbeddingCache | None = None,
) -> CatalogEmbeddings:
    """Embed every catalog item. ``interactions`` needs user_id, item_id, timestamp (any order)."""
    if len(items) == 0:
        raise ValueError("the item catalog is empty: nothing to embed")
    missing = [c for c in ("item_id", "title", "category") if c not in items.columns]
    if missing:
        raise ValueError(f"items table is missing required column(s) {missing}")
    start = time.perf_counter()
    item_ids = items["item_id"].astype(str).to_numpy()
    run = embed_texts(item_texts(items), encoder, cache=cache, batch_size=config.batch_size)

    if config.fusion == "text_only":
        behaviour = np.zeros((len(items), config.behaviour_dim), np.float32)
        has_behaviour = np.zeros(len(items), dtype=bool)
    else:
        ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
        item_codes = pd.Index(item_ids).get_indexer(ordered["item_id"].astype(str))
        known = item_codes >= 0  # the validation gate guarantees this; stay safe anyway
        user_codes = pd.factorize(ordered["user_id"])[0]
        behaviour, has_behaviour = behaviour_embeddings(
            user_codes[known], item_codes[known], len(items), config.behaviour_dim, config.behaviour_window,
            seed=config.seed,
        )
    fused = fuse(run.vectors, behaviour, config)
    if not np.isfinite(fused).all():
        raise ValueError("fused catalog embeddings contain NaN/inf")
    return CatalogEmbeddings(
        item_ids=item_ids,
        fused=fused,
        text=run.vectors,
        has_behaviour=has_behaviour,
        n_embedded=run.n_embedded,
        n_cached=run.n_cached,
        text_seconds=run.seconds,
        total_seconds=time.perf_counter() - start,
    )
