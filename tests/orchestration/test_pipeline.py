"""The graph end to end through real Dagster runs: all scenarios, gates, cache, backfills, failure safety."""

import shutil

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, build_schedule_context

from orchestration.definitions import build_definitions
from orchestration.jobs import PARTITION_RANGE_END, PARTITION_RANGE_START, all_scenarios_tags, daily_retraining_schedule
from orchestration.partitions import SCENARIOS

from .conftest import make_resources


# The data and semantic-ID stages of the daily job (the feature stages have their own test module).
CORE = [
    "raw_items", "raw_users", "raw_interactions", "interaction_log", "catalog_embeddings",
    "semantic_id_codebook", "item_semantic_ids", "sid_trie",
]


def run_daily(root, instance, files_dir=None, selection=CORE):
    defs = build_definitions(resources=make_resources(root, files_dir))
    return defs.resolve_job_def("daily_retraining").execute_in_process(
        instance=instance,
        tags=all_scenarios_tags(),
        asset_selection=[AssetKey(name) for name in selection],
        raise_on_error=False,
    )


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def checks(result) -> dict[str, bool]:
    """The gates' results (the freshness checks of orchestration/automation.py are tested on their own)."""
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.check_name != "freshness_check"}


def error_chain(error) -> str:
    """The step error's message plus its causes (the user-facing DataSourceError is the cause)."""
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return " ".join(parts)


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "cache" not in p.parts}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, small_world_dir):
    # One good run shared by the module: the tests below only add runs that must not damage it.
    root = tmp_path_factory.mktemp("good") / "data"
    with DagsterInstance.ephemeral() as instance:
        result = run_daily(root, instance, small_world_dir)
    assert result.success
    return root, result


def test_daily_run_builds_every_scenario_and_passes_gates(good_run, small_world_dir):
    root, result = good_run
    assert set(CORE) == materialized(result)
    assert checks(result) == {
        "raw_items_gate": True, "raw_interactions_gate": True, "interaction_log_gate": True,
        "semantic_id_quality_gate": True,
    }
    for scenario in SCENARIOS:
        frame = pd.read_parquet(root / "raw_interactions" / f"{scenario}.parquet")
        assert set(frame["scenario"]) == {scenario}
    log = pd.read_parquet(root / "interaction_log" / "_.parquet")
    source = pd.read_parquet(small_world_dir / "interactions.parquet")
    assert len(log) == len(source)  # every user of the world has >= 5 events, so nothing is dropped
    with np.load(root / "catalog_embeddings" / "_.npz") as stored:
        assert stored["fused"].shape == (240, 384 + 64)
        assert np.isfinite(stored["fused"]).all()
        assert list(stored["item_ids"]) == list(pd.read_parquet(root / "raw_items" / "_.parquet")["item_id"])


def test_item_semantic_ids_are_a_bijection_and_the_trie_covers_them(good_run):
    root, _ = good_run
    sids = pd.read_parquet(root / "item_semantic_ids" / "_.parquet")
    codes = sids[[c for c in sids.columns if c.startswith("sid_")]]
    assert codes.shape[1] == 4 and not codes.duplicated().any()
    assert sids["item_id"].is_unique and len(sids) == 240
    with np.load(root / "sid_trie" / "_.npz") as trie:
        assert list(trie["item_ids"]) == list(sids["item_id"])


def test_second_run_serves_every_text_from_the_cache_and_keeps_sids(good_run, instance, small_world_dir):
    root, _ = good_run
    sids_before = pd.read_parquet(root / "item_semantic_ids" / "_.parquet")
    again = run_daily(root, instance, small_world_dir)
    pd.testing.assert_frame_equal(pd.read_parquet(root / "item_semantic_ids" / "_.parquet"), sids_before)
    codebook = next(e for e in again.get_asset_materialization_events() if e.asset_key.path == ["semantic_id_codebook"])
    assert codebook.step_materialization_data.materialization.metadata["refit"].value is False
    event = next(e for e in again.get_asset_materialization_events() if e.asset_key.path == ["catalog_embeddings"])
    metadata = event.step_materialization_data.materialization.metadata
    assert metadata["embedded_now"].value == 0
    assert metadata["served_from_cache"].value == 240


