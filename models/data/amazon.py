"""Convert public Amazon Reviews dumps into the standard schema (``items.parquet`` + ``interactions.parquet``).

Every product-category file pair becomes one scenario, named by :func:`scenario_name` (snake_case of the
category: ``"All_Beauty"`` -> ``"all_beauty"``, ``"Beauty"`` -> ``"beauty"``).

Supported layouts (files may be gzipped, ``.gz``; one record per line):

- 2014 / 2018 (McAuley et al.): reviews ``reviews_<Category>.json`` or ``<Category>.json`` (a 5-core file
  ``<Category>_5.json`` is the same category), records ``{reviewerID, asin, overall, unixReviewTime,
  reviewTime, ...}``; metadata ``meta_<Category>.json``, records ``{asin, title, brand, price ("$12.99"),
  categories (list of lists, 2014) or category (list, 2018), description (str or list), main_cat}``.
  Some of these dumps are Python literals (single quotes) rather than JSON: each line is parsed as JSON
  and, failing that, with ``ast.literal_eval`` (never ``eval``).
- 2023 (Hou et al.): reviews ``<Category>.jsonl`` ``{user_id, parent_asin, asin, rating, timestamp (ms), ...}``,
  metadata ``meta_<Category>.jsonl`` ``{parent_asin, title, main_category, categories, price (float|null),
  store, description (list)}``. The item is the ``parent_asin`` (all variants of a product are one item).

Mapping to the schema:

- interactions: ``user_id`` = reviewerID / user_id, ``item_id`` = asin / parent_asin, ``timestamp`` = Unix
  seconds (2018: unixReviewTime, or reviewTime "MM DD, YYYY" when missing; 2023: timestamp // 1000),
  ``scenario`` = category, ``action`` = "click", ``query`` = "", extra ``rating``. A review shows that the user
  engaged with the item, not that they bought it (only some are verified purchases, and the 2018 dumps do
  not always say), so it is recorded as the default positive action "click" rather than "order".
  Exact duplicates (same user, item, timestamp and scenario) are dropped; rows are sorted by
  (user_id, timestamp), stable.
- items: ``item_id``, ``title``, ``category`` = the most specific level of the item's first category path
  (else main category, else the file's category), ``brand`` (2023: store), ``price`` = first "$" amount of the
  string (or the float), null when missing or <= 0, ``description`` joined to one string (capped at
  :data:`MAX_DESCRIPTION_CHARS`), extras ``category_path`` (" > "-joined), ``main_category``,
  ``source_category``. HTML entities are unescaped. An item listed in several category files keeps one row
  (the first file in sorted order, first line within a file); items without a title are dropped.
- Reviews whose item has no usable metadata are dropped and counted (``reviews_without_metadata``).
  By default only items with at least one kept review are written (``keep_unreviewed_items=False``);
  ``min_interactions_per_user`` optionally drops users with shorter histories (one pass, users only).

CLI: ``python -m models.data.amazon --input DIR --output DIR --format auto``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import gzip
import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .schema import DEFAULT_ACTION, DataSourceError

try:  # ~3x faster on big dumps; optional
    import orjson

    _loads = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads
    _JSON_ERRORS = (ValueError,)

Format = Literal["2018", "2023", "auto"]
MAX_DESCRIPTION_CHARS = 2000
_SUFFIXES = {"2018": (".json", ".json.gz"), "2023": (".jsonl", ".jsonl.gz")}
_PRICE = re.compile(r"\$\s*(\d[\d,]*(?:\.\d+)?)")
_ITEM_COLUMNS = [
    "item_id", "title", "category", "brand", "price", "description",
    "category_path", "main_category", "source_category",
]  # fmt: skip


@dataclass(frozen=True)
class AmazonFile:
    path: Path
    category: str  # as in the file name, e.g. "All_Beauty"
    kind: Literal["reviews", "meta"]


# --------------------------------------------------------------------------------------------- helpers
def scenario_name(category: str) -> str:
    """snake_case scenario name of a category: "All_Beauty" -> "all_beauty", "CDs & Vinyl" -> "cds_vinyl"."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", category).strip("_").lower()
    if not name:
        raise ValueError(f"category {category!r} gives an empty scenario name")
    return name


