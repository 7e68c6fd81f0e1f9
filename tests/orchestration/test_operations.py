"""Operations: the new-raw-file sensor, run-failure notifications, freshness checks, resuming a failed run
and the production code location, all through real Dagster runs on a small world."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    ReexecutionOptions,
    build_run_status_sensor_context,
    build_sensor_context,
    execute_job,
    instance_for_test,
    reconstructable,
)
from dagster._core.test_utils import freeze_time  # Dagster's own clock override for time-based checks

from orchestration.automation import FRESH_ASSETS, MAX_STALENESS
from orchestration.definitions import build_definitions
from orchestration.jobs import PARTITION_RANGE_END, PARTITION_RANGE_START
from orchestration.notifications import notifications_path, run_failure_notifier
from orchestration.partitions import SCENARIOS
from orchestration.resources import ArtifactStoreResource, DataSourceResource
from orchestration.sensors import new_raw_file_sensor
from orchestration.settings import PROJECT_ROOT

from .conftest import make_resources

CORE = [
    "raw_items", "raw_users", "raw_interactions", "interaction_log", "catalog_embeddings",
    "semantic_id_codebook", "item_semantic_ids", "sid_trie",
]


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def tick(landing: Path, cursor: str | None):
    context = build_sensor_context(
        cursor=cursor, resources={"data_source": DataSourceResource(source="files", files_dir=str(landing))}
    )
    return new_raw_file_sensor.evaluate_tick(context)


# ---------------------------------------------------------------------------------------------- raw-file sensor


def test_new_raw_file_sensor_fires_once_per_new_file_and_its_run_ingests(tmp_path, small_world_dir, instance):
    landing = tmp_path / "landing"
    landing.mkdir()
    first = tick(landing, None)
    assert first.run_requests == [] and first.skip_message

    shutil.copy(small_world_dir / "items.parquet", landing / "items.parquet")
    shutil.copy(small_world_dir / "interactions.parquet", landing / "interactions.parquet")
    (landing / ".users.parquet.tmp").write_text("half-written export")  # not yet renamed into place: ignored
    (landing / "README.txt").write_text("not a raw table")
    arrived = tick(landing, first.cursor)
    assert len(arrived.run_requests) == 1
    request = arrived.run_requests[0]
    assert new_raw_file_sensor.job_name == "ingest" and request.job_name is None  # the sensor's one job
    assert request.tags["oxyrec/files"] == "interactions.parquet,items.parquet"
    assert (request.tags[PARTITION_RANGE_START], request.tags[PARTITION_RANGE_END]) == (SCENARIOS[0], SCENARIOS[-1])

    again = tick(landing, arrived.cursor)  # nothing new: no second run for the same files
    assert again.run_requests == [] and again.cursor == arrived.cursor

    shutil.copy(small_world_dir / "users.parquet", landing / "users.parquet")
    newer = tick(landing, again.cursor)
    assert [r.tags["oxyrec/files"] for r in newer.run_requests] == ["users.parquet"]
    assert newer.run_requests[0].run_key != request.run_key
    assert tick(landing, newer.cursor).run_requests == []

    # A re-export of a file already seen (new content, new mtime) is new data: exactly one more run.
    items = pd.read_parquet(landing / "items.parquet")
    items.loc[0, "title"] = "re-exported title"
    items.to_parquet(landing / "items.parquet", index=False)
    os.utime(landing / "items.parquet", ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = tick(landing, newer.cursor)
    assert [r.tags["oxyrec/files"] for r in changed.run_requests] == ["items.parquet"]
    assert tick(landing, changed.cursor).run_requests == []

    # The requested run is a valid all-scenario ingest of the landed files, and its freshness check passes.
    root = tmp_path / "data"
    defs = build_definitions(resources=make_resources(root, files_dir=landing))
    result = defs.resolve_job_def("ingest").execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    assert {"raw_items", "raw_users", "raw_interactions", "interaction_log"} == materialized(result)
    assert sorted(p.stem for p in (root / "raw_interactions").glob("*.parquet")) == sorted(SCENARIOS)
    assert pd.read_parquet(root / "raw_items" / "_.parquet")["title"].iloc[0] == "re-exported title"
    fresh = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()
             if e.check_name == "freshness_check"}
    assert fresh == {"interaction_log": True}


def test_new_raw_file_sensor_skips_the_synthetic_source():
    context = build_sensor_context(resources={"data_source": DataSourceResource()})
    data = new_raw_file_sensor.evaluate_tick(context)
    assert data.run_requests == [] and "synthetic" in data.skip_message


# ---------------------------------------------------------------------------------------- failure notifications


def test_failed_run_is_notified_with_job_run_step_and_error(tmp_path, small_world_dir, instance, monkeypatch, capsys):
    def unreadable(self):
        raise RuntimeError("warehouse export items.parquet is unreadable")

    monkeypatch.setattr(DataSourceResource, "items", unreadable)
    root = tmp_path / "data"
    defs = build_definitions(resources=make_resources(root, files_dir=small_world_dir))
    result = defs.resolve_job_def("ingest").execute_in_process(
        instance=instance, asset_selection=[AssetKey("raw_items"), AssetKey("raw_users")], raise_on_error=False
    )
    assert not result.success
    failure = result.get_run_failure_event()
    assert failure.event_type == DagsterEventType.RUN_FAILURE

    context = build_run_status_sensor_context(
        sensor_name="run_failure_notifier",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"artifacts": ArtifactStoreResource(root=str(root))},
    ).for_run_failure()
    capsys.readouterr()
    run_failure_notifier(context)

    lines = notifications_path(root).read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["job"] == "ingest" and record["run_id"] == result.run_id
    assert record["failed_steps"] == ["raw_items"]
    assert record["error"] == "RuntimeError: warehouse export items.parquet is unreadable"
    assert record["message"] == (
        f"run {result.run_id} of job 'ingest' failed at step 'raw_items': "
        "RuntimeError: warehouse export items.parquet is unreadable"
    )
    logged = capsys.readouterr().err
    assert "dagster - ERROR" in logged and record["message"] in logged  # and in the sensor's Dagster log

    # The notifier is a run-failure sensor of the code location, and a second failure appends a second line.
    assert "run_failure_notifier" in {s.name for s in defs.get_repository_def().sensor_defs}
    run_failure_notifier(context)
    assert len(notifications_path(root).read_text().splitlines()) == 2


# ---------------------------------------------------------------------------------------------------- freshness


def test_freshness_checks_cover_unified_assets_and_fail_when_stale(tmp_path, small_world_dir, instance):
    defs = build_definitions(resources=make_resources(tmp_path / "data", files_dir=small_world_dir))
    repo = defs.get_repository_def()
    keys = {AssetCheckKey(AssetKey(name), "freshness_check") for name in FRESH_ASSETS}
    assert keys <= set(repo.asset_graph.asset_check_keys)
    assert "freshness_checks_sensor" in {s.name for s in repo.sensor_defs}

    job = defs.resolve_implicit_global_asset_job_def()

    def evaluate(name: str, at: dt.datetime) -> bool:
        only_check = job.get_subset(asset_selection=set(), asset_check_selection={AssetCheckKey(AssetKey(name), "freshness_check")})
        with freeze_time(at):
            result = only_check.execute_in_process(instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation.passed

    now = dt.datetime.now(dt.timezone.utc)
    assert evaluate("interaction_log", now) is False  # never materialized: overdue
    instance.report_runless_asset_event(AssetMaterialization("interaction_log"))
    assert evaluate("interaction_log", now + dt.timedelta(hours=1)) is True
    assert evaluate("interaction_log", now + MAX_STALENESS + dt.timedelta(hours=1)) is False  # a missed day


# ------------------------------------------------------------------------------------- fault injection, resume


def resume_job():
    """Reconstructable daily job for re-execution (root and data dir come from the environment)."""
    root = Path(os.environ["OXYREC_TEST_RESUME_ROOT"])
    defs = build_definitions(resources=make_resources(root, files_dir=Path(os.environ["OXYREC_TEST_RESUME_WORLD"])))
    return defs.resolve_job_def("daily_retraining")


def test_failure_midway_keeps_earlier_assets_and_reexecution_resumes_from_it(tmp_path, small_world_dir, monkeypatch):
    import assets.semantic_ids

    root = tmp_path / "data"
    monkeypatch.setenv("OXYREC_TEST_RESUME_ROOT", str(root))
    monkeypatch.setenv("OXYREC_TEST_RESUME_WORLD", str(small_world_dir))

    def crash(*args, **kwargs):
        raise MemoryError("injected: k-means ran out of memory")

    real_fit = assets.semantic_ids.fit_or_reuse
    monkeypatch.setattr(assets.semantic_ids, "fit_or_reuse", crash)
    in_process = {"execution": {"config": {"in_process": {}}}}
    tags = {PARTITION_RANGE_START: SCENARIOS[0], PARTITION_RANGE_END: SCENARIOS[-1]}
    with instance_for_test() as instance:
        failed = resume_job().execute_in_process(
            instance=instance, tags=tags, asset_selection=[AssetKey(n) for n in CORE], raise_on_error=False
        )
        assert not failed.success
        assert [e.step_key for e in failed.get_step_failure_events()] == ["semantic_id_codebook"]
        earlier = {"raw_items", "raw_users", "raw_interactions", "interaction_log", "catalog_embeddings"}
        assert materialized(failed) == earlier
        assert not (root / "semantic_id_codebook").exists() or not any((root / "semantic_id_codebook").glob("_.*"))
        assert not (root / "item_semantic_ids").exists() and not (root / "sid_trie").exists()
        before = {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
                  for name in earlier for p in (root / name).glob("*") if p.is_file()}
        assert len(before) == 4 + len(SCENARIOS)

        monkeypatch.setattr(assets.semantic_ids, "fit_or_reuse", real_fit)  # the cause is fixed
        resumed = execute_job(
            reconstructable(resume_job),
            instance=instance,
            run_config=in_process,
            reexecution_options=ReexecutionOptions.from_failure(failed.run_id, instance),
        )
        assert resumed.success
        assert materialized(resumed) == {"semantic_id_codebook", "item_semantic_ids", "sid_trie"}
        started = {e.step_key for e in resumed.all_events if e.event_type == DagsterEventType.STEP_START}
        assert not started & earlier  # nothing before the failed stage ran again
        after = {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
                 for name in earlier for p in (root / name).glob("*") if p.is_file()}
        assert after == before
        assert (root / "item_semantic_ids" / "_.parquet").exists() and (root / "sid_trie" / "_.npz").exists()
        run = instance.get_run_by_id(resumed.run_id)
        assert run.parent_run_id == failed.run_id


# ------------------------------------------------------------------------------------ production code location


PRODUCTION_CHECK = """
import json
from dagster import Definitions, validate_run_config
from orchestration.production import defs, production_executor
Definitions.validate_loadable(defs)
repo = defs.get_repository_def()
jobs = {}
for name in ["ingest", "daily_instructions", "daily_retraining", "scenario_refresh", "train_sft", "deploy",
             "instruction_updates_job"]:
    job = defs.resolve_job_def(name)
    config = {"ops": {"instruction_updates": {"config": {"user_ids": ["u1"]}}}} if name == "instruction_updates_job" else {}
    validate_run_config(job, config)
    jobs[name] = job.executor_def.name
