"""Near-line path: delay from a cart/order action landing to the updated instruction being readable online.

Needs a materialized pipeline in the data directory (``make demo`` first; ``OXYREC_HOME`` picks another one).
For 1 and 20 users: write a landing file of order events stamped now, evaluate the sensor, run the
``instruction_updates_job`` it requests (in process), then read the online store until the new
instructions are there.

    python -m bench.incremental_instructions
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
from dagster import DagsterInstance

from orchestration.definitions import build_definitions
from orchestration.sensors import evaluate_landing, landing_dir
from orchestration.settings import current_settings

from .common import write_results


def main() -> None:
    settings = current_settings()
    root = settings.data_root
    log = pd.read_parquet(root / "interaction_log" / "_.parquet", columns=["user_id", "item_id"])
    defs = build_definitions()
    store = defs.resources["feature_store"].store()
    directory = landing_dir()
    directory.mkdir(parents=True, exist_ok=True)
    runs = []
    with DagsterInstance.ephemeral() as instance:
        # the first update pays the process cold start (Feast import, MiniLM load); the others are warm
        for run, (n_users, seed) in enumerate(((1, 0), (1, 2), (20, 1))):
            users = pd.Series(log["user_id"].unique()).sample(n_users, random_state=seed).tolist()
            now = int(time.time())
            events = [{"user_id": u, "item_id": log["item_id"].iloc[i], "timestamp": now, "scenario": "cart",
                       "action": "order"} for i, u in enumerate(users)]
            path = directory / f"bench-{now}-{n_users}.jsonl"
            path.write_text("\n".join(json.dumps(e) for e in events))
            t_sensor = time.perf_counter()
            request, _ = evaluate_landing(directory, json.dumps([path.stat().st_mtime_ns - 1, ""]),
                                          settings.features.high_value_actions, 300, time.time())
            sensor_s = time.perf_counter() - t_sensor
            result = defs.resolve_job_def("instruction_updates_job").execute_in_process(
                instance=instance, run_config=request.run_config
            )
            assert result.success
            # poll the online store until every user's instruction is the new one
            while True:
                online = store.online_features(users, "cart")
                if all((g or 0) >= now for g in online["generated_at"]):
                    break
                time.sleep(0.05)
            delay = time.time() - now
            path.unlink()
            runs.append({"users": n_users, "cold_process": run == 0, "sensor_evaluation_s": round(sensor_s, 3),
                         "action_to_online_s": round(delay, 2)})
            print(runs[-1])
    write_results("incremental_instructions", {
        "note": "in-process run of the job the sensor requests; a deployed sensor adds its polling interval "
                "(minimum_interval_seconds=30) and the run launcher's start-up time",
        "runs": runs,
    })


if __name__ == "__main__":
    main()
