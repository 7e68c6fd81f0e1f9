"""Staged rollout of a new model version to a running Triton: candidate, smoke test, canary, promotion, rollback.

N = the version the live model serves (None on a first deploy), C = N + 1 = the candidate. Every model ``m`` of
the repository (encoder, decoder step, generate) goes through the same steps, in this order:

    lock      an exclusive ``fcntl`` lock on ``<repo>/.deploy.lock``: one deployment at a time, across threads and
              processes (the lock dies with its process); a second deployment fails at once (or after
              ``lock_timeout_s``) with the holder's pid
    recover   leftovers of an interrupted deployment are removed: candidate models, ``.publish-*`` copies, and
              version directories above the live model's pinned version
    stage     ``<repo>/m__candidate/`` = the staged files as version C, config pinned to [C]: a model of its own,
              so no request addressed to ``m`` can reach it; the live model is not touched
    load      Triton loads every ``m__candidate``
    smoke     the smoke requests, sent to ``generate__candidate`` version C, must return the in-process answers
    canary    (when N exists) N and C both answer the smoke users and replayed recent requests, each encoded with
              its own version's client metadata (models/export/version_client.py): mean overlap@k of their item
              lists and each one's latency are recorded; ``min_overlap`` (default None = report only) blocks
    promote   C is published into ``<repo>/m/C`` (copy + fsync + rename) and ``m/config.pbtxt`` is rewritten
              (atomically) pinned to ``version_policy: specific [C]`` with ``SERVING_VERSION = C``; loading ``m``
              makes Triton load C and unload N once C is ready
    verify    the smoke requests again, to ``m`` version C (the instance that now takes traffic)
    cleanup   the candidate models are unloaded and deleted; version directories older than the newest
              ``keep_versions`` are deleted (pruning never touches the serving version)

Rollback, from any failing step: the candidate models are unloaded and deleted; if the promotion had started,
``m/config.pbtxt`` is restored (pinned to N; removed on a first deploy), version C is deleted and ``m`` is loaded
again (unloaded on a first deploy), then N must be ready (absent on a first deploy). :class:`DeployError` names
the step and the cause and says either "rolled back: serving {...}" or "ROLLBACK INCOMPLETE: ..." with what is on
disk (which is what a restarted server would serve). A server that died mid-deployment is such a case: the
repository on disk is still restored, so a restart serves N.

Clients address the version named by ``SERVING_VERSION`` (triton_repo/client.py); unversioned requests get
Triton's default, the highest loaded version of ``m``, which is also N until the promotion.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from models.artifacts import atomic_write_text, fsync_dir
from models.export.repository import (
    MODELS,
    config_interface,
    list_versions,
    manifest_sha256,
    pinned_config,
    publish_version,
    remove_version,
    serving_version_of,
)
from models.export.version_client import VersionClient

from .server import ModelControl

__all__ = ["CANDIDATE_SUFFIX", "DeployError", "DeployLockedError", "DeployResult", "RolloutPolicy", "deploy",
           "deploy_lock", "serving_versions", "ModelControl"]

CANDIDATE_SUFFIX = "__candidate"
GENERATE = "oxygenrec_generate"
LOCK_FILE = ".deploy.lock"


class DeployError(RuntimeError):
    """A deployment failed; ``rolled_back`` says whether the previous state serves again."""

    def __init__(self, message: str, step: str = "", rolled_back: bool = False, serving: dict | None = None):
        super().__init__(message)
        self.step, self.rolled_back, self.serving = step, rolled_back, serving or {}


class DeployLockedError(DeployError):
    """Another deployment holds the repository's lock."""


