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


def _target_phrase(target: str) -> str:
    return target.replace("_", " ").strip()


def embed_intents(
    instructions: Sequence[Instruction],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Embed structured instructions through their intents -> ``float32 [N, encoder.dim]``.

    e(instruction) = normalize( sum_i w_i * mean_t e(target_t of intent i) ), with e(.) the sentence encoder on
    each target phrase ("baby strollers", "halloween costumes", ...). The phrases come from a small vocabulary
    (subcategories, categories, calendar targets), so a daily full refresh of every user embeds almost nothing
    new, whereas whole texts (which carry day counts, cart items, ...) are mostly unique every day. It also puts
    the instruction in the same MiniLM space as the item texts, which is what instruction-guided retrieval
    compares against. Intents without targets fall back to the whole instruction text.
    """
    phrases: list[str] = []
    index: dict[str, int] = {}
    rows, cols, weights = [], [], []
    for row, instruction in enumerate(instructions):
        if not isinstance(instruction, Instruction):
            raise ValueError(f"instruction {row} must be an Instruction, got {type(instruction).__name__}")
        pieces = [
            (i.weight / len(i.targets), _target_phrase(t)) for i in instruction.intents for t in i.targets if t
        ] or [(1.0, instruction.text)]
        for weight, phrase in pieces:
            col = index.setdefault(phrase, len(phrases))
            if col == len(phrases):
                phrases.append(phrase)
            rows.append(row)
            cols.append(col)
            weights.append(weight)
    if not phrases:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    vectors = embed_texts(phrases, encoder, cache=cache, batch_size=batch_size).vectors
    out = np.zeros((len(instructions), encoder.dim), dtype=np.float64)
    np.add.at(out, np.asarray(rows), np.asarray(weights)[:, None] * vectors[np.asarray(cols)])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0).astype(np.float32)