def iter_records(path: str | Path) -> Iterator[dict]:
    """One dict per non-empty line of a (gzipped) JSON-lines or Python-literal-lines file."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            for number, line in enumerate(raw, start=1):
                line = line.strip()
                if not line:
                    continue
                yield _parse_line(line, path, number)
    except (OSError, EOFError) as error:  # e.g. a truncated or non-gzip ".gz"
        raise DataSourceError(f"cannot read file ({type(error).__name__}: {error})", file=path) from error


def _parse_line(line: bytes, path: Path, number: int) -> dict:
    try:
        record = _loads(line)
    except _JSON_ERRORS:
        try:  # 2014/2018 meta dumps: Python dict literals with single quotes
            record = ast.literal_eval(line.decode("utf-8"))
        except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as error:
            raise DataSourceError(
                f"line {number} is neither JSON nor a Python literal ({type(error).__name__}): {line[:80]!r}",
                file=path,
            ) from error
    if not isinstance(record, dict):
        raise DataSourceError(f"line {number} is a {type(record).__name__}, expected an object", file=path)
    return record


def _name_without_suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    for suffix in sorted(suffixes, key=len, reverse=True):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def discover(input_dir: str | Path, fmt: Format = "auto") -> tuple[str, list[AmazonFile]]:
    """The dump's format and its review/meta files (sorted by name)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DataSourceError("input directory does not exist", file=input_dir)
    if fmt not in ("2018", "2023", "auto"):
        raise ValueError(f"format must be '2018', '2023' or 'auto', got {fmt!r}")
    present = {
        f: sorted(p for p in input_dir.iterdir() if p.is_file() and _name_without_suffix(p, s) is not None)
        for f, s in _SUFFIXES.items()
    }
    if fmt == "auto":
        found = [f for f, paths in present.items() if paths]
        if len(found) != 1:
            what = "both .json and .jsonl files" if found else "no .json(.gz) or .jsonl(.gz) files"
            raise DataSourceError(f"cannot detect the Amazon dump format: {what}; pass the format", file=input_dir)
        fmt = found[0]
    files = []
    for path in present[fmt]:
        stem = _name_without_suffix(path, _SUFFIXES[fmt])
        if stem.startswith("meta_"):
            files.append(AmazonFile(path, stem[len("meta_") :], "meta"))
        else:
            category = stem[len("reviews_") :] if stem.startswith("reviews_") else stem
            category = re.sub(r"_5$", "", category)  # 5-core subset of the same category
            files.append(AmazonFile(path, category, "reviews"))
    for kind in ("reviews", "meta"):
        if not any(f.kind == kind for f in files):
            example = "meta_<Category>" if kind == "meta" else "<Category> or reviews_<Category>"
            raise DataSourceError(
                f"no {kind} files in the {fmt} layout (expected {example}{_SUFFIXES[fmt][0]}[.gz])", file=input_dir
            )
    return fmt, files


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (_text(v) for v in value) if t)
    return html.unescape(str(value)).strip()


def _category_path(record: dict) -> list[str]:
    paths = record.get("categories")
    if paths is None:
        paths = record.get("category")  # 2018 name
    if not isinstance(paths, list) or not paths:
        return []
    first = paths[0] if isinstance(paths[0], list) else paths  # 2014: list of lists
    return [t for t in (_text(c) for c in first) if t]


def parse_prices(values: pd.Series) -> pd.Series:
    """Float prices from floats, numeric strings or strings like "$1,299.00" / "$8.99 - $12.99" (first amount).

    Anything else (missing, "", HTML junk) and values <= 0 become NaN.
    """
    values = values.astype(object)
    numbers = pd.to_numeric(values, errors="coerce")
    text = values.where(numbers.isna(), None).astype("string")
    amounts = text.str.extract(_PRICE, expand=False).str.replace(",", "", regex=False)
    prices = numbers.fillna(pd.to_numeric(amounts, errors="coerce")).astype(np.float64)
    return prices.where(prices > 0)


def _raw_price(value) -> float | str | None:
    return value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------------------------- readers
def _review_date(text) -> int | None:
    try:  # 2018 "reviewTime": "09 1, 2016"
        stamp = dt.datetime.strptime(str(text).strip(), "%m %d, %Y").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return int(stamp.timestamp())


def read_reviews(file: AmazonFile, fmt: str) -> tuple[pd.DataFrame, int]:
    """(interactions of one reviews file, number of records without user/item/time)."""
    users, items, times, ratings = [], [], [], []
    malformed = 0
    for record in iter_records(file.path):
        if fmt == "2023":
            user, item = record.get("user_id"), record.get("parent_asin") or record.get("asin")
            ms = record.get("timestamp")
            ts = int(ms) // 1000 if isinstance(ms, (int, float)) else None
            rating = record.get("rating")
        else:
            user, item = record.get("reviewerID"), record.get("asin")
            ts = record.get("unixReviewTime")
            ts = int(ts) if isinstance(ts, (int, float)) else _review_date(record.get("reviewTime"))
            rating = record.get("overall")
        if not user or not item or ts is None:
            malformed += 1
            continue
        users.append(str(user))
        items.append(str(item))
        times.append(ts)
        ratings.append(rating if isinstance(rating, (int, float)) else np.nan)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=object),
            "item_id": pd.Series(items, dtype=object),
            "timestamp": np.asarray(times, dtype=np.int64),
            "scenario": scenario_name(file.category),
            "rating": np.asarray(ratings, dtype=np.float64),
        }
    )
    return frame, malformed


