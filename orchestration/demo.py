"""``make demo``: ingest, the daily instructions, then the scheduled ``daily_retraining`` job (features -> SFT ->
RL -> deploy to a local tritonserver, every gate) for every scenario, and recommendations served by Triton.

The run is recorded in the Dagster instance at ``$DAGSTER_HOME``, so ``make ui`` shows it afterwards.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import time
import warnings

from dagster import AssetCheckSeverity, DagsterInstance

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
    "days", "instructions", "online_store", "example_user", "with_instruction", "epochs", "best_val_hr10",
    "train_seconds", "hr10", "ndcg10", "valid_hr10", "reward_sft", "reward_rl", "val_hr10_sft", "val_hr10_rl",
    "versions", "smoke_users", "seconds",
)


FEATURE_STAGES = ("ingest", "daily_instructions", "refresh_features")


def stage_tags(job_name: str) -> dict[str, str]:
    if job_name == "daily_instructions":
        days = instruction_day_partitions.get_partition_keys()
        return {PARTITION_RANGE_START: days[0], PARTITION_RANGE_END: days[-1]}
    return all_scenarios_tags() if job_name in ("ingest", "refresh_features", "daily_retraining") else {}


def run_pipeline(instance: DagsterInstance | None = None, raise_on_error: bool = True,
                 stages: tuple[str, ...] = (*FEATURE_STAGES, "train_sft"), defs=None):
    """What a first day in production does, in order: ingest every scenario, backfill the daily reasoning
    instructions over the data span, then the given jobs (by default features and training, no serving).
    Stops at the first failed run."""
    if defs is None:
        from .definitions import defs
    instance = instance or DagsterInstance.get()
    results = []
    for job_name in stages:
        print(f"== {job_name}", flush=True)
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            tags={**stage_tags(job_name), "oxyrec/trigger": "demo"},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # step events stay in the UI
            raise_on_error=raise_on_error,
        )
        results.append(result)
        if not result.success:
            break
    return results


def recommend_for_a_few_users(recommender, server_url: str, users_per_scenario: int,
                              scenarios: tuple[str, ...]) -> None:
    settings = current_settings()
    log = pd.read_parquet(settings.data_root / "interaction_log" / "_.parquet",
                          columns=["user_id", "scenario", "timestamp"]).sort_values("timestamp")
    shown = [s for s in scenarios if s in recommender.scenarios] or list(recommender.scenarios)[:3]
    for scenario in shown:
        # the users most recently active in this scenario: their instructions say the most
        recent = log.loc[log["scenario"] == scenario, "user_id"].drop_duplicates(keep="last")
        for user in recent.tail(users_per_scenario):
            table = recommender.recommend(user, scenario, k=5)
            instruction = recommender.last_features.get("instruction_text") or "(default instruction)"
            print(f"\n  user {user} / {scenario}  (served by Triton at {server_url})")
            print(f"  instruction: {instruction[:160]}{'...' if len(instruction) > 160 else ''}")
            for row in table.itertuples():
                print(f"    {row.rank}. {row.title}  [{row.item_id}]  log p = {row.score:.2f}")


def run_with_local_triton(instance: DagsterInstance, users_per_scenario: int = 1,
                          scenarios: tuple[str, ...] = ("homepage", "cart", "search")) -> list:
    """Features, then a local tritonserver on 127.0.0.1 and the scheduled ``daily_retraining`` job against it
    (SFT -> RL -> export -> deploy, every gate), then recommendations served by Triton for a few users."""
    from .definitions import build_definitions
    from .resources import TritonResource
    from triton_repo import TritonServer, ensure_tritonserver
    from triton_repo.recommend import Recommender

    settings = current_settings()
    results = run_pipeline(instance, raise_on_error=False, stages=("ingest", "daily_instructions"))
    if not all(r.success for r in results):
        print_summary(results)
        return results
    repo = settings.data_root / "triton_repository"
    repo.mkdir(parents=True, exist_ok=True)
    print("== tritonserver on 127.0.0.1 (the deploy target of daily_retraining)", flush=True)
    server = TritonServer(repo, home=ensure_tritonserver(), log_path=settings.data_root / "triton.log").start()
    try:
        defs = build_definitions(resources={"triton": TritonResource(url=server.http_url, repository=str(repo))})
        results += run_pipeline(instance, raise_on_error=False, stages=("daily_retraining",), defs=defs)
        print_summary(results)
        if results[-1].success:
            recommender = Recommender.from_data_dir(settings.data_root, server.http_url)
            recommend_for_a_few_users(recommender, server.http_url, users_per_scenario, scenarios)
        return results
    finally:
        server.stop()


def stage_seconds(instance: DagsterInstance, results) -> dict[str, float]:
    """Wall seconds of every step of the runs (step key -> seconds), in execution order."""
    out = {}
    for result in results:
        stats = sorted(instance.get_run_step_stats(result.run_id), key=lambda s: s.start_time or 0)
        for s in stats:
            if s.start_time and s.end_time:
                out[s.step_key] = round(s.end_time - s.start_time, 1)
    return out


def print_stage_times(instance: DagsterInstance, results, extra: dict[str, float] | None = None) -> None:
    """The time per stage (Dagster step) of the runs, longest first, plus ``extra`` (e.g. server start)."""
    times = {**stage_seconds(instance, results), **(extra or {})}
    if not times:
        return
    width = max(len(k) for k in times)
    print(f"\ntime per stage ({sum(times.values()):.0f} s in steps):")
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<{width}}  {seconds:8.1f} s")


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
        print(check_line(event))


def check_line(event) -> str:
    """One summary line per asset check: PASS, FAIL, or WARN for a failed warning-level check (the run went on),
    with the check's description when it did not pass."""
    status = "PASS" if event.passed else ("WARN" if event.severity == AssetCheckSeverity.WARN else "FAIL")
    line = f"  check {event.asset_key.to_user_string()}.{event.check_name:<24} {status}"
    return line if event.passed or not event.description else f"{line}: {event.description}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    # backfill_policy and partitioned asset checks are marked beta/preview by Dagster; the demo output
    # should show the pipeline, not those notices.
    warnings.filterwarnings("ignore", message=".*(currently in beta|currently in preview).*")
    start = time.perf_counter()
    instance = DagsterInstance.get()
    results = run_with_local_triton(instance)
    print_stage_times(instance, results)
    ok = all(r.success for r in results) and len(results) == 3
    print(f"\n{len(results)} runs {'succeeded' if ok else 'FAILED'} in {time.perf_counter() - start:.1f} s")
    print("browse them: make ui  ->  http://127.0.0.1:3000")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
