"""The serving path a client runs: Feast online features -> the SERVING version's own encoder -> Triton.

Per request: ask Triton which version serves (:meth:`TritonRecommender.serving_version`, cached for
``version_ttl_s``), load that version's client metadata from its directory in the model repository
(models/export/version_client.py: encoder vocabularies, SID table, checksums; cached per version), build the
inputs with it and send them to exactly that version. The answer's ``model_version`` is checked, so a client
can never encode with one version and be served by another: a version that disappears between the two steps
(a promotion unloads the old one) makes the request fail with "unavailable", and the client asks once more.
A mismatch it cannot resolve is an error (VersionMismatchError / ServingVersionError), never a silent mix.

Features are read in the client (not inside a Triton model) so the model repository stays stateless and loads
unchanged on any Triton, and the feature store's credentials stay out of the inference servers (see
triton_repo/README.md). Each request's (user, scenario, time, version) goes to a bounded request log
(triton_repo/request_log.py) that the deployment's canary replays.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.export.version_client import VersionClient, VersionMismatchError

from .client import ServingVersionError, TritonRecommender
from .request_log import RequestLog

__all__ = ["Recommender", "REQUEST_LOG", "GENERATE", "online_rows"]

GENERATE = "oxygenrec_generate"
REQUEST_LOG = Path("serving_requests") / "requests.jsonl"  # under the data directory


def online_rows(feature_store, requests: pd.DataFrame) -> pd.DataFrame:
    """Online feature rows for ``requests`` (columns user_id, scenario; other columns are kept), in their order:
    one batched online read per scenario."""
    parts = []
    for scenario, group in requests.groupby("scenario", sort=False):
        online = feature_store.online_features(group["user_id"].astype(str).tolist(), str(scenario))
        part = pd.DataFrame(online, index=group.index)
        parts.append(pd.concat([group, part.drop(columns=[c for c in part.columns if c in group.columns])], axis=1))
    if not parts:
        return requests.iloc[:0]
    return pd.concat(parts).loc[requests.index]


def _version_gone(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "unknown model" in msg or "not at ready state" in msg or "unavailable" in msg or "not found" in msg


class Recommender:
    def __init__(self, feature_store, repository: str | os.PathLike, url: str, protocol: str = "http",
                 items: pd.DataFrame | None = None, request_log: RequestLog | None = None,
                 model: str = GENERATE, version_ttl_s: float = 2.0, timeout: float = 60.0):
        self.feature_store = feature_store
        self.repository = Path(repository)
        self.url, self.protocol, self.model, self.version_ttl_s = url, protocol, model, version_ttl_s
        self.titles = dict(zip(items["item_id"], items["title"])) if items is not None else {}
        self.request_log = request_log
        self.client = TritonRecommender(url, protocol=protocol, model=model, timeout=timeout)
        self._versions: dict[int, VersionClient] = {}
        self._serving: tuple[int, str | None, float] | None = None  # (version, manifest sha256, monotonic time)
        self.last_features: dict = {}
        self.last_version: int | None = None

    @classmethod
    def from_data_dir(cls, root: str | Path, url: str, protocol: str = "http", online: str = "sqlite",
                      redis_url: str | None = None, repository: str | Path | None = None) -> "Recommender":
        """The client of the pipeline's data directory ``root``: Feast store ``root/feast``, model repository
        ``root/triton_repository`` (or ``repository``), titles from ``root/raw_items`` when present."""
        from feature_repo.store import OxyFeatureStore

        root = Path(root)
        repository = Path(repository) if repository is not None else root / "triton_repository"
        if not repository.is_dir():
            raise FileNotFoundError(f"model repository {repository} not found: run the deploy job (or make demo) first")
        if not (root / "feast").is_dir():
            raise FileNotFoundError(f"feature store {root / 'feast'} not found: materialize online_features first")
        items_path = root / "raw_items" / "_.parquet"
        items = pd.read_parquet(items_path, columns=["item_id", "title"]) if items_path.exists() else None
        store = OxyFeatureStore(root / "feast", online=online, redis_url=redis_url)
        return cls(store, repository, url, protocol, items, RequestLog(root / REQUEST_LOG))

    # ------------------------------------------------------------------ versions
    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def version_client(self, version: int, sha256: str | None = None) -> VersionClient:
        """The client metadata of ``version`` from the model repository (verified once, then cached); with
        ``sha256`` (what Triton reports for the serving version) the local copy must be that exact version."""
        if version not in self._versions:
            vdir = self.repository / self.model / str(version)
            if not vdir.is_dir():
                raise VersionMismatchError(f"Triton serves {self.model} version {version} but {vdir} does not exist: "
                                           "this client reads another model repository than the server")
            self._versions[version] = VersionClient.load(vdir)
        client = self._versions[version]
        if sha256 is not None and client.manifest_sha256 != sha256:
            raise VersionMismatchError(
                f"Triton serves {self.model} version {version} with manifest sha256 {sha256[:12]}, but "
                f"{client.version_dir} has {client.manifest_sha256[:12]}: this client reads another model repository "
                "than the server")
        return client

    def serving(self, refresh: bool = False) -> VersionClient:
        """The client metadata of the version Triton serves (asked at most every ``version_ttl_s``)."""
        now = time.monotonic()
        if refresh or self._serving is None or now - self._serving[2] > self.version_ttl_s:
            self._serving = (*self.client.serving(), now)
        return self.version_client(self._serving[0], self._serving[1])

    def serving_version(self, refresh: bool = False) -> int:
        return self.serving(refresh).version

    @property
    def scenarios(self) -> tuple[str, ...]:
        return self.serving().scenarios

    # ------------------------------------------------------------------ requests
    def features(self, user_id: str, scenario: str) -> pd.DataFrame:
        """One online feature row (unknown users get the store's documented defaults)."""
        return online_rows(self.feature_store, pd.DataFrame({"user_id": [user_id], "scenario": [scenario]}))

    def recommend_frame(self, frame: pd.DataFrame, k: int = 10, beam_width: int = 20
                        ) -> tuple[int, list[list[str]], np.ndarray]:
        """(version, item ids [B][<=k], scores [B, k]) for online feature rows, served by the serving version."""
        from tritonclient.utils import InferenceServerException

        if not 1 <= int(k) <= int(beam_width):
            raise ValueError(f"need 1 <= k <= beam_width, got k={k}, beam_width={beam_width}")
        for attempt in range(2):
            client = self.serving(refresh=attempt > 0)
            version = client.version
            arrays = client.inputs(frame)
            try:
                _, scores = self.client.recommend(arrays, beam_width=beam_width, top_k=k, version=version)
            except InferenceServerException as e:
                if attempt == 0 and _version_gone(e):
                    continue  # the version was unloaded in between (a promotion): ask which one serves now
                raise
            ids = [[i for i in row if i] for row in self.client.last_item_ids]
            self.last_version = version
            return version, ids, scores
        raise ServingVersionError(f"{self.model} changed version twice during one request at {self.url}")

    def recommend(self, user_id: str, scenario: str, k: int = 10, beam_width: int = 20) -> pd.DataFrame:
        """Top-k items for one user in one scenario: rank, item_id, score (log p), title."""
        if scenario not in self.scenarios:
            raise ValueError(f"unknown scenario {scenario!r}; served scenarios: {list(self.scenarios)}")
        frame = self.features(user_id, scenario)
        version, ids, scores = self.recommend_frame(frame, k=k, beam_width=max(beam_width, k))
        self.last_features = frame.iloc[0].to_dict()
        if self.request_log is not None:
            self.request_log.append(user_id, scenario, version)
        ids = ids[0]
        return pd.DataFrame(
            {"rank": range(1, len(ids) + 1), "item_id": ids, "score": scores[0][: len(ids)],
             "title": [self.titles.get(i, "") for i in ids]}
        )