@dataclass(frozen=True)
class RolloutPolicy:
    keep_versions: int = 3  # version directories kept per model after a promotion (the serving one included)
    canary_min_overlap: float | None = None  # block the promotion below this mean overlap@k (None: report only)
    canary_k: int = 10
    canary_beam: int = 20
    lock_timeout_s: float = 0.0  # wait this long for another deployment to finish (0: fail at once)

    def __post_init__(self) -> None:
        if int(self.keep_versions) < 1:
            raise ValueError(f"keep_versions must be >= 1, got {self.keep_versions}")
        if self.canary_min_overlap is not None and not 0.0 <= self.canary_min_overlap <= 1.0:
            raise ValueError(f"canary_min_overlap must be in [0, 1] or None, got {self.canary_min_overlap}")
        if not 1 <= int(self.canary_k) <= int(self.canary_beam):
            raise ValueError(f"need 1 <= canary_k <= canary_beam, got {self.canary_k}, {self.canary_beam}")
        if self.lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s must be >= 0, got {self.lock_timeout_s}")


@dataclass
class DeployResult:
    versions: dict[str, int]  # serving now
    previous: dict[str, int | None]
    smoke_users: int
    load_seconds: dict[str, float]
    canary: dict | None
    pruned: dict[str, list[int]]
    steps: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ lock
@contextmanager
def deploy_lock(repo_root: str | os.PathLike, timeout_s: float = 0.0):
    """Exclusive lock of a model repository for one deployment (flock on ``<repo>/.deploy.lock``)."""
    repo_root = Path(repo_root)
    repo_root.mkdir(parents=True, exist_ok=True)
    path = repo_root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    raise DeployLockedError(f"another deployment holds {path} ({holder}); nothing was changed",
                                            step="lock") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ------------------------------------------------------------------------------------------ repository state
def _live_config(repo_root: Path, model: str) -> Path:
    return repo_root / model / "config.pbtxt"


def serving_versions(repo_root: str | os.PathLike, models=MODELS) -> dict[str, int | None]:
    """The version each model serves according to the repository on disk: its config's SERVING_VERSION, else
    the highest version directory (Triton's default policy), None if the model has none."""
    repo_root = Path(repo_root)
    out = {}
    for m in models:
        cfg = _live_config(repo_root, m)
        pinned = serving_version_of(cfg.read_text()) if cfg.is_file() else None
        versions = list_versions(repo_root, m)
        out[m] = pinned if pinned in versions else max(versions, default=None)
    return out


def _recover(control: ModelControl, repo_root: Path, models) -> list[str]:
    """Remove what an interrupted deployment left behind; returns what was removed."""
    removed = []
    serving = serving_versions(repo_root, models)
    for m in models:
        cand = repo_root / (m + CANDIDATE_SUFFIX)
        if cand.exists():
            try:
                control.unload(m + CANDIDATE_SUFFIX)
            except Exception:  # noqa: BLE001 - not loaded, or no server: the directory goes anyway
                pass
            shutil.rmtree(cand, ignore_errors=True)
            removed.append(cand.name)
        mdir = repo_root / m
        if mdir.is_dir():
            for p in list(mdir.glob(".publish-*")) + list(mdir.glob(".removed-*")):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(f"{m}/{p.name}")
            pinned = serving[m]
            for v in list_versions(repo_root, m):
                if pinned is not None and v > pinned:  # published by a promotion that never completed
                    remove_version(repo_root, m, v)
                    removed.append(f"{m}/{v}")
    return removed


def _stage_candidate(repo_root: Path, staged_root: Path, model: str, version: int) -> Path:
    """``<repo>/<model>__candidate/{config.pbtxt, <version>/}`` from the staged files; returns the version dir."""
    staged = [p for p in sorted((staged_root / model).iterdir()) if p.is_dir() and p.name.isdigit()]
    if len(staged) != 1:
        raise ValueError(f"{staged_root / model} must hold exactly one staged version, found {[p.name for p in staged]}")
    staged_cfg = (staged_root / model / "config.pbtxt").read_text()
    live_cfg = _live_config(repo_root, model)
    if live_cfg.is_file() and config_interface(staged_cfg) != config_interface(live_cfg.read_text()):
        raise ValueError(f"the staged {model}/config.pbtxt changes the model's interface against the live {live_cfg}: "
                         "update the live config deliberately before deploying")
    name = model + CANDIDATE_SUFFIX
    cand = repo_root / name
    shutil.rmtree(cand, ignore_errors=True)
    cand.mkdir(parents=True)
    vdir = cand / str(publish_version(repo_root, staged[0], name, version=version))
    atomic_write_text(cand / "config.pbtxt", pinned_config(staged_cfg, name, [version], version, manifest_sha256(vdir)))
    return vdir