@pytest.mark.parametrize(
    "table, corrupt, gate, column",
    [
        ("items", lambda f: pd.concat([f, f.head(1)]), "raw_items_gate", "item_id"),
        ("items", lambda f: f.assign(price=f["price"].where(f.index > 3, -5.0)), "raw_items_gate", "price"),
        ("interactions", lambda f: f.assign(item_id=f["item_id"].where(f.index > 0, "ghost")), "raw_interactions_gate", "item_id"),
        ("interactions", lambda f: f.assign(timestamp=f["timestamp"].where(f.index > 0, 86_400)), "raw_interactions_gate", "timestamp"),
    ],
)
def test_a_failing_gate_blocks_downstream_and_keeps_earlier_artifacts(
    good_run, instance, small_world_dir, tmp_path, table, corrupt, gate, column
):
    root, _ = good_run
    before = (root / "catalog_embeddings" / "_.npz").read_bytes()
    bad_dir = tmp_path / "bad"
    shutil.copytree(small_world_dir, bad_dir)
    path = bad_dir / f"{table}.parquet"
    corrupt(pd.read_parquet(path)).to_parquet(path, index=False)

    result = run_daily(root, instance, bad_dir)
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == gate)
    assert not evaluation.passed
    assert column in evaluation.description  # the UI says which column broke, and on how many rows
    assert "catalog_embeddings" not in materialized(result)
    assert (root / "catalog_embeddings" / "_.npz").read_bytes() == before


def test_missing_column_fails_clearly_and_loses_nothing(good_run, instance, small_world_dir, tmp_path):
    root, _ = good_run
    before = snapshot(root)
    bad_dir = tmp_path / "bad"
    shutil.copytree(small_world_dir, bad_dir)
    items = pd.read_parquet(bad_dir / "items.parquet").drop(columns=["title"])
    items.to_parquet(bad_dir / "items.parquet", index=False)

    result = run_daily(root, instance, bad_dir)
    assert not result.success
    message = " ".join(error_chain(e.step_failure_data.error) for e in result.get_step_failure_events())
    assert "items.parquet" in message and "title" in message
    after = snapshot(root)
    # raw_items failed, so it and everything downstream of it are exactly as before (raw_interactions does
    # not depend on the catalog and may legitimately be re-written by the same run).
    downstream = [n for n in before if not n.startswith("raw_interactions") and "dagster" not in n]
    assert "raw_items/_.parquet" in downstream and "catalog_embeddings/_.npz" in downstream
    for name in downstream:
        assert after[name] == before[name], f"{name} changed after a failed run"


def test_one_scenario_backfill_rewrites_only_that_partition(good_run, instance, small_world_dir):
    root, _ = good_run
    others = {s: (root / "raw_interactions" / f"{s}.parquet").stat().st_mtime_ns for s in SCENARIOS if s != "cart"}
    cart_before = (root / "raw_interactions" / "cart.parquet").stat().st_mtime_ns
    defs = build_definitions(resources=make_resources(root, small_world_dir))
    result = defs.resolve_job_def("scenario_refresh").execute_in_process(instance=instance, partition_key="cart")
    assert result.success
    assert materialized(result) == {"raw_interactions"}
    assert checks(result) == {"raw_interactions_gate": True}
    assert (root / "raw_interactions" / "cart.parquet").stat().st_mtime_ns > cart_before
    for scenario, mtime in others.items():
        assert (root / "raw_interactions" / f"{scenario}.parquet").stat().st_mtime_ns == mtime


def test_synthetic_source_generates_once_into_the_data_dir(tmp_path, instance):
    root = tmp_path / "data"
    defs = build_definitions(resources=make_resources(root))
    result = defs.resolve_job_def("ingest").execute_in_process(instance=instance, tags=all_scenarios_tags())
    assert result.success
    generated = list((root / "source").glob("synthetic-*/interactions.parquet"))
    assert len(generated) == 1


