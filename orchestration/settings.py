"""The pipeline's one configuration file (``params.yaml``), its schema and how it is found.

Every stage reads its section from the same file, and DVC reads its params from it too, so a parameter
change is visible to both. The schema lives here as pydantic models: unknown keys are errors (a typo is
caught at load time rather than silently ignored) and paths are validated.

Lookup order: ``OXYREC_CONFIG`` (a path) or ``params.yaml`` at the project root. Overrides by environment:
``OXYREC_HOME`` replaces ``data.root``; ``OXYREC_DATA_DIR`` switches the source to ``files`` in that directory.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    root: str = "data"
    source: Literal["synthetic", "files"] = "synthetic"
    files_dir: str | None = None
    scenarios: list[str] | Literal["auto"] = Field(
        default_factory=lambda: ["homepage", "product_detail", "cart", "feed", "search", "checkout"]
    )

    @field_validator("scenarios")
    @classmethod
    def _scenario_names(cls, value):
        if value == "auto":
            return value
        if not value:
            raise ValueError("data.scenarios must list at least one scenario (or be 'auto')")
        bad = [s for s in value if not s or not all(c.isalnum() or c in "_-" for c in s)]
        if bad:
            raise ValueError(f"data.scenarios: names must be alphanumeric/_/-, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"data.scenarios has duplicates: {value}")
        return value

    @model_validator(mode="after")
    def _files_need_dir(self):
        if self.source == "files" and not self.files_dir:
            raise ValueError("data.source is 'files' but data.files_dir is not set")
        return self


class SyntheticSettings(_Section):
    n_items: int = Field(5000, ge=10)
    n_users: int = Field(3000, ge=10)
    n_days: int = Field(90, ge=7)
    start_date: str = "2026-09-01"
    sessions_per_user_mean: float = Field(8.0, gt=0)
    life_event_rate: float = Field(0.3, ge=0, le=1)


class ValidationSettings(_Section):
    min_interactions_per_user: int = Field(3, ge=1)
    timestamp_min: dt.date = dt.date(1995, 1, 1)
    timestamp_max: dt.date = dt.date(2100, 1, 1)

    def timestamp_range(self) -> tuple[int, int]:
        to_ts = lambda d: int(dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp())  # noqa: E731
        return to_ts(self.timestamp_min), to_ts(self.timestamp_max)


class EmbeddingSettings(_Section):
    batch_size: int = Field(128, ge=1)
    fusion: Literal["concat", "text_only", "pca_concat"] = "concat"
    text_weight: float = Field(0.8, gt=0, le=1)
    behaviour_dim: int = Field(64, ge=2)
    behaviour_window: int = Field(5, ge=1)
    fused_dim: int = Field(256, ge=2)


class SemanticIdGate(_Section):
    """Blocking quality thresholds: a codebook outside them never reaches training."""

    min_l1_coverage: float = Field(0.9, ge=0, le=1)
    max_collision_p99: float = Field(5, ge=1)
    min_l1_purity: float = Field(0.0, ge=0, le=1)


class SemanticIdSettings(_Section):
    levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=2)
    assignment: Literal["plain", "balanced"] = "balanced"
    max_iter: int = Field(50, ge=1)
    fit_sample_size: int | None = Field(None, ge=1)
    refit: Literal["auto", "always", "never"] = "auto"   # auto: refit only when the staleness report asks
    gate: SemanticIdGate = SemanticIdGate()


class ScheduleSettings(_Section):
    retrain_cron: str = "0 3 * * *"
    timezone: str = "UTC"


class Settings(_Section):
    seed: int = 0
    data: DataSettings = DataSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    validation: ValidationSettings = ValidationSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    semantic_ids: SemanticIdSettings = SemanticIdSettings()
    schedule: ScheduleSettings = ScheduleSettings()

    @property
    def data_root(self) -> Path:
        return resolve_path(self.data.root)


def resolve_path(value: str | os.PathLike) -> Path:
    """Resolve a configured path against the project root and refuse what cannot be a directory path."""
    text = str(value)
    if not text or "\x00" in text:
        raise ValueError(f"invalid path in configuration: {value!r}")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"configured directory {path} exists and is not a directory")
    return path


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read the config file, apply the environment overrides and validate everything."""
    config_path = Path(path or os.environ.get("OXYREC_CONFIG") or DEFAULT_CONFIG)
    if not config_path.is_file():
        raise FileNotFoundError(f"configuration file not found: {config_path}")
    raw = yaml.safe_load(config_path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: top level must be a mapping, got {type(raw).__name__}")
    data = dict(raw.get("data") or {})
    if os.environ.get("OXYREC_HOME"):
        data["root"] = os.environ["OXYREC_HOME"]
    if os.environ.get("OXYREC_DATA_DIR"):
        data["source"] = "files"
        data["files_dir"] = os.environ["OXYREC_DATA_DIR"]
        data["scenarios"] = "auto"
    raw["data"] = data
    try:
        return Settings.model_validate(raw)
    except Exception as exc:  # pydantic's message names the key; add the file
        raise ValueError(f"invalid configuration in {config_path}:\n{exc}") from exc


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    return load_settings()