# ------------------------------------------------------------------------------------------ requests
def _answer(url: str, model: str, version: int, arrays: dict, beam: int, k: int, one_by_one: bool = False):
    """(item indices [B, k], item ids [B][k], per-request seconds) from ``model`` version ``version``."""
    from .client import TritonRecommender

    with TritonRecommender(url, model=model, version=str(version)) as rec:
        if not one_by_one:
            t0 = time.perf_counter()
            items, _ = rec.recommend(arrays, beam_width=beam, top_k=k)
            return items, rec.last_item_ids, [time.perf_counter() - t0]
        b = next(iter(arrays.values())).shape[0]
        items, ids, secs = [], [], []
        for i in range(b):
            t0 = time.perf_counter()
            it, _ = rec.recommend({n: a[i : i + 1] for n, a in arrays.items()}, beam_width=beam, top_k=k)
            secs.append(time.perf_counter() - t0)
            items.append(it)
            ids += rec.last_item_ids
        return np.concatenate(items), ids, secs


def _smoke(url: str, model: str, version: int, arrays: dict, expected: np.ndarray, beam: int, k: int) -> int:
    items, _, _ = _answer(url, model, version, arrays, beam, k)
    mismatched = np.flatnonzero((items != expected).any(axis=1))
    if len(mismatched):
        i = mismatched[0]
        raise ValueError(f"{model} version {version} answers differ from the in-process model for {len(mismatched)} of "
                         f"{len(items)} smoke users (first: user {i}: served {items[i].tolist()}, expected "
                         f"{expected[i].tolist()})")
    return len(items)


def _latency(secs: list[float]) -> dict:
    ms = np.asarray(secs) * 1e3
    return {"n": int(ms.size), "p50_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def run_canary(url: str, repo_root: Path, serving: int, candidate: int, frame: pd.DataFrame,
               policy: RolloutPolicy) -> dict:
    """Serving (live ``generate``, version ``serving``) vs candidate (``generate__candidate``, ``candidate``) on the
    request rows ``frame`` (column ``source``: "smoke" / "replay"; rows of scenarios one side does not serve are
    left out), one request per row, each side encoded with its own version's client metadata.
    overlap@k of a row = |top-k ids of N ∩ top-k ids of C| / k (item ids: the two catalogs may differ)."""
    sides = {"serving": (GENERATE, serving), "candidate": (GENERATE + CANDIDATE_SUFFIX, candidate)}
    clients = {side: VersionClient.load(repo_root / model / str(v)) for side, (model, v) in sides.items()}
    common = set(clients["serving"].scenarios) & set(clients["candidate"].scenarios)
    rows = frame[frame["scenario"].isin(common)].reset_index(drop=True)
    k, beam = policy.canary_k, policy.canary_beam
    report = {"k": k, "beam": beam, "requests": len(rows), "serving_version": serving, "candidate_version": candidate,
              "min_overlap": policy.canary_min_overlap, f"overlap@{k}": None, "overlap_by_source": {}, "blocked": False}
    if rows.empty:
        return report
    ids, now = {}, time.time()  # one request time: both sides see the same instruction ages
    for side, (model, version) in sides.items():
        arrays = clients[side].inputs(rows, now=now)
        _, ids[side], secs = _answer(url, model, version, arrays, beam, k, one_by_one=True)
        report[f"latency_{side}"] = _latency(secs)
    overlap = np.array([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids["serving"], ids["candidate"])])
    source = rows["source"].to_numpy() if "source" in rows else np.full(len(rows), "replay", dtype=object)
    report[f"overlap@{k}"] = round(float(overlap.mean()), 4)
    report["overlap_by_source"] = {str(s): round(float(overlap[source == s].mean()), 4) for s in sorted(set(source))}
    report["blocked"] = bool(policy.canary_min_overlap is not None and overlap.mean() < policy.canary_min_overlap)
    return report


