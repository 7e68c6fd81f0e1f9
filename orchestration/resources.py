"""Dagster resources: where the raw data comes from and how text is embedded.

Each resource has a local default (built from ``params.yaml`` by :func:`default_resources`) and a production
variant chosen by configuration, not by code changes (see ``deploy/README.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from models.data.loaders import find_table, load_interactions, load_items, load_users
from models.data.schema import SOURCE_ROW, DataSourceError
from models.embeddings.text import EmbeddingCache, MiniLMEncoder

from .settings import Settings, resolve_path


class DataSourceResource(ConfigurableResource):
    """Raw items, users and interactions in the project's standard schema.

    ``source="synthetic"`` generates the embedded e-commerce world (deterministic from ``seed``) once into
    ``<cache_dir>/synthetic-<config hash>/`` and then reads it like any file source, so both paths share
    one loader. ``source="files"`` reads ``items``/``interactions``/``users`` (.parquet or .csv) from
    ``files_dir``: the same code reads a warehouse export in production.
    """

    source: str = "synthetic"
    files_dir: str | None = None
    cache_dir: str = "data/source"
    seed: int = 0
    n_items: int = 5000
    n_users: int = 3000
    n_days: int = 90
    start_date: str = "2026-09-01"
    sessions_per_user_mean: float = 8.0
    life_event_rate: float = 0.3

    def _world_config(self):
        from models.configs import from_section
        from models.data.synthetic import WorldConfig

        return from_section(WorldConfig, {name: getattr(self, name) for name in type(self).model_fields})

    def dataset_dir(self) -> Path:
        if self.source == "files":
            if not self.files_dir:
                raise DataSourceError("data source 'files' needs files_dir", file=None, column=None)
            directory = resolve_path(self.files_dir)
            if not directory.is_dir():
                raise DataSourceError(f"data directory {directory} does not exist", file=str(directory), column=None)
            return directory
        if self.source != "synthetic":
            raise ValueError(f"unknown data source {self.source!r}: use 'synthetic' or 'files'")
        config = self._world_config()
        digest = hashlib.sha256(json.dumps(config.__dict__, sort_keys=True, default=str).encode()).hexdigest()[:12]
        directory = resolve_path(self.cache_dir) / f"synthetic-{digest}"
        if not (directory / "interactions.parquet").exists():
            from models.data.synthetic import generate_world, write_world

            write_world(generate_world(config), directory)
        return directory

    def _table(self, name: str, required: bool = True) -> Path | None:
        directory = self.dataset_dir()
        path = find_table(directory, name)
        if path is None and required:
            raise DataSourceError(
                f"{name}.parquet or {name}.csv not found in {directory}", file=str(directory / name), column=None
            )
        return path

    def items(self) -> pd.DataFrame:
        return load_items(self._table("items"))

    def users(self) -> pd.DataFrame | None:
        path = self._table("users", required=False)
        return load_users(path) if path is not None else None

    def interactions(self, scenario: str | None = None) -> pd.DataFrame:
        """The interactions (of one scenario), with ``source_row`` = the row's position in the file: the tie
        breaker for events in the same second once the scenario partitions are concatenated again."""
        path = self._table("interactions")
        frame = load_interactions(path)
        frame[SOURCE_ROW] = np.arange(len(frame), dtype=np.int64)
        if scenario is None:
            return frame
        frame = frame[frame["scenario"] == scenario].reset_index(drop=True)
        if frame.empty:
            raise DataSourceError(
                f"{path}: column 'scenario' has no rows for scenario {scenario!r}", file=str(path), column="scenario"
            )
        return frame

    def scenarios(self) -> list[str]:
        path = self._table("interactions")
        return sorted(load_interactions(path)["scenario"].unique().tolist())


class TextEmbedderResource(ConfigurableResource):
    """The offline MiniLM sentence embedder plus its content-hash cache.

    ``device="cuda"`` moves the same model to a GPU node in production; the cache directory can live on a
    shared volume so every worker reuses the vectors.
    """

    device: str = "cpu"
    cache_dir: str = "data/cache/text_embeddings"
    show_progress: bool = False

    _encoder: MiniLMEncoder | None = PrivateAttr(default=None)

    @property
    def encoder(self) -> MiniLMEncoder:
        if self._encoder is None:  # loading the model costs seconds: do it once, on first use
            self._encoder = MiniLMEncoder(device=self.device, show_progress=self.show_progress)
        return self._encoder

    def cache(self) -> EmbeddingCache:
        path = resolve_path(self.cache_dir) / f"{self.encoder.name}.npz"
        return EmbeddingCache(path, dim=self.encoder.dim)


class FeatureStoreResource(ConfigurableResource):
    """The Feast repository: SQLite online store locally, Redis in production (``online="redis"``)."""

    data_dir: str
    online: str = "sqlite"
    redis_url: str | None = None
    history_ttl_days: float | None = None  # behaviour views: None = never expires
    instruction_max_age_days: float = 30.0

    def store(self):
        from feature_repo.store import OxyFeatureStore  # imports Feast lazily (~7 s) on first use

        ttl_days = {"user_short_term": self.history_ttl_days, "user_long_term": self.history_ttl_days,
                    "reasoning_instruction": self.instruction_max_age_days}
        return OxyFeatureStore(resolve_path(self.data_dir), online=self.online, redis_url=self.redis_url,
                               ttl_days=ttl_days)


class TritonResource(ConfigurableResource):
    """Where models are served: the server's HTTP endpoint and the model repository it was started on, and how
    a new version is rolled out to it (triton_repo/deploy.py).

    Local default: ``127.0.0.1:8000`` (``$OXYREC_TRITON_URL``) over ``<data>/triton_repository`` (``make serve``
    starts it). Production: the URL of a Triton on GPU nodes whose ``--model-repository`` is the same path on a
    shared volume.
    """

    url: str = "127.0.0.1:8000"
    repository: str = "data/triton_repository"
    load_timeout_s: float = 300.0
    keep_versions: int = 3  # version directories kept per model after a promotion
    canary_min_overlap: float | None = None  # block a promotion below this overlap@10 with the serving version
    canary_replay: int = 64  # recent served requests the canary replays (plus the smoke users)
    lock_timeout_s: float = 0.0  # wait for a running deployment this long (0: fail at once)

    def repository_path(self) -> Path:
        return resolve_path(self.repository)

    def control(self):
        from triton_repo.server import ModelControl

        return ModelControl(self.url, load_timeout=self.load_timeout_s)

    def policy(self):
        from triton_repo.deploy import RolloutPolicy

        return RolloutPolicy(keep_versions=self.keep_versions, canary_min_overlap=self.canary_min_overlap,
                             lock_timeout_s=self.lock_timeout_s)


class ArtifactStoreResource(ConfigurableResource):
    """The data directory seen by assets that keep versioned files beside their IO-managed value
    (codebooks, checkpoints, model repositories), or that read their own previous materialization."""

    root: str

    def asset_dir(self, asset_name: str) -> Path:
        path = resolve_path(self.root) / asset_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def previous(self, asset_name: str, partition: str | None = None):
        """The asset's last stored value, or None (first run)."""
        from .io_managers import read_value

        try:
            root = resolve_path(self.root)
            return read_value(root / asset_name / (partition or "_"), root)
        except FileNotFoundError:
            return None


def default_resources(settings: Settings) -> dict:
    from .io_managers import LocalArtifactIOManager

    root = settings.data_root
    synth = settings.synthetic
    return {
        "io_manager": LocalArtifactIOManager(root=str(root)),
        "artifacts": ArtifactStoreResource(root=str(root)),
        "data_source": DataSourceResource(
            source=settings.data.source,
            files_dir=settings.data.files_dir,
            cache_dir=str(root / "source"),
            **synth.model_dump(),  # the world's fields, by the same names
        ),
        "text_embedder": TextEmbedderResource(cache_dir=str(root / "cache" / "text_embeddings")),
        "triton": TritonResource(url=os.environ.get("OXYREC_TRITON_URL", "127.0.0.1:8000"),
                                 repository=str(root / "triton_repository")),
        "feature_store": FeatureStoreResource(
            data_dir=str(root / settings.features.store_dir),
            online=settings.features.online_store,
            redis_url=settings.features.redis_url,
            history_ttl_days=settings.features.history_ttl_days,
            instruction_max_age_days=settings.features.instruction_max_age_days,
        ),
    }
