"""The project's standard data schema (what every real or synthetic source is normalized into).

Three tables, each stored as ``<name>.parquet`` or ``<name>.csv`` in one directory:

- ``items``: required ``item_id`` (string), ``title``, ``category``; optional ``brand`` (default ""),
  ``price`` (float, null or > 0; default null), ``description`` (default ""). Extra columns are kept.
- ``interactions``: required ``user_id``, ``item_id`` (strings), ``timestamp`` (int64 Unix seconds, UTC; files
  may hold ints or ISO-8601 strings), ``scenario``; optional ``action`` (default "click", one of
  :data:`ACTIONS`) and ``query`` (default ""). Extra columns (e.g. ``rating``) are kept.
- ``users`` (optional file): ``user_id`` plus any profile columns.

Loading problems raise :class:`DataSourceError`, which names the file and the column at fault.
"""

from __future__ import annotations

from os import PathLike

ITEMS = "items"
INTERACTIONS = "interactions"
USERS = "users"
TABLES = (ITEMS, INTERACTIONS, USERS)
FILE_SUFFIXES = (".parquet", ".csv")  # find_table tries them in this order

# items
ITEM_REQUIRED = ("item_id", "title", "category")
ITEM_OPTIONAL_DEFAULTS: dict[str, object] = {"brand": "", "price": float("nan"), "description": ""}
ITEM_STRING_COLUMNS = ("item_id", "title", "category", "brand", "description")

# interactions
INTERACTION_REQUIRED = ("user_id", "item_id", "timestamp", "scenario")
INTERACTION_OPTIONAL_DEFAULTS: dict[str, object] = {"action": "click", "query": ""}
INTERACTION_STRING_COLUMNS = ("user_id", "item_id", "scenario", "action", "query")
ACTIONS = ("view", "click", "cart", "order")  # ordered by intent strength
DEFAULT_ACTION = "click"

# users
USER_REQUIRED = ("user_id",)

ID_COLUMNS = ("user_id", "item_id")

# Position of an interaction in its source file, added when a source is split into scenario partitions: the tie
# breaker that restores the file's row order for events in the same second when the partitions are joined again.
SOURCE_ROW = "source_row"

# sane timestamp window used by the validation gates: [2000-01-01, 2100-01-01) UTC, in Unix seconds
TIMESTAMP_MIN = 946_684_800
TIMESTAMP_MAX = 4_102_444_800


class DataSourceError(ValueError):
    """A data file is missing or malformed.

    ``file`` is the offending path (or None when no file is involved), ``column`` the offending column
    (or None when the problem is not about one column). ``str(error)`` always names both, so a failed
    Dagster run says exactly what to fix.
    """

    def __init__(self, message: str, file: str | PathLike | None = None, column: str | None = None):
        self.file = None if file is None else str(file)
        self.column = column
        self.detail = message
        parts = []
        if self.file is not None and self.file not in message:
            parts.append(f"{self.file}:")
        if column is not None and f"'{column}'" not in message:
            parts.append(f"column '{column}':")
        super().__init__(" ".join([*parts, message]))