# ------------------------------------------------------------------------------------------ deploy
def deploy(
    control: ModelControl,
    url: str,
    repo_root: str | os.PathLike,
    staged_root: str | os.PathLike,
    smoke_arrays: dict[str, np.ndarray],
    expected_items: np.ndarray,
    beam_width: int,
    top_k: int,
    canary_frame: pd.DataFrame | None = None,
    policy: RolloutPolicy = RolloutPolicy(),
    models: tuple[str, ...] = MODELS,
    on_step: Callable[[str], None] | None = None,
) -> DeployResult:
    """Deploy ``staged_root/<model>/<v>`` of every model in ``models`` as the next version (module docstring).

    ``smoke_arrays``/``expected_items``: the generate inputs of the smoke users and their in-process top-k items
    (beam ``beam_width``); ``canary_frame``: online feature rows (user_id, scenario, source, the features of
    models/export/version_client.ONLINE_COLUMNS) for the canary, None to skip it. ``on_step(step)`` is called as
    each step starts (progress logging). Raises DeployError (DeployLockedError when another deployment runs)."""
    repo_root, staged_root = Path(repo_root), Path(staged_root)
    if GENERATE not in models:
        raise ValueError(f"models must include {GENERATE} (the smoke test runs on it), got {models}")
    timeline: list[tuple[str, float]] = []
    state = {"step": "lock", "t": time.perf_counter(), "candidates": [], "promoted": False}

    def step(name: str) -> None:
        now = time.perf_counter()
        timeline.append((state["step"], round(now - state["t"], 3)))
        state["step"], state["t"] = name, now
        if on_step is not None:
            on_step(name)

    with deploy_lock(repo_root, policy.lock_timeout_s):
        previous = serving_versions(repo_root, models)
        old_configs = {m: _live_config(repo_root, m).read_text() if _live_config(repo_root, m).is_file() else None
                       for m in models}
        try:
            step("recover")
            _recover(control, repo_root, models)
            previous = serving_versions(repo_root, models)
            old_configs = {m: _live_config(repo_root, m).read_text() if _live_config(repo_root, m).is_file() else None
                           for m in models}
            candidate = max((max(list_versions(repo_root, m), default=0) for m in models), default=0) + 1
            step("stage")
            for m in models:
                _stage_candidate(repo_root, staged_root, m, candidate)
                state["candidates"].append(m + CANDIDATE_SUFFIX)
            step("load")
            seconds = control.load_all(state["candidates"])
            step("smoke")
            n_smoke = _smoke(url, GENERATE + CANDIDATE_SUFFIX, candidate, smoke_arrays, expected_items, beam_width, top_k)
            canary = None
            if canary_frame is not None and previous.get(GENERATE) is not None and len(canary_frame):
                step("canary")
                canary = run_canary(url, repo_root, previous[GENERATE], candidate, canary_frame, policy)
                if canary["blocked"]:
                    raise ValueError(f"canary overlap@{policy.canary_k} {canary[f'overlap@{policy.canary_k}']:.3f} "
                                     f"< canary_min_overlap {policy.canary_min_overlap} over {canary['requests']} requests")
            step("promote")
            state["promoted"] = True
            for m in models:
                staged = repo_root / (m + CANDIDATE_SUFFIX) / str(candidate)
                text = (repo_root / (m + CANDIDATE_SUFFIX) / "config.pbtxt").read_text()
                (repo_root / m).mkdir(exist_ok=True)
                vdir = repo_root / m / str(publish_version(repo_root, staged, m, version=candidate))
                atomic_write_text(_live_config(repo_root, m),
                                  pinned_config(text, m, [candidate], candidate, manifest_sha256(vdir)))
            promote_seconds = control.load_all(models)
            seconds.update({f"{m} (promote)": s for m, s in promote_seconds.items()})
            step("verify")
            _smoke(url, GENERATE, candidate, smoke_arrays, expected_items, beam_width, top_k)
            for m in models:
                if not control.model_ready(m, candidate):
                    raise RuntimeError(f"{m} version {candidate} is not ready after its promotion")
        except Exception as exc:
            failed = state["step"]
            problems = _rollback(control, repo_root, models, previous, old_configs, state)
            kept = {m: v for m, v in previous.items() if v is not None}
            if problems:
                raise DeployError(
                    f"deployment failed at {failed}: {exc}; ROLLBACK INCOMPLETE: {'; '.join(problems)}; on disk the "
                    f"repository is restored to {kept or 'no model'} (what a restarted server serves)",
                    step=failed, rolled_back=False, serving=kept) from exc
            raise DeployError(f"deployment failed at {failed}: {exc}; rolled back: serving "
                              f"{kept or 'nothing (first deploy: no model left loaded)'}",
                              step=failed, rolled_back=True, serving=kept) from exc
        # committed: version C serves; what follows cannot fail the deployment, only warn
        step("cleanup")
        warnings = _drop_candidates(control, repo_root, state["candidates"])
        pruned = {}
        for m in models:
            try:
                pruned[m] = _prune(repo_root, m, policy.keep_versions)
            except OSError as e:
                warnings.append(f"pruning {m}: {e}")
        step("done")
        return DeployResult({m: candidate for m in models}, previous, n_smoke, seconds, canary, pruned, timeline,
                            warnings)


