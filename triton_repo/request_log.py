"""A bounded log of served requests (user, scenario, time, version): what the canary replays before a promotion.

One JSON object per line, appended with O_APPEND (a line of < 4 KiB is written by one ``write``, so lines of
concurrent writers do not interleave). When the file passes ``max_bytes`` it is renamed to ``<name>.1``
(replacing the previous ``.1``), so the log never holds more than about 2 x ``max_bytes``. :meth:`recent` reads
``.1`` then the current file and returns the newest records; a torn last line (a writer killed mid-write) is
skipped. Two processes rotating at the same moment can drop a few records: acceptable for a replay sample, and
nothing here is needed to serve.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["RequestLog"]


class RequestLog:
    def __init__(self, path: str | os.PathLike, max_bytes: int = 1 << 20) -> None:
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be >= 1024, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)

    @property
    def rotated(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, user_id: str, scenario: str, version: int | str | None = None, ts: float | None = None) -> None:
        record = {"user_id": str(user_id), "scenario": str(scenario), "ts": round(time.time() if ts is None else ts, 3)}
        if version is not None:
            record["version"] = str(version)
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > self.max_bytes:
            try:
                os.replace(self.path, self.rotated)
            except FileNotFoundError:  # another writer rotated it first
                pass

    def recent(self, n: int) -> list[dict]:
        """The newest ``n`` records, oldest first."""
        if n <= 0:
            return []
        out: list[dict] = []
        for path in (self.rotated, self.path):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # torn line
                if isinstance(rec, dict) and {"user_id", "scenario", "ts"} <= rec.keys():
                    out.append(rec)
        return out[-n:]