resources = defs.resources  # the resource objects the code location was built with
print(json.dumps({
    "jobs": jobs,
    "sensors": sorted(s.name for s in repo.sensor_defs),
    "schedules": sorted(s.name for s in repo.schedule_defs),
    "online": resources["feature_store"].online,
    "source": resources["data_source"].source,
    "files_dir": resources["data_source"].files_dir,
    "root": resources["artifacts"].root,
}))
"""


def test_production_definitions_load_with_the_production_params_and_executor(tmp_path, small_world_dir):
    production = yaml.safe_load((PROJECT_ROOT / "deploy" / "params.production.yaml").read_text())
    # Only the mount points move (no /mnt here); everything else is the production file as shipped.
    production["data"]["root"] = str(tmp_path / "volume")
    production["data"]["files_dir"] = str(small_world_dir)
    config = tmp_path / "params.production.yaml"
    config.write_text(yaml.safe_dump(production))
    env = {**os.environ, "OXYREC_CONFIG": str(config), "OXYREC_REDIS_URL": "redis://redis.internal:6379"}
    env.pop("OXYREC_HOME", None)
    env.pop("OXYREC_DATA_DIR", None)
    out = subprocess.run([sys.executable, "-c", PRODUCTION_CHECK], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(loaded["jobs"].values()) == {"production_multiprocess"}
    assert {"new_raw_file_sensor", "run_failure_notifier", "freshness_checks_sensor", "high_value_action_sensor"} <= set(loaded["sensors"])
    assert loaded["schedules"] == ["daily_instructions_schedule", "daily_retraining_schedule"]
    assert (loaded["online"], loaded["source"]) == ("redis", "files")
    assert loaded["files_dir"] == str(small_world_dir) and loaded["root"] == str(tmp_path / "volume")


def test_helm_values_run_the_production_code_location():
    values = yaml.safe_load((PROJECT_ROOT / "deploy" / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is True
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert module == "orchestration.production" and (PROJECT_ROOT / "orchestration" / "production.py").is_file()
    env = {item["name"]: item.get("value") for item in deployment["env"]}
    config = env["OXYREC_CONFIG"]
    assert config.endswith("deploy/params.production.yaml") and (PROJECT_ROOT / "deploy" / "params.production.yaml").is_file()
    production = yaml.safe_load((PROJECT_ROOT / "deploy" / "params.production.yaml").read_text())
    mounts = {m["mountPath"] for m in deployment["volumeMounts"]}
    assert production["data"]["root"] in mounts  # the shared data volume is where the params put the data
    assert Path(production["data"]["files_dir"]).parent.as_posix() in mounts
    # the run pods get the same volumes and environment as the code server
    job_config = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {m["mountPath"] for m in job_config["volumeMounts"]} == mounts
    assert "OXYREC_CONFIG=" + config in job_config["envVars"]
