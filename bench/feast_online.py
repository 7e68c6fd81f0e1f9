"""Feast online retrieval for one serving request (all features of one user), SQLite vs Redis, demo-size world.

    python -m bench.feast_online [--requests 300] [--hist-rows 25000] [--keep DIR]

World: ``generate_world(WorldConfig())`` (3,000 users, 5,000 items, ~130k interactions); fake semantic IDs (3 x 256
codes + a 0 disambiguation code), one random 384-d reasoning instruction per user, random scenario embeddings.
Steps timed once: table building, source writes, ``import feast``, apply, materialize (all six views) into SQLite
and into a throw-away local redis-server. Per store: ``--requests`` requests ``online_features(user, scenario)``
for random (user, scenario) pairs after 20 warm-up requests (serving feature service: profile, short-term,
long-term, scenario instruction, reasoning instruction; ~1,000 floats and ~150 strings per request);
p50/p90/p99/mean in ms, client in the same process. Redis also: single-user instruction push latency.
Finally the point-in-time training join (DuckDB) for the first ``--hist-rows`` training entities.

The machines have 2 cores shared with other jobs: treat the numbers as rough.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo import OxyFeatureStore, local_redis_server
from models.data.synthetic import SCENARIOS, WorldConfig, generate_world
from models.features import (
    item_features_table,
    long_term_table,
    reasoning_instruction_table,
    scenario_instruction_table,
    short_term_table,
    training_entities,
    user_profile_table,
)

from .common import peak_rss_mb, write_results


def build_tables(seed: int = 0) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    world = generate_world(WorldConfig())
    log = world.interactions
    rng = np.random.default_rng(seed)
    n_items, n_users = len(world.items), len(world.users)
    sids = pd.DataFrame({"item_id": world.items.item_id, **{f"sid_{l}": rng.integers(0, 256, n_items) for l in range(3)},
                         "sid_3": np.zeros(n_items, np.int64)})
    instructions = pd.DataFrame({
        "user_id": world.users.user_id,
        "instruction_text": "Likely shopping for winter outdoor gear; prefers mid-priced brands.",
        "instruction_embedding": list(rng.standard_normal((n_users, 384)).astype(np.float32)),
        "generator_version": "bench",
        "generated_at": int(log.timestamp.max()) - 3600,
    })
    texts = {s: f"{s}: scenario instruction" for s in SCENARIOS}
    t0 = time.perf_counter()
    tables = {
        "user_profile": user_profile_table(world.users, columns=["age_band", "region", "price_sensitivity"]),
        "user_short_term": short_term_table(log, sids, n_short=20),
        "user_long_term": long_term_table(log, n_long=100),
        "item_features": item_features_table(world.items, sids, log),
        "scenario_instruction": scenario_instruction_table(texts, rng.standard_normal((len(texts), 384))),
        "reasoning_instruction": reasoning_instruction_table(instructions),
    }
    info = {"build_tables_s": round(time.perf_counter() - t0, 2), "interactions": len(log), "users": n_users,
            "items": n_items, "rows": {k: len(v) for k, v in tables.items()}}
    return tables, log, info


def latency(store: OxyFeatureStore, pairs: list[tuple[str, str]], warmup: int = 20) -> dict:
    for u, s in pairs[:warmup]:
        store.online_features(u, s)
    ms = []
    for u, s in pairs:
        t0 = time.perf_counter()
        out = store.online_features(u, s)
        ms.append((time.perf_counter() - t0) * 1e3)
        assert out["known_user"], u
    ms = np.asarray(ms)
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--hist-rows", type=int, default=25_000, help="0 = skip the training join")
    parser.add_argument("--keep", type=Path, default=None, help="data directory to keep (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tables, log, info = build_tables(args.seed)
    print(info, flush=True)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="feast_bench_")
    data_dir = args.keep or Path(tmp.name)
    rng = np.random.default_rng(args.seed + 1)
    st = tables["user_short_term"]
    pick = rng.integers(0, len(st), args.requests)  # (user, scenario) pairs weighted like real traffic
    pairs = list(zip(st.user_id.to_numpy()[pick], st.scenario.to_numpy()[pick]))
    results: dict = {"world": info, "requests_per_store": args.requests}
    try:
        sqlite = OxyFeatureStore(data_dir, online="sqlite")
        t0 = time.perf_counter()
        sqlite.write_sources(tables)
        results["write_sources_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        import feast  # noqa: F401  (timed on its own: it dominates a cold start)

        results["import_feast_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        sqlite.apply()
        results["apply_s"] = round(time.perf_counter() - t0, 2)
        results["sqlite"] = {"materialize_s": round(sqlite.materialize()["seconds"], 2)}
        results["sqlite"].update(latency(sqlite, pairs))
        print("sqlite", results["sqlite"], flush=True)

        with local_redis_server() as url:
            redis = OxyFeatureStore(data_dir, online="redis", redis_url=url)
            redis.apply()
            results["redis"] = {"materialize_s": round(redis.materialize()["seconds"], 2)}
            results["redis"].update(latency(redis, pairs))
            push_ms = []
            emb = rng.standard_normal(384).astype(np.float32)
            for i, (u, _) in enumerate(pairs[:50]):
                frame = pd.DataFrame({"user_id": [u], "instruction_text": [f"update {i}"], "instruction_embedding": [emb],
                                      "generator_version": "bench-push", "generated_at": [int(log.timestamp.max()) + i]})
                t0 = time.perf_counter()
                redis.push_instructions(frame)
                push_ms.append((time.perf_counter() - t0) * 1e3)
            results["redis"]["push_one_user_p50_ms"] = round(float(np.median(push_ms)), 3)
            print("redis", results["redis"], flush=True)

        if args.hist_rows:
            ent = training_entities(log).iloc[: args.hist_rows]
            t0 = time.perf_counter()
            out = sqlite.historical_features(ent)
            sec = time.perf_counter() - t0
            results["training_join"] = {"rows": len(out), "seconds": round(sec, 2), "rows_per_s": round(len(out) / sec, 1),
                                        "columns": len(out.columns)}
            print("training join", results["training_join"], flush=True)
        results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    finally:
        if tmp is not None:
            tmp.cleanup()
    write_results("feast_online", results)


if __name__ == "__main__":
    main()
