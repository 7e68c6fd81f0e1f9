"""``make demo``: materialize the whole graph for every scenario in one run, then print what was built.

The run is recorded in the Dagster instance at ``$DAGSTER_HOME``, so ``make ui`` shows it afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time

from dagster import DagsterInstance

from .jobs import all_scenarios_tags
from .partitions import SCENARIOS
from .settings import current_settings


def _metadata_text(value) -> str:
    inner = getattr(value, "value", value)
    if isinstance(inner, float):
        return f"{inner:.4g}"
    text = str(inner)
    return text if len(text) <= 60 else text[:57] + "..."


SUMMARY_KEYS = (
    "dagster/row_count", "items", "users", "dimension", "embedded_now", "served_from_cache",
    "text_items_per_second", "codebook_version", "refit", "l1_coverage", "collision_p99", "newly_assigned",
    "seconds",
)


def run_pipeline(instance: DagsterInstance | None = None, raise_on_error: bool = True):
    from .definitions import defs

    job = defs.resolve_job_def("daily_retraining")
    return job.execute_in_process(
        instance=instance or DagsterInstance.get(),
        tags={**all_scenarios_tags(), "oxyrec/trigger": "demo"},
        raise_on_error=raise_on_error,
    )


def print_summary(result) -> None:
    settings = current_settings()
    print(f"\nOxygenREC pipeline: source={settings.data.source}, scenarios={', '.join(SCENARIOS)}")
    print(f"data directory: {settings.data_root}\n")
    seen: dict[str, list[str]] = {}  # asset -> partitions (a multi-partition step reports each one)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        name = materialization.asset_key.to_user_string()
        if name in seen:
            seen[name].append(materialization.partition)
            continue
        seen[name] = [materialization.partition]
        meta = materialization.metadata
        shown = [f"{k.split('/')[-1]}={_metadata_text(meta[k])}" for k in SUMMARY_KEYS if k in meta]
        print(f"  built {name:<22} " + "  ".join(shown))
    partitioned = {name: parts for name, parts in seen.items() if parts[0] is not None}
    for name, parts in partitioned.items():
        print(f"        {name} partitions: {', '.join(parts)}")
    for event in result.get_asset_check_evaluations():
        status = "PASS" if event.passed else "FAIL"
        print(f"  check {event.asset_key.to_user_string()}.{event.check_name:<24} {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    start = time.perf_counter()
    result = run_pipeline(raise_on_error=False)
    print_summary(result)
    print(f"\nrun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.perf_counter() - start:.1f} s")
    print("browse it: make ui  ->  http://127.0.0.1:3000")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