def _unload(control: ModelControl, name: str) -> str | None:
    """Unload ``name``; None when it is not loaded afterwards, else what went wrong."""
    try:
        control.unload(name)
    except Exception as e:  # noqa: BLE001 - Triton refuses to unload a model it never loaded: check below
        if control.server_live() and not control.model_ready(name):
            return None
        return f"unloading {name}: {str(e).splitlines()[0]}"
    return None


def _drop_candidates(control: ModelControl, repo_root: Path, names) -> list[str]:
    problems = [p for p in (_unload(control, name) for name in names) if p]
    for name in names:
        shutil.rmtree(repo_root / name, ignore_errors=True)
    fsync_dir(repo_root)
    return problems


def _prune(repo_root: Path, model: str, keep: int) -> list[int]:
    versions = list_versions(repo_root, model)
    old = versions[:-keep] if len(versions) > keep else []
    for v in old:
        remove_version(repo_root, model, v)
    return old


def _rollback(control: ModelControl, repo_root: Path, models, previous: dict, old_configs: dict, state: dict) -> list[str]:
    """Undo a failed deployment (module docstring); returns what could not be undone on the server."""
    problems = _drop_candidates(control, repo_root, state["candidates"]) if state["candidates"] else []
    if not state["promoted"]:
        return problems
    candidate_dirs = {}
    for m in models:  # the repository on disk first: it is what any (re)started server loads
        prev, old = previous.get(m), old_configs.get(m)
        for v in list_versions(repo_root, m):
            if prev is None or v > prev:
                remove_version(repo_root, m, v)
                candidate_dirs[m] = v
        if old is not None:
            atomic_write_text(_live_config(repo_root, m), old)
        elif prev is None:
            shutil.rmtree(repo_root / m, ignore_errors=True)
    for m in models:
        if previous.get(m) is None:  # first deploy: nothing of it may stay loaded
            problem = _unload(control, m)
            if problem:
                problems.append(problem)
            continue
        try:
            control.load(m)
            if not control.model_ready(m, previous[m]):
                problems.append(f"{m} version {previous[m]} is not ready after reloading it")
        except Exception as e:  # noqa: BLE001 - a dead server, a failing reload: reported, never swallowed
            problems.append(f"reloading {m}: {str(e).splitlines()[0]}")
    return problems
