"""Reasoning instructions scaled with activity: rows, bytes, seconds and coverage on real-shaped data.

For each dataset it builds every instruction of the data span (one per user and activity window, generated when
the window closes: models/reasoning/refresh.py) with the rule reasoner and the real MiniLM embedder, and reports

* rows, distinct users, seconds, parquet bytes of the instruction table (embeddings included);
* the old daily full refresh's row count for comparison (users with history x days);
* coverage: the share of examples (events with at least one earlier event of the user) whose latest earlier
  instruction exists and is at most ``--max-age-days`` old (what the Feast point-in-time join gives training).

Datasets: the demo world (synthetic, 3,000 users x 90 days), the two-year real-shaped test fixture
(tests/fixtures/real_shaped.py), and any standard-schema folder given with ``--data`` (e.g. MovieLens-100K).

    python -m bench.instruction_activity [--data DIR ...] [--window-minutes 5] [--max-age-days 30]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.data.loaders import load_dataset
from models.data.synthetic import WorldConfig, generate_world
from models.embeddings.text import MiniLMEncoder
from models.reasoning import RuleBasedReasoner
from models.reasoning.refresh import refresh_after_activity

from .common import write_results

DAY = 86_400


def coverage(log: pd.DataFrame, instructions: pd.DataFrame, max_age_days: float) -> float:
    """Share of events with an earlier event of the same user whose latest earlier instruction is fresh enough."""
    events = log[["user_id", "timestamp"]].assign(row=np.arange(len(log)))
    events = events.sort_values(["user_id", "timestamp", "row"], kind="stable")
    events = events[events.groupby("user_id").cumcount() >= 1]  # examples: not a user's first event
    made = instructions[["user_id", "generated_at"]].sort_values("generated_at")
    joined = pd.merge_asof(events.sort_values("timestamp"), made, left_on="timestamp", right_on="generated_at",
                           by="user_id", allow_exact_matches=False)
    fresh = joined["generated_at"].notna() & (joined["timestamp"] - joined["generated_at"] <= max_age_days * DAY)
    return float(fresh.mean())


def measure(name: str, log: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None, encoder,
            window_minutes: int, max_age_days: float) -> dict:
    start_s, end_s = int(log["timestamp"].min()), int(log["timestamp"].max()) + 2 * DAY
    t0 = time.perf_counter()
    frame = refresh_after_activity(log, items, users, start_s, end_s, RuleBasedReasoner(), encoder,
                                   window_s=60 * window_minutes)
    seconds = time.perf_counter() - t0
    buffer = io.BytesIO()
    frame.drop(columns=["intents"]).to_parquet(buffer, index=False)
    days = (end_s - start_s) // DAY
    first = log.groupby("user_id")["timestamp"].min()
    daily_rows = int(sum(((end_s - first.to_numpy()) // DAY).clip(min=0)))  # users with history x days
    result = {"dataset": name, "users": int(log["user_id"].nunique()), "interactions": len(log), "days": int(days),
              "rows": len(frame), "seconds": round(seconds, 1), "parquet_mb": round(len(buffer.getvalue()) / 2**20, 2),
              "daily_refresh_rows": daily_rows, "coverage": round(coverage(log, frame, max_age_days), 4)}
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="*", default=[], help="standard-schema folders to add")
    parser.add_argument("--window-minutes", type=int, default=5)
    parser.add_argument("--max-age-days", type=float, default=30.0)
    args = parser.parse_args()
    encoder = MiniLMEncoder()
    runs = []
    world = generate_world(WorldConfig())
    runs.append(measure("demo_world", world.interactions, world.items, world.users, encoder, args.window_minutes,
                        args.max_age_days))
    from tests.fixtures import real_shaped

    runs.append(measure("two_year_fixture", real_shaped.interactions_frame(), real_shaped.items_frame(), None, encoder,
                        args.window_minutes, args.max_age_days))
    for folder in args.data:
        items, log, users = load_dataset(folder)
        runs.append(measure(folder.name, log, items, users, encoder, args.window_minutes, args.max_age_days))
    write_results("instruction_activity", {"window_minutes": args.window_minutes, "max_age_days": args.max_age_days,
                                           "runs": runs})


if __name__ == "__main__":
    main()