def read_meta(file: AmazonFile, fmt: str, wanted: set[str] | None, seen: set[str]) -> tuple[list[dict], dict]:
    """Item rows of one meta file (skipping ids already in ``seen`` and, if given, ids not in ``wanted``)."""
    key = "parent_asin" if fmt == "2023" else "asin"
    rows, counts = [], {"meta_records": 0, "items_without_title": 0, "duplicate_meta_records": 0}
    for record in iter_records(file.path):
        counts["meta_records"] += 1
        item = record.get(key) or (record.get("asin") if fmt == "2023" else None)
        if not item:
            continue
        item = str(item)
        if wanted is not None and item not in wanted:
            continue
        if item in seen:
            counts["duplicate_meta_records"] += 1
            continue
        title = _text(record.get("title"))
        if not title:
            counts["items_without_title"] += 1
            continue
        seen.add(item)
        path = _category_path(record)
        main = _text(record.get("main_category") if fmt == "2023" else record.get("main_cat"))
        rows.append(
            {
                "item_id": item,
                "title": title,
                "category": path[-1] if path else (main or file.category.replace("_", " ")),
                "brand": _text(record.get("store") if fmt == "2023" else record.get("brand")),
                "price": _raw_price(record.get("price")),
                "description": _text(record.get("description"))[:MAX_DESCRIPTION_CHARS],
                "category_path": " > ".join(path),
                "main_category": main,
                "source_category": file.category,
            }
        )
    return rows, counts


# ------------------------------------------------------------------------------------------- converter
def convert_amazon(
    input_dir: str | Path,
    output_dir: str | Path,
    fmt: Format = "auto",
    *,
    min_interactions_per_user: int = 0,
    keep_unreviewed_items: bool = False,
) -> dict:
    """Convert a directory of Amazon review + meta dumps; writes ``items.parquet`` and
    ``interactions.parquet`` into ``output_dir`` and returns a summary with every drop counted."""
    fmt, files = discover(input_dir, fmt)
    reviews = [f for f in files if f.kind == "reviews"]
    metas = [f for f in files if f.kind == "meta"]

    frames, malformed = [], 0
    for file in reviews:
        frame, bad = read_reviews(file, fmt)
        frames.append(frame)
        malformed += bad
    log = pd.concat(frames, ignore_index=True)
    reviews_read = len(log) + malformed

    wanted = None if keep_unreviewed_items else set(log["item_id"].unique())
    rows, seen = [], set()
    meta_counts = {"meta_records": 0, "items_without_title": 0, "duplicate_meta_records": 0}
    for file in metas:
        file_rows, counts = read_meta(file, fmt, wanted, seen)
        rows += file_rows
        meta_counts = {k: meta_counts[k] + counts[k] for k in meta_counts}
    items = pd.DataFrame(rows, columns=_ITEM_COLUMNS)
    items["price"] = parse_prices(items["price"])

    has_meta = log["item_id"].isin(items["item_id"]).to_numpy()
    without_meta = int((~has_meta).sum())
    log = log[has_meta]
    before = len(log)
    log = log.drop_duplicates(["user_id", "item_id", "timestamp", "scenario"])
    duplicates = before - len(log)
    short_users_rows = 0
    if min_interactions_per_user > 1:
        counts = log.groupby("user_id")["item_id"].transform("size")
        short_users_rows = int((counts < min_interactions_per_user).sum())
        log = log[(counts >= min_interactions_per_user).to_numpy()]
    if log.empty:
        raise DataSourceError(
            f"no interactions left: {reviews_read} reviews read, {without_meta} without item metadata, "
            f"{malformed} malformed, {short_users_rows} from users below {min_interactions_per_user}",
            file=input_dir,
            column="item_id",
        )
    log = log.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    log.insert(4, "action", DEFAULT_ACTION)
    log.insert(5, "query", "")
    if not keep_unreviewed_items:
        items = items[items["item_id"].isin(log["item_id"])]
    items = items.reset_index(drop=True)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    items_path, log_path = output_dir / "items.parquet", output_dir / "interactions.parquet"
    items.to_parquet(items_path, index=False)
    log.to_parquet(log_path, index=False)
    return {
        "format": fmt,
        "input_dir": str(input_dir),
        "items_path": str(items_path),
        "interactions_path": str(log_path),
        "review_files": [f.path.name for f in reviews],
        "meta_files": [f.path.name for f in metas],
        "scenarios": {str(k): int(v) for k, v in log["scenario"].value_counts().sort_index().items()},
        "n_items": len(items),
        "n_users": int(log["user_id"].nunique()),
        "n_interactions": len(log),
        "reviews_read": reviews_read,
        "reviews_malformed": malformed,
        "reviews_without_metadata": without_meta,
        "duplicate_reviews": duplicates,
        "reviews_dropped_min_user": short_users_rows,
        **meta_counts,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m models.data.amazon", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="directory with the review and meta_ files")
    parser.add_argument("--output", required=True, help="directory for items.parquet and interactions.parquet")
    parser.add_argument("--format", default="auto", choices=["auto", "2018", "2023"])
    parser.add_argument("--min-user-interactions", type=int, default=0, help="drop users with fewer reviews")
    parser.add_argument("--keep-unreviewed-items", action="store_true", help="write every item with metadata")
    args = parser.parse_args(argv)
    summary = convert_amazon(
        args.input,
        args.output,
        args.format,
        min_interactions_per_user=args.min_user_interactions,
        keep_unreviewed_items=args.keep_unreviewed_items,
    )
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
