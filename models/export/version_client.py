"""Self-contained model versions: everything a client needs to build the inputs of ONE published version travels
inside that version's directory, so a client can never encode with one version and be served by another.

Files written into ``oxygenrec_generate/<v>/`` by :func:`write_client_files` (listed with their sha256 in the
version's ``manifest.json`` like every other file):

    client.json      {"format": "oxyrec.serving_client", "format_version": 1,
                      "encoder": ExampleEncoder.to_dict()        (scenarios, profile fields/tokens, encoder config),
                      "generator_config": {...},
                      "sid_table": {"sha256", "codebook_version", "level_sizes", "n_items"},
                      "features": {"online_columns": [...], "instruction_dim", "short_sids": "from short_item_ids"}}
    sid_codes.npy    Int64[N, L+1]: the semantic-ID table the model was trained with, row i = items.json[i]

    sid_table.sha256 = sha256( "\\n".join(item_ids) UTF-8 || b"\\0" || codes as little-endian int64 [N, L+1] )

:class:`VersionClient` reads them back (checksums verified, the SID-table hash recomputed) and turns online
feature rows into the version's encoder arrays. The short-term history enters as ``short_item_ids`` and is
mapped to codes through the version's own SID table (the online ``short_sids`` were computed with whatever
codebook the feature pipeline ran last); items the version's table does not know are dropped, like unknown
long-term items.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.artifacts import atomic_write, atomic_write_json
from models.nn.config import GeneratorConfig
from models.semantic_ids.codebook import SemanticIdTable

from .onnx_export import load_runtime, serving_arrays

__all__ = [
    "CLIENT_FILE",
    "AGE_COLUMNS",
    "ONLINE_COLUMNS",
    "SID_CODES_FILE",
    "VersionClient",
    "VersionMismatchError",
    "client_metadata",
    "sid_table_sha256",
    "write_client_files",
]

CLIENT_FILE = "client.json"
SID_CODES_FILE = "sid_codes.npy"
FORMAT, FORMAT_VERSION = "oxyrec.serving_client", 1
# what a request reads from the online store (feature_repo "serving" service) besides the scenario
ONLINE_COLUMNS = ("profile_fields", "short_item_ids", "long_item_ids", "instruction_embedding", "has_instruction")
# optional: the instruction's creation time (online read) and the example's time (replayed examples; else now)
AGE_COLUMNS = ("generated_at", "target_timestamp")


class VersionMismatchError(ValueError):
    """A client's inputs and the served model version do not belong together (or a version's files disagree
    with its own metadata)."""


def sid_table_sha256(item_ids, codes: np.ndarray) -> str:
    ids = [str(i) for i in (item_ids.tolist() if isinstance(item_ids, np.ndarray) else list(item_ids))]
    h = hashlib.sha256("\n".join(ids).encode("utf-8"))
    h.update(b"\0")
    h.update(np.ascontiguousarray(np.asarray(codes, dtype="<i8")).tobytes())
    return h.hexdigest()


def client_metadata(encoder, generator_cfg: GeneratorConfig) -> dict:
    """client.json of a version whose model reads ``encoder``'s batches (an ``ExampleEncoder``)."""
    encoder.check_config(generator_cfg)
    table = encoder.sid_table
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": encoder.to_dict(),
        "generator_config": generator_cfg.to_dict(),
        "sid_table": {"sha256": sid_table_sha256(table.item_ids, table.codes),
                      "codebook_version": table.codebook_version, "level_sizes": list(table.level_sizes),
                      "n_items": len(table)},
        "features": {"online_columns": list(ONLINE_COLUMNS), "instruction_dim": encoder.config.instruction_dim,
                     "short_sids": "from short_item_ids through this version's SID table"},
    }


def write_client_files(version_dir: str | os.PathLike, encoder, generator_cfg: GeneratorConfig, item_ids) -> None:
    """Write client.json and sid_codes.npy into a (staging) version directory. ``item_ids`` are the catalog rows
    of the version's trie (items.json): they must be the encoder's SID table, row for row."""
    vdir = Path(version_dir)
    ids = [str(i) for i in (item_ids.tolist() if isinstance(item_ids, np.ndarray) else list(item_ids))]
    table = encoder.sid_table
    if ids != [str(i) for i in table.item_ids.tolist()]:
        raise VersionMismatchError("the example encoder's SID table does not list the exported catalog rows in order "
                                   f"({len(table)} table rows vs {len(ids)} catalog items): export with the same table")
    meta = client_metadata(encoder, generator_cfg)
    atomic_write(vdir / SID_CODES_FILE, lambda p: np.save(p, np.ascontiguousarray(table.codes, np.int64),
                                                          allow_pickle=False))
    atomic_write_json(vdir / CLIENT_FILE, meta, indent=1, sort_keys=True)


