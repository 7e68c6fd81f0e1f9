"""RL post-training through real Dagster runs on the small world: reward_model -> rl_policy -> serving_candidate
(the paired gate's choice between the RL policy and its SFT model)."""

import pandas as pd
import pytest
import torch
from dagster import AssetKey, DagsterInstance

from orchestration.definitions import build_definitions
from orchestration.io_managers import read_value
from orchestration.jobs import PARTITION_RANGE_END, PARTITION_RANGE_START, all_scenarios_tags
from orchestration.partitions import instruction_day_partitions

from .conftest import TINY_RL, TINY_SFT, make_resources
from .test_pipeline import error_chain

RL_KEYS = [AssetKey("reward_model"), AssetKey("rl_policy"), AssetKey("serving_candidate")]


@pytest.fixture(scope="module")
def sft_world(tmp_path_factory, small_world_dir):
    """The small world through ingest, instructions, daily retraining and a tiny SFT run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rl") / "data"
    defs = build_definitions(resources=make_resources(root, small_world_dir))
    world_days = pd.to_datetime(pd.read_parquet(small_world_dir / "interactions.parquet")["timestamp"], unit="s")
    days = [d for d in instruction_day_partitions.get_partition_keys()
            if world_days.min().strftime("%Y-%m-%d") < d <= (world_days.max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")]
    with DagsterInstance.ephemeral() as instance:
        for job, tags in (("ingest", all_scenarios_tags()),
                          ("daily_instructions", {PARTITION_RANGE_START: days[-7], PARTITION_RANGE_END: days[-1]}),
                          ("refresh_features", all_scenarios_tags())):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags).success
        sft = build_definitions(resources=make_resources(root, None, sft=TINY_SFT))
        assert sft.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[AssetKey("sft_model")]).success
    yield root
    torch.set_num_threads(threads)


def materialize_rl(root, **rl):
    defs = build_definitions(resources=make_resources(root, None, sft=TINY_SFT, rl={**TINY_RL, **rl}))
    with DagsterInstance.ephemeral() as instance:
        return defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=RL_KEYS, raise_on_error=False)


def gate(result) -> list:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == "serving_candidate_is_rl"]


def metadata(result, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset)
    return {k: getattr(v, "value", v) for k, v in event.step_materialization_data.materialization.metadata.items()}


@pytest.fixture(scope="module")
def accepted(sft_world):
    result = materialize_rl(sft_world, gate_margin=1.0)  # any policy within 1.0 of SFT on every metric is served
    return sft_world, result


def test_rl_policy_raises_reward_over_sft_and_is_served(accepted):
    root, result = accepted
    assert result.success
    [check] = gate(result)
    assert check.passed

    reward = metadata(result, "reward_model")
    assert reward["auc_click"] > 0.55  # better than the constant predictor (AUC 0.5) on held-out rows
    assert "auc_constant" in reward["heads"] and "logloss_constant" in reward["heads"]

    manifest = read_value(root / "rl_policy" / "_", root)
    assert manifest["algorithm"] == "sagcpo" and manifest["steps"] == TINY_RL["steps"]
    assert manifest["stopped_reason"] == "steps_done" and not manifest["kl_blowup"]
    assert manifest["reward_rl"] > manifest["reward_sft"]  # RL improves the mean reward on validation prompts
    assert {r["group"] for r in manifest["per_scenario"]} >= {"overall"}
    # RL and SFT are both scored on every validation and test example, in the training frame's order
    cases = pd.read_parquet(manifest["cases"])
    examples = pd.read_parquet(root / "training_examples" / "_.parquet")
    for split in ("valid", "test"):
        for model in ("sft", "rl"):
            part = cases[(cases["split"] == split) & (cases["model"] == model)]
            assert part["example"].tolist() == list(range(int((examples["split"] == split).sum())))
    assert manifest["val_examples"] == int((examples["split"] == "valid").sum())
    meta = metadata(result, "rl_policy")
    assert meta["val_hr10_sft"] == manifest["val_hr10_sft"] and meta["reward_rl"] == manifest["reward_rl"]
    assert "base64" in meta["curves"] and "low" in meta["rl_vs_sft_valid"]
    # the history has reward, KL and entropy curves
    assert all({"reward_mean", "kl_after", "entropy"} <= set(h) for h in manifest["history"])

    policy = torch.load(manifest["checkpoint"], weights_only=True)["state_dict"]
    sft_ckpt = torch.load(read_value(root / "sft_model" / "_", root)["checkpoint"], weights_only=True)
    sft_state = {k[len("model."):]: v for k, v in sft_ckpt["state_dict"].items() if k.startswith("model.")}
    assert set(policy) == set(sft_state)
    assert any(not torch.equal(policy[k], sft_state[k]) for k in policy)  # the policy moved away from SFT

    served = read_value(root / "serving_candidate" / "_", root)
    assert served["served"] == "rl" and served["checkpoint"] == manifest["checkpoint"]
    assert all(c["low"] >= -1.0 for c in served["valid_intervals"])


def test_a_policy_worse_than_sft_is_not_served_and_the_run_does_not_fail(accepted):
    root, _ = accepted
    # far too large a learning rate: the policy forgets what SFT learned; the gate (margin 0) keeps SFT
    result = materialize_rl(root, gate_margin=0.0, lr=3e-2, steps=12)
    assert result.success  # a fallback to SFT is a warning, not a failed run
    [check] = gate(result)
    assert not check.passed and check.severity.value == "WARN"
    served = read_value(root / "serving_candidate" / "_", root)
    sft = read_value(root / "sft_model" / "_", root)
    assert served["served"] == "sft" and served["checkpoint"] == sft["checkpoint"]
    assert served["encoder"] == sft["encoder"] and "serving the SFT model" in served["reason"]
    assert any(c["low"] < 0 for c in served["valid_intervals"])


def test_a_kl_blowup_is_reported(accepted):
    root, _ = accepted
    result = materialize_rl(root, gate_margin=1.0, kl_stop=1e-12)
    assert result.success
    meta = metadata(result, "rl_policy")
    assert meta["kl_blowup"] and meta["stopped_reason"] == "kl_stop" and meta["steps"] == 1


def test_an_exploding_update_fails_clearly_and_keeps_the_last_good_policy(accepted):
    root, _ = accepted
    before = (root / "rl_policy" / "_.json").read_text()
    result = materialize_rl(root, lr=1e8)
    assert not result.success
    message = " ".join(error_chain(e.step_failure_data.error) for e in result.get_step_failure_events())
    assert "non-finite" in message and "last good policy is saved at" in message
    assert (root / "rl_policy" / "_.json").read_text() == before  # the previous materialization is untouched
    saved = message.split("saved at ")[1].split(";")[0]
    restored = torch.load(saved, weights_only=True)["state_dict"]
    sft_ckpt = torch.load(read_value(root / "sft_model" / "_", root)["checkpoint"], weights_only=True)
    sft_state = {k[len("model."):]: v for k, v in sft_ckpt["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(restored[k], sft_state[k]) for k in sft_state)  # restored to the state before the step
    assert not gate(result)  # nothing to check: no new policy


def test_rl_comparison_runs_every_algorithm_and_share_on_the_same_budget(accepted):
    root, _ = accepted
    rl = {**TINY_RL, "comparison": {"algorithms": ["grpo", "sagcpo_gc"], "synthetic_shares": [0.0, 0.5], "steps": 2,
                                    "seeds": [0, 1], "lr": 1e-3, "group_clip": 0.123}}
    defs = build_definitions(resources=make_resources(root, None, sft=TINY_SFT, rl=rl))
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[AssetKey("rl_comparison")])
    assert result.success
    table = pd.read_parquet(root / "rl_comparison" / "_.parquet")
    runs = table[table["algorithm"] != "sft"]
    assert sorted(zip(runs["algorithm"], runs["synthetic_share"], runs["seed"])) == [
        (a, share, seed) for a in ("grpo", "sagcpo_gc") for share in (0.0, 0.5) for seed in (0, 1)]
    assert (runs["steps"] == 2).all() and (runs["status"] == "steps_done").all()
    # different seeds are different runs
    grpo = runs[(runs["algorithm"] == "grpo") & (runs["synthetic_share"] == 0.0)]
    assert grpo["final_kl"].nunique() == 2
    sft = table[table["algorithm"] == "sft"].iloc[0]
    assert sft["reward"] == pytest.approx(read_value(root / "rl_policy" / "_", root)["reward_sft"])
    assert (runs["reward_gain"] == runs["reward"] - sft["reward"]).all()
    assert runs["clip_frac"].between(0.0, 1.0).all()  # how far each run's ratios left 1
    assert (root / "rl_comparison" / "comparison.png").stat().st_size > 1000
    meta = result.asset_materializations_for_node("rl_comparison")[0].metadata
    # sagcpo_gc's target as configured (default: the SFT policy's mean training reward, on the scale it clips)
    assert meta["budget"].value["group_clip"] == pytest.approx(0.123)
    assert "reward_mean" in meta["summary"].value and "sagcpo_gc" in meta["summary"].value
