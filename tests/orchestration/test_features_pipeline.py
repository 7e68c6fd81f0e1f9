"""Fast-slow thinking through Dagster: ingest, daily instructions, Feast registry, online store, training set."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import pytest
from dagster import AssetKey, DagsterInstance

from models.eval.cases import summary_table
from orchestration.definitions import build_definitions
from orchestration.io_managers import read_value
from orchestration.jobs import PARTITION_RANGE_END, PARTITION_RANGE_START, all_scenarios_tags
from orchestration.partitions import instruction_day_partitions

from .conftest import TINY_RL, TINY_SFT, make_resources
from .test_pipeline import error_chain

FEATURE_STAGES = ["scenario_instructions", "feature_sources", "feast_registry", "online_features", "training_examples"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, small_world_dir):
    root = tmp_path_factory.mktemp("features") / "data"
    defs = build_definitions(resources=make_resources(root, small_world_dir))
    # The small world spans 30 days from its own start: instructions for every day of it (they scale with activity)
    world_days = pd.to_datetime(pd.read_parquet(small_world_dir / "interactions.parquet")["timestamp"], unit="s")
    days = [d for d in instruction_day_partitions.get_partition_keys()
            if world_days.min().strftime("%Y-%m-%d") <= d <= (world_days.max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")]
    with DagsterInstance.ephemeral() as instance:
        runs = [
            defs.resolve_job_def("ingest").execute_in_process(instance=instance, tags=all_scenarios_tags()),
            defs.resolve_job_def("daily_instructions").execute_in_process(
                instance=instance, tags={PARTITION_RANGE_START: days[0], PARTITION_RANGE_END: days[-1]}
            ),
            defs.resolve_job_def("refresh_features").execute_in_process(instance=instance, tags=all_scenarios_tags()),
        ]
    assert all(r.success for r in runs)
    return root, runs, days


def test_feature_stages_all_materialize(pipeline):
    _, runs, _ = pipeline
    built = {e.asset_key.to_user_string() for e in runs[2].get_asset_materialization_events()}
    assert set(FEATURE_STAGES) <= built


def test_instructions_follow_activity_and_are_point_in_time(pipeline):
    root, _, days = pipeline
    log = pd.read_parquet(root / "interaction_log" / "_.parquet")
    window = 300  # features.incremental_window_minutes = 5
    frames = []
    for day in days:
        frame = pd.read_parquet(root / "reasoning_instructions" / f"{day}.parquet")
        start = int(pd.Timestamp(day, tz="UTC").timestamp())
        assert ((frame["generated_at"] >= start) & (frame["generated_at"] < start + 86_400)).all()
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    # one instruction per user and 5-minute window with activity, generated when the window closes: nothing else
    ends = (log["timestamp"] // window + 1) * window
    expected = set(zip(log["user_id"], ends))
    assert set(zip(frame["user_id"], frame["generated_at"])) == expected and len(frame) == len(expected)
    assert len(frame) < len(log)  # scales with activity, not with users x days
    vectors = np.stack(frame["instruction_embedding"].to_numpy())
    assert vectors.shape[1] == 384 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert frame["instruction_text"].str.len().min() > 20


def test_most_examples_carry_an_instruction_built_from_earlier_events(pipeline):
    root, runs, _ = pipeline
    examples = pd.read_parquet(root / "training_examples" / "_.parquet")
    # every example has an earlier event (the first event of a user is not an example)
    assert (examples["long_len"] >= 1).all()
    assert examples["has_instruction"].mean() >= 0.9
    meta = next(e for e in runs[2].get_asset_materialization_events()
                if e.asset_key.to_user_string() == "training_examples").materialization.metadata
    assert meta["instruction_coverage"].value["all"] == pytest.approx(examples["has_instruction"].mean(), abs=1e-4)


def test_online_store_serves_the_latest_instruction_and_defaults_unknown_users(pipeline):
    root, _, days = pipeline
    from feature_repo.store import OxyFeatureStore

    store = OxyFeatureStore(root / "feast")
    every = pd.concat([pd.read_parquet(root / "reasoning_instructions" / f"{d}.parquet") for d in days])
    last = every.sort_values("generated_at", kind="stable").drop_duplicates("user_id", keep="last")  # latest per user
    user = last["user_id"].iloc[0]
    online = store.online_features(user, "cart")
    assert online["has_instruction"] and online["instruction_text"] == last["instruction_text"].iloc[0]
    np.testing.assert_allclose(online["instruction_embedding"], last["instruction_embedding"].iloc[0], atol=1e-6)
    unknown = store.online_features("nobody-ever", "cart")
    assert unknown["has_instruction"] is False or not unknown["has_instruction"]
    with pytest.raises((TypeError, ValueError), match="user_id"):
        store.online_features(12345, "cart")


def test_training_examples_never_see_the_future(pipeline):
    root, _, _ = pipeline
    examples = pd.read_parquet(root / "training_examples" / "_.parquet")
    assert set(examples["split"]) == {"train", "valid", "test"}
    with_instruction = examples[examples["has_instruction"]]
    assert len(with_instruction) > 0
    assert (with_instruction["generated_at"] < with_instruction["target_timestamp"]).all()
    # the target itself is never part of the history it is predicted from
    log = pd.read_parquet(root / "interaction_log" / "_.parquet")
    last_test = examples[examples["split"] == "test"].iloc[0]
    history = log[(log["user_id"] == last_test["user_id"]) & (log["timestamp"] < last_test["target_timestamp"])
                  & (log["scenario"] == last_test["scenario"])]
    assert list(last_test["short_item_ids"]) == list(history["item_id"].tail(len(last_test["short_item_ids"])))


def test_high_value_action_updates_only_affected_users_online(pipeline, tmp_path):
    import json
    import time

    from feature_repo.store import OxyFeatureStore
    from orchestration.sensors import evaluate_landing

    root, _, _ = pipeline
    store = OxyFeatureStore(root / "feast")
    log = pd.read_parquet(root / "interaction_log" / "_.parquet")
    items = pd.read_parquet(root / "raw_items" / "_.parquet")
    users = sorted(log["user_id"].unique())
    actor, bystander = users[0], users[1]
    before = {u: store.online_features(u, "cart") for u in (actor, bystander)}

    landing = tmp_path / "incoming"
    landing.mkdir()
    now = int(time.time())
    stroller = items.loc[items["title"].str.contains("stroller", case=False), "item_id"]
    item = stroller.iloc[0] if len(stroller) else items["item_id"].iloc[0]
    events = [
        {"user_id": actor, "item_id": item, "timestamp": now, "scenario": "cart", "action": "order"},
        {"user_id": bystander, "item_id": item, "timestamp": now, "scenario": "feed", "action": "view"},
    ]
    (landing / "batch-0001.jsonl").write_text("\n".join(json.dumps(e) for e in events))

    request, cursor = evaluate_landing(landing, None, ["cart", "order"], 300, now)
    assert request is not None
    config = request.run_config["ops"]["instruction_updates"]["config"]
    assert config["user_ids"] == [actor]  # a view is not a high-value action
    again, _ = evaluate_landing(landing, cursor, ["cart", "order"], 300, now)
    assert again is None  # the cursor makes each file count once

    defs = build_definitions(resources=make_resources(root, None))
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("instruction_updates_job").execute_in_process(
            instance=instance, run_config=request.run_config
        )
    assert result.success
    after = {u: store.online_features(u, "cart") for u in (actor, bystander)}
    assert after[actor]["generated_at"] > before[actor]["generated_at"]
    assert after[actor]["instruction_text"] != before[actor]["instruction_text"]
    assert after[bystander] == before[bystander]
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert 0 <= meta["action_to_online_p50_s"].value < 120


SFT = {**TINY_SFT, "sasrec": {"hidden": 16, "max_len": 10, "max_epochs": 2, "patience": 1},
       "gate_margin": 1.0}  # a 4-batch model is not expected to beat popularity; the gate test sets 0
RL = TINY_RL  # serving_candidate's choice is tested in test_rl_pipeline.py


@pytest.fixture(scope="module")
def trained(pipeline):
    root, _, _ = pipeline
    defs = build_definitions(resources=make_resources(root, None, sft=SFT, rl=RL))
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("train_sft").execute_in_process(instance=instance)
    assert result.success
    return root


def test_sft_is_evaluated_against_popularity_and_sasrec_on_the_same_examples(trained):
    root = trained
    cases = pd.read_parquet(root / "sft_evaluation" / "_.parquet")
    table = summary_table(cases)
    overall = table[table["group"] == "overall"].set_index(["split", "model"])
    models = {"oxygenrec_sft", "popularity", "popularity_per_scenario", "sasrec", "sasrec_scenario"}
    assert set(overall.index) == {(split, m) for split in ("valid", "test") for m in models}
    examples = pd.read_parquet(root / "training_examples" / "_.parquet")
    for split in ("valid", "test"):  # every model scored on the same examples: the split's examples, in order
        n = int((examples["split"] == split).sum())
        assert overall.loc[split]["n"].nunique() == 1 and overall.loc[split]["n"].iloc[0] == n > 0
        for _, part in cases[cases["split"] == split].groupby("model"):
            assert part["example"].tolist() == list(range(n))
    assert ((0.0 <= overall["hr@10"]) & (overall["hr@10"] <= 1.0)).all()
    manifest = read_value(root / "sft_model" / "_", root)
    torch.load(manifest["checkpoint"], weights_only=True)  # checkpoints load without pickle code execution
    variants = read_value(root / "sasrec_baseline" / "_", root)["variants"]
    assert set(variants) == {"sasrec", "sasrec_scenario"}  # the small world has six scenarios
    for sasrec in variants.values():
        assert sasrec["metrics"]["epochs"] >= 1 and Path(sasrec["weights"]).is_file()


def test_the_gate_refuses_an_untrained_model_and_nothing_downstream_runs(trained, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(trained, root, ignore=shutil.ignore_patterns("triton_repository"))
    # one optimizer step: far below popularity on validation HR@10 (the gate's default baseline)
    untrained = {**SFT, "limit_train_batches": 1, "lr": 1e-6, "warmup_steps": 0, "gate_margin": 0.0}
    defs = build_definitions(resources=make_resources(root, None, sft=untrained))
    selection = [AssetKey(k) for k in ("sft_model", "sft_evaluation", "rl_policy", "serving_candidate",
                                       "triton_model_repository")]
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=selection, raise_on_error=False)
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    gate = checks["sft_beats_baseline"]
    assert not gate.passed
    assert gate.metadata["model_valid_hr@10"].value < gate.metadata["baseline_valid_hr@10"].value
    assert gate.metadata["baseline"].value == "popularity" and "lower bound" in gate.description
    built = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "sft_evaluation" in built and not {"rl_policy", "serving_candidate", "triton_model_repository"} & built


def check_client_path(root, server):
    """The client path of `oxyrec recommend`: Feast online features -> encoder -> Triton, HTTP and gRPC."""
    from triton_repo.recommend import Recommender

    catalog = set(pd.read_parquet(root / "item_semantic_ids" / "_.parquet")["item_id"])
    user = pd.read_parquet(root / "interaction_log" / "_.parquet")["user_id"].iloc[0]
    http = Recommender.from_data_dir(root, server.http_url)
    table = http.recommend(user, "cart", k=5)
    assert len(table) == 5 and set(table["item_id"]) <= catalog and table["title"].str.len().min() > 0
    assert http.last_features["known_user"]
    grpc = Recommender.from_data_dir(root, server.grpc_url, protocol="grpc")
    assert grpc.recommend(user, "cart", k=5)["item_id"].tolist() == table["item_id"].tolist()
    stranger = http.recommend("never-seen-user", "homepage", k=5)  # default instruction, still valid items
    assert len(stranger) == 5 and set(stranger["item_id"]) <= catalog
    assert not http.last_features["known_user"] and not http.last_features["has_instruction"]
    with pytest.raises(ValueError, match="unknown scenario 'moon'"):
        http.recommend(user, "moon")


def test_deploy_serves_in_process_answers_and_rolls_back_a_broken_version(trained, tmp_path):
    from models.export.repository import MODELS, list_versions
    from orchestration.resources import TritonResource
    from triton_repo import TritonServer, ensure_tritonserver

    root = trained
    repo = root / "triton_repository"
    repo.mkdir(exist_ok=True)
    server = TritonServer(repo, home=ensure_tritonserver(), log_path=tmp_path / "triton.log").start()
    try:
        resources = make_resources(root, None, sft=SFT, rl=RL)
        resources["triton"] = TritonResource(url=server.http_url, repository=str(repo))
        defs = build_definitions(resources=resources)
        job = defs.resolve_job_def("deploy")
        with DagsterInstance.ephemeral() as instance:
            first = job.execute_in_process(instance=instance)  # smoke test inside: served == in-process
            assert first.success
            assert {e.check_name: e.passed for e in first.get_asset_check_evaluations()} == {"exported_model_parity": True}
            assert all(list_versions(repo, m) == [1] for m in MODELS)
            assert server.model_ready("oxygenrec_generate", 1)
            check_client_path(root, server)

            # A broken new version: the staged encoder graph is corrupted before the deploy step.
            job.execute_in_process(instance=instance, asset_selection=[AssetKey("triton_model_repository")])
            staged = root / "triton_model_repository" / "staged" / "oxygenrec_generate" / "1" / "encoder.onnx"
            staged.write_bytes(staged.read_bytes()[:100] + b"garbage")
            broken = job.execute_in_process(
                instance=instance, asset_selection=[AssetKey("deployed_model")], raise_on_error=False
            )
        assert not broken.success
        message = " ".join(error_chain(e.step_failure_data.error) for e in broken.get_step_failure_events())
        assert "deployment failed at load" in message and "rolled back" in message and "encoder.onnx" in message
        assert all(list_versions(repo, m) == [1] for m in MODELS)  # version 2 is gone
        assert server.model_ready("oxygenrec_generate", 1)  # and version 1 still serves
    finally:
        server.stop()
