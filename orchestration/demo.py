"""``make demo``: materialize the whole graph for every scenario in one run, then print what was built.

The run is recorded in the Dagster instance at ``$DAGSTER_HOME``, so ``make ui`` shows it afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from dagster import DagsterInstance

from .jobs import PARTITION_RANGE_END, PARTITION_RANGE_START, all_scenarios_tags
from .partitions import SCENARIOS, instruction_day_partitions
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
    "days", "instructions", "online_store", "example_user", "with_instruction", "seconds",
)


def run_pipeline(instance: DagsterInstance | None = None, raise_on_error: bool = True):
    """What a first day in production does, in order: ingest every scenario, backfill the daily
    reasoning instructions over the data span, then the retraining job (features -> ... with every gate)."""
    from .definitions import defs

    instance = instance or DagsterInstance.get()
    days = instruction_day_partitions.get_partition_keys()
    stages = [
        ("ingest", all_scenarios_tags()),
        ("daily_instructions", {PARTITION_RANGE_START: days[0], PARTITION_RANGE_END: days[-1]}),
        ("daily_retraining", all_scenarios_tags()),
    ]
    results = []
    for job_name, tags in stages:
        print(f"== {job_name}", flush=True)
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            tags={**tags, "oxyrec/trigger": "demo"},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # step events stay in the UI
            raise_on_error=raise_on_error,
        )
        results.append(result)
        if not result.success:
            break
    return results


def print_summary(results) -> None:
    settings = current_settings()
    print(f"\nOxygenREC pipeline: source={settings.data.source}, scenarios={', '.join(SCENARIOS)}")
    print(f"data directory: {settings.data_root}\n")
    for result in results:
        print_run(result)


def print_run(result) -> None:
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
        if "example_instruction" in meta and name == "online_features":
            print(f"        online instruction of {_metadata_text(meta['example_user'])}: {meta['example_instruction'].value}")
    partitioned = {name: parts for name, parts in seen.items() if parts[0] is not None}
    for name, parts in partitioned.items():
        shown = ", ".join(parts) if len(parts) <= 8 else f"{parts[0]} .. {parts[-1]} ({len(parts)})"
        print(f"        {name} partitions: {shown}")
    for event in result.get_asset_check_evaluations():
        status = "PASS" if event.passed else "FAIL"
        print(f"  check {event.asset_key.to_user_string()}.{event.check_name:<24} {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    # backfill_policy and partitioned asset checks are marked beta/preview by Dagster; the demo output
    # should show the pipeline, not those notices.
    warnings.filterwarnings("ignore", message=".*(currently in beta|currently in preview).*")
    start = time.perf_counter()
    results = run_pipeline(raise_on_error=False)
    print_summary(results)
    ok = all(r.success for r in results) and len(results) == 3
    print(f"\n{len(results)} runs {'succeeded' if ok else 'FAILED'} in {time.perf_counter() - start:.1f} s")
    print("browse them: make ui  ->  http://127.0.0.1:3000")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