def _as_lists(frame: pd.DataFrame, column: str, value_type: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    try:
        arr = pa.array(frame[column].to_numpy(dtype=object), type=pa.list_(value_type), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise ValueError(f"online feature {column!r} must hold lists of {value_type} (or None): {e}") from e
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(arr).to_numpy(zero_copy_only=False), lengths


@dataclass(frozen=True)
class VersionClient:
    """The inputs side of one published version (read with :meth:`load`)."""

    version: int
    version_dir: Path
    encoder: object  # models.features.example_encoder.ExampleEncoder
    config: GeneratorConfig
    sid_table: SemanticIdTable
    meta: dict
    manifest_sha256: str  # identity of the version's contents (Triton's config reports the serving one's)

    @classmethod
    def load(cls, version_dir: str | os.PathLike) -> "VersionClient":
        """Read a published ``oxygenrec_generate/<v>`` directory: the checksums (manifest.json) of the files a
        client reads, the SID-table hash and the encoder/generator fit are verified; VersionMismatchError says
        what disagrees."""
        from models.features.example_encoder import EncoderConfig, ExampleEncoder

        vdir = Path(version_dir)
        rt = load_runtime()
        try:
            manifest = json.loads((vdir / rt.MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise VersionMismatchError(f"{vdir} is not a published model version ({rt.MANIFEST}: {e})") from e
        files = manifest.get("files", {})
        if CLIENT_FILE not in files or SID_CODES_FILE not in files:
            raise VersionMismatchError(f"{vdir} carries no {CLIENT_FILE}/{SID_CODES_FILE}: it was exported without "
                                       "its example encoder, so no client can build its inputs; re-export it")
        for name in (CLIENT_FILE, SID_CODES_FILE, "items.json"):  # what a client reads (the server checks the rest)
            p = vdir / name
            if not p.is_file() or p.stat().st_size != files[name]["bytes"] or rt.sha256_file(p) != files[name]["sha256"]:
                raise VersionMismatchError(f"{p} does not match {rt.MANIFEST}: the version's client files are "
                                           "missing, corrupt or were changed after publishing")
        meta = json.loads((vdir / CLIENT_FILE).read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise VersionMismatchError(f"{vdir / CLIENT_FILE}: format {meta.get('format')!r} v{meta.get('format_version')}, "
                                       f"this code reads {FORMAT!r} v{FORMAT_VERSION}")
        ids = json.loads((vdir / "items.json").read_text())
        codes = np.load(vdir / SID_CODES_FILE, allow_pickle=False)
        sid = meta["sid_table"]
        digest = sid_table_sha256(ids, codes)
        if digest != sid["sha256"]:
            raise VersionMismatchError(f"{vdir}: the SID table (items.json + {SID_CODES_FILE}) hashes to {digest[:12]}, "
                                       f"{CLIENT_FILE} records {sid['sha256'][:12]}")
        table = SemanticIdTable(np.asarray(ids, dtype=object), codes, sid["codebook_version"], tuple(sid["level_sizes"]))
        e = meta["encoder"]
        encoder = ExampleEncoder(e["scenarios"], e["fields"], e["tokens"], table, EncoderConfig(**e["config"]))
        config = GeneratorConfig.from_dict(meta["generator_config"])
        encoder.check_config(config)
        if not vdir.name.isdigit():  # manifest.json keeps the staged number; the directory is the published one
            raise VersionMismatchError(f"{vdir} is not a version directory (its name must be the version number)")
        return cls(int(vdir.name), vdir, encoder, config, table, meta, rt.sha256_file(vdir / rt.MANIFEST))

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(self.encoder.scenarios)

    @property
    def sid_sha256(self) -> str:
        return self.meta["sid_table"]["sha256"]

    def check_frame(self, frame: pd.DataFrame) -> None:
        missing = [c for c in ("scenario", *ONLINE_COLUMNS) if c not in frame.columns]
        if missing:
            raise VersionMismatchError(f"version {self.version} reads online feature(s) {missing}, the request rows "
                                       f"have {list(frame.columns)}")
        unknown = sorted(set(frame["scenario"].astype(str)) - set(self.scenarios))
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; version {self.version} serves {list(self.scenarios)}")

    def short_sids(self, frame: pd.DataFrame) -> list[np.ndarray]:
        """Per row: the codes of ``short_item_ids`` in this version's SID table, flattened (unknown items dropped)."""
        flat, lengths = _as_lists(frame, "short_item_ids", pa.string())
        pos = self.sid_table._item_index.get_indexer(flat.astype(object)) if flat.size else np.zeros(0, np.int64)
        known = pos >= 0
        row = np.repeat(np.arange(len(frame)), lengths)
        kept = np.bincount(row[known], minlength=len(frame))
        codes = self.sid_table.codes[pos[known]].reshape(-1)
        return np.split(codes, np.cumsum(kept * self.sid_table.codes.shape[1])[:-1])

    def inputs(self, frame: pd.DataFrame, now: float | None = None) -> dict[str, np.ndarray]:
        """The encoder arrays of this version for online feature rows (one request per row). The instruction's
        age (from the rows' ``generated_at``) is measured to each row's ``target_timestamp`` (Unix s) when the rows
        have one (examples replayed as requests), else (column or value missing) to ``now`` (Unix s, default: the current time)."""
        self.check_frame(frame)
        rows = frame.copy()
        rows["short_sids"] = self.short_sids(frame)
        at = pd.to_numeric(rows["target_timestamp"], errors="coerce") if "target_timestamp" in rows else np.nan
        rows["target_timestamp"] = pd.Series(at, index=rows.index, dtype=float).fillna(time.time() if now is None
                                                                                      else float(now))
        return serving_arrays(self.encoder.encode(rows.reset_index(drop=True), targets=False), self.config)
