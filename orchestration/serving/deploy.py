"""Atomic deployment of a staged model repository version to a running Triton server, with rollback.

1. publish: every model's staged version directory becomes ``<repo>/<model>/<N+1>`` by one rename each;
2. load: ask the server (explicit model control) to load each model, which picks up the new version;
3. smoke: send fixed requests and compare the served items with the in-process beam search;
4. on any failure: remove the new versions and reload, so the previous versions keep (or resume) serving,
   then raise :class:`DeployError` saying what failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.export.repository import MODELS, list_versions, publish_version, remove_version


class DeployError(RuntimeError):
    """A deployment failed and was rolled back."""


@dataclass(frozen=True)
class DeployResult:
    versions: dict[str, int]
    previous: dict[str, int | None]
    smoke_users: int
    load_seconds: dict[str, float]


class ModelControl:
    """Triton's model-control API through tritonclient (works for a local or a remote server)."""

    def __init__(self, url: str, timeout: float = 300.0):
        import tritonclient.http as httpclient

        self.url = url
        self._client = httpclient.InferenceServerClient(url, network_timeout=timeout, connection_timeout=timeout)

    def load(self, model: str) -> float:
        import time

        start = time.perf_counter()
        self._client.load_model(model)
        return time.perf_counter() - start

    def model_ready(self, model: str, version: str | int = "") -> bool:
        return bool(self._client.is_model_ready(model, str(version)))

    def close(self) -> None:
        self._client.close()


def deploy(
    control: ModelControl,
    url: str,
    repo_root: str | Path,
    staged_root: str | Path,
    smoke_arrays: dict[str, np.ndarray],
    expected_items: np.ndarray,
    beam_width: int,
    top_k: int,
) -> DeployResult:
    """Publish ``staged_root/<model>/<v>`` for every model, load, smoke-test, roll back on failure."""
    from .client import TritonRecommender

    repo_root, staged_root = Path(repo_root), Path(staged_root)
    previous = {m: max(list_versions(repo_root, m), default=None) for m in MODELS}
    published: dict[str, int] = {}
    step = "publish"
    try:
        for model in MODELS:
            staged = [p for p in sorted((staged_root / model).iterdir()) if p.is_dir() and p.name.isdigit()]
            if len(staged) != 1:
                raise DeployError(f"{staged_root / model} must hold exactly one staged version, found {staged}")
            published[model] = publish_version(repo_root, staged[0], model)
        step = "load"
        seconds = {model: control.load(model) for model in MODELS}
        step = "smoke test"
        with TritonRecommender(url) as recommender:
            items, _ = recommender.recommend(smoke_arrays, beam_width=beam_width, top_k=top_k)
        mismatched = np.flatnonzero((items != expected_items).any(axis=1))
        if len(mismatched):
            raise DeployError(
                f"served recommendations differ from the in-process model for {len(mismatched)} of "
                f"{len(items)} smoke users (first: user {mismatched[0]}: served {items[mismatched[0]].tolist()}, "
                f"expected {expected_items[mismatched[0]].tolist()})"
            )
        return DeployResult(published, previous, len(items), seconds)
    except Exception as exc:
        for model, version in published.items():
            remove_version(repo_root, model, version)
            try:  # reload so the server serves the remaining (previous) version again
                if previous[model] is not None:
                    control.load(model)
            except Exception:  # noqa: BLE001 - the original error is what the user needs
                pass
        kept = {m: v for m, v in previous.items() if v is not None}
        raise DeployError(f"deployment failed at {step}: {exc}; rolled back, serving versions {kept or 'none'}") from exc
