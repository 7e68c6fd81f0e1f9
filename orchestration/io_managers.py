"""IO manager: every asset value is a file under the data directory, written atomically.

Layout: ``<root>/<asset key path>/<partition or "_">.<ext>`` where the format follows the value's type:

- ``pandas.DataFrame``            -> ``.parquet``
- ``numpy.ndarray``               -> ``.npy``
- ``dict`` of numpy arrays        -> ``.npz``   (loaded with ``allow_pickle=False``)
- other ``dict`` / ``list``       -> ``.json``  (manifests: paths, parameters, metrics)

A manifest stores every path inside the data directory relative to it, as ``$DATA/<relative path>``, and the
path is made absolute again against the directory it is read from: a data directory can be moved or mounted
elsewhere (another machine, a Kubernetes volume) and its manifests still point into it.

Values are written through ``models.artifacts.atomic_write`` (temporary file, fsync, rename, fsync of the
directory), so a crash never leaves a half-written artifact and a failed run leaves the previous good file
untouched. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

from models.artifacts import atomic_write, atomic_write_json

from .settings import resolve_path

_EXTENSIONS = (".parquet", ".npz", ".npy", ".json")
DATA_TOKEN = "$DATA/"


def relative_paths(value: Any, root: Path) -> Any:
    """``value`` with every absolute path string (or Path) inside ``root`` written as ``$DATA/<relative>``."""
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(v, root) for v in value]
    if isinstance(value, (str, os.PathLike)) and os.path.isabs(value):
        path = Path(value)
        if path.is_relative_to(root):
            return DATA_TOKEN + path.relative_to(root).as_posix()
    return value


def absolute_paths(value: Any, root: Path) -> Any:
    """The inverse of :func:`relative_paths` against ``root`` (where the manifest is read now)."""
    if isinstance(value, dict):
        return {k: absolute_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_paths(v, root) for v in value]
    if isinstance(value, str) and value.startswith(DATA_TOKEN):
        return str(root / value[len(DATA_TOKEN):])
    return value


def write_value(base: Path, value: Any, root: Path | None = None) -> Path:
    """Store ``value`` at ``base`` + the extension of its type; manifests get root-relative paths (``root``)."""
    if isinstance(value, pd.DataFrame):
        path = base.with_suffix(".parquet")
        atomic_write(path, lambda p: value.to_parquet(p, index=False))
    elif isinstance(value, np.ndarray):
        path = base.with_suffix(".npy")
        atomic_write(path, lambda p: np.save(p, value, allow_pickle=False))
    elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
        path = base.with_suffix(".npz")
        atomic_write(path, lambda p: np.savez(p, **value))
    elif isinstance(value, (dict, list)):
        path = base.with_suffix(".json")
        stored = value if root is None else relative_paths(value, root)
        atomic_write_json(path, stored, indent=2, sort_keys=True, default=str)
    else:
        raise TypeError(f"cannot store a {type(value).__name__}: return a DataFrame, ndarray, dict or list")
    # Only one format per artifact: drop a stale file of another type left by an older code version.
    for ext in _EXTENSIONS:
        other = base.with_suffix(ext)
        if other != path and other.exists():
            other.unlink()
    return path


def read_value(base: Path, root: Path | None = None) -> Any:
    """The value stored at ``base``; a manifest's ``$DATA/`` paths are resolved against ``root``."""
    for ext in _EXTENSIONS:
        path = base.with_suffix(ext)
        if not path.exists():
            continue
        if ext == ".parquet":
            return pd.read_parquet(path)
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        value = json.loads(path.read_text())
        return value if root is None else absolute_paths(value, root)
    raise FileNotFoundError(f"no stored value at {base}.* — materialize the upstream asset first")


class LocalArtifactIOManager(ConfigurableIOManager):
    """Stores asset values under ``root`` (the git-ignored data directory, or a shared volume in production)."""

    root: str

    @property
    def _root(self) -> Path:
        return resolve_path(self.root)

    def _base(self, asset_path: list[str], partition: str | None) -> Path:
        return self._root.joinpath(*asset_path) / (partition if partition else "_")

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        asset_path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            path = write_value(self._base(asset_path, None), obj, self._root)
            context.add_output_metadata({"path": str(path), "bytes": path.stat().st_size})
            return
        # Partitioned assets return {partition_key: value}, so one run can write a whole range of
        # partitions (single-run backfills) and a one-partition run looks the same.
        keys = list(context.asset_partition_keys)
        if not isinstance(obj, dict) or set(obj) != set(keys):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a dict keyed by partitions {keys}, got {got}")
        paths = [write_value(self._base(asset_path, key), obj[key], self._root) for key in keys]
        context.add_output_metadata({"paths": [str(p) for p in paths], "bytes": sum(p.stat().st_size for p in paths)})

    def load_input(self, context: InputContext) -> Any:
        asset_path = list(context.asset_key.path)
        if context.has_asset_partitions:
            # Always {partition_key: value}, for partitioned and unpartitioned consumers alike. An input
            # declared with metadata allow_missing_partitions=True skips partitions never materialized.
            keys = list(context.asset_partition_keys)
            if (context.definition_metadata or {}).get("allow_missing_partitions"):
                keys = [k for k in keys if any(self._base(asset_path, k).with_suffix(e).exists() for e in _EXTENSIONS)]
            return {key: read_value(self._base(asset_path, key), self._root) for key in keys}
        return read_value(self._base(asset_path, None), self._root)