def test_daily_schedule_requests_all_scenarios_in_one_run():
    context = build_schedule_context(scheduled_execution_time=pd.Timestamp("2026-11-27 03:00", tz="UTC"))
    request = daily_retraining_schedule(context)
    assert request.tags[PARTITION_RANGE_START] == SCENARIOS[0]
    assert request.tags[PARTITION_RANGE_END] == SCENARIOS[-1]
    assert request.run_key == "daily-2026-11-27"


def test_degenerate_embeddings_fail_the_codebook_gate_and_block_training_inputs(good_run, instance, small_world_dir):
    root, _ = good_run
    sids_before = (root / "item_semantic_ids" / "_.parquet").read_bytes()
    embeddings = dict(np.load(root / "catalog_embeddings" / "_.npz"))
    embeddings["fused"] = np.ones_like(embeddings["fused"])  # every item identical: a collapsed codebook
    np.savez(root / "catalog_embeddings" / "_.npz", **embeddings)
    try:
        defs = build_definitions(resources=make_resources(root, small_world_dir))
        job = defs.resolve_job_def("daily_retraining")
        result = job.execute_in_process(
            instance=instance,
            tags=all_scenarios_tags(),
            asset_selection=[AssetKey("semantic_id_codebook"), AssetKey("item_semantic_ids"), AssetKey("sid_trie")],
            raise_on_error=False,
        )
        gate = next(e for e in result.get_asset_check_evaluations() if e.check_name == "semantic_id_quality_gate")
        assert not gate.passed
        assert "l1_coverage" in gate.description and "collision_p99" in gate.description
        assert materialized(result) == {"semantic_id_codebook"}
        assert (root / "item_semantic_ids" / "_.parquet").read_bytes() == sids_before
    finally:  # leave the shared good run as it was for other tests
        run_daily(root, instance, small_world_dir)


def test_daily_jobs_cover_the_graph_and_leave_analysis_off():
    defs = build_definitions()

    def assets_of(job: str) -> set[str]:
        return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}

    daily, features = assets_of("daily_retraining"), assets_of("refresh_features")
    analysis = {"semantic_id_comparison", "sft_ablations", "rl_comparison"}
    assert not (analysis | {"reasoning_instructions"}) & daily
    training_to_serving = {"sft_model", "sasrec_baseline", "sft_evaluation", "reward_model", "rl_policy",
                           "serving_candidate", "triton_model_repository", "deployed_model"}
    assert {"training_examples", "online_features", *CORE} | training_to_serving <= daily
    assert features == daily - training_to_serving
    instructions = defs.resolve_job_def("daily_instructions")
    assert {k.to_user_string() for k in instructions.asset_layer.executable_asset_keys} == {"reasoning_instructions"}


def test_production_profile_is_valid_config():
    from orchestration.settings import PROJECT_ROOT, load_settings

    settings = load_settings(PROJECT_ROOT / "deploy" / "params.production.yaml")
    assert settings.features.online_store == "redis" and settings.features.reasoner == "openai"
    assert settings.semantic_ids.codebook_size == 8192


def test_tests_override_every_resource(tmp_path):
    from orchestration.resources import default_resources
    from orchestration.settings import current_settings

    assert set(make_resources(tmp_path / "data")) == set(default_resources(current_settings())) | {"params"}


def test_deploying_runs_are_queued_one_at_a_time(tmp_path):
    import shutil

    import yaml
    from dagster import DagsterInstance

    from orchestration.jobs import DEPLOY_TAG
    from orchestration.settings import PROJECT_ROOT

    defs = build_definitions()
    for job in ("deploy", "daily_retraining"):
        assert DEPLOY_TAG.items() <= defs.resolve_job_def(job).tags.items()
    shutil.copy(PROJECT_ROOT / "orchestration" / "dagster.yaml", tmp_path / "dagster.yaml")
    limits = yaml.safe_load((tmp_path / "dagster.yaml").read_text())["run_queue"]["tag_concurrency_limits"]
    assert {"key": "oxyrec/deploy", "value": "true", "limit": 1} in limits
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # the instance accepts the config
        assert instance.run_coordinator is not None
