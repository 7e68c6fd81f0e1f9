"""Instruction embeddings: the dense form of the Contextual Reasoning Instructions the fast model reads.

A thin wrapper over :func:`models.embeddings.text.embed_texts` (same encoder protocol and content-hash
:class:`~models.embeddings.text.EmbeddingCache`), so an instruction text that did not change since the last
refresh is never embedded again, and identical instructions (e.g. every no-history user's default) are embedded
once. Output: ``float32 [N, encoder.dim]`` (384 for :class:`~models.embeddings.text.MiniLMEncoder`), L2-normalized
by the encoder.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from models.embeddings.text import EmbeddingCache, TextEncoder, embed_texts

from .rules import Instruction


def embed_instructions(
    texts: Sequence[str | Instruction],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Embed instruction texts (or :class:`Instruction` objects) -> ``float32 [N, encoder.dim]``.

    New vectors are added to ``cache`` (call ``cache.save()`` to persist it).
    """
    plain: list[str] = []
    for i, t in enumerate(texts):
        t = t.text if isinstance(t, Instruction) else t
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"instruction {i} must be a non-empty string, got {t!r}")
        plain.append(t)
    if cache is not None and cache.dim != encoder.dim:
        raise ValueError(f"cache dim {cache.dim} differs from encoder {encoder.name!r} dim {encoder.dim}")
    vectors = embed_texts(plain, encoder, cache=cache, batch_size=batch_size).vectors
    return np.asarray(vectors, dtype=np.float32).reshape(len(plain), encoder.dim)
