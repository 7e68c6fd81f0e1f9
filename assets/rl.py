"""RL post-training of the SFT generator (OxygenREC's SA-GCPO stage); group "training", run by ``train_sft``.

* ``reward_model``: the unified ranking model P(click / cart / order | user context, scenario, item), fitted and
  calibrated on train-split rows only, scored on validation (models/rl/reward_training.py).
* ``rl_policy``: one GRPO / GSPO / SA-GCPO run (``rl.algorithm``) from the SFT model, SFT and RL scored on every
  validation and test example and gated with the shared paired bootstrap (models/rl/post_training.py). A fault
  fails the asset with the reason and keeps the previous materialization; a KL blow-up stops it early.
* ``serving_candidate``: RL when the gate's every lower bound of (RL - SFT) is >= -``rl.gate_margin``, else the
  SFT model; a warning-level check (``serving_candidate_is_rl``) flags the fallback, the run does not fail.
"""

import dataclasses
import time

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Failure,
    MetadataValue,
    asset,
    asset_check,
)

from models.artifacts import content_key
from models.configs import from_section
from models.rl import RLTrainingError
from models.rl.experiment import RLExperiment, RLRun, numeric_history
from models.rl.generator_policy import mapping_for_scenarios
from models.rl.post_training import RL, GateOptions, post_train, serving_choice
from models.rl.reward_training import fit_reward_from_examples, item_feature_matrix
from models.rl.verifiable import RewardMix
from models.semantic_ids import SemanticIdTable
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS
from orchestration.resources import ArtifactStoreResource
from orchestration.settings import RLSettings, Settings

from ._metadata import code_version, line_panels, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "training"


# ----------------------------------------------------------------------------------------------- helpers
def rl_seed(settings: Settings) -> int:
    return settings.seed if settings.rl.seed is None else settings.rl.seed


def gate_options(settings: Settings) -> GateOptions:
    g = settings.gate
    return GateOptions(metrics=tuple(g.metrics), margin=settings.rl.gate_margin, resamples=g.resamples,
                       confidence=g.confidence, seed=rl_seed(settings))


def rl_run(rl: RLSettings, seed: int) -> RLRun:
    """The RLRun of the rl section (models/rl/experiment.py; same field names)."""
    return from_section(RLRun, rl.model_dump(), seed=seed, mix=from_section(RewardMix, rl.reward.model_dump()))


def rl_experiment(sft_model: dict, reward_model: dict, training_examples: pd.DataFrame,
                  item_semantic_ids: pd.DataFrame, settings: Settings) -> RLExperiment:
    """The RLExperiment of the settings: reward weights of the data's scenarios (the others are reported unused)."""
    rl = settings.rl
    scenarios = list(reward_model["scenarios"])
    weights = {k: dict(v) for k, v in rl.reward.scenarios.items() if k in scenarios}
    mapping = mapping_for_scenarios(scenarios, weights, dict(rl.reward.default), rl.reward.invalid_penalty,
                                    rl.reward.diversity_bonus)
    experiment = RLExperiment(sft_model["checkpoint"], sft_model["encoder"], reward_model, mapping, training_examples,
                              item_semantic_ids, max_examples=rl.max_examples, seed=rl_seed(settings),
                              beam_width=settings.sft.beam_width, eval_group_size=rl.group_size)
    experiment.unused_weights = sorted(set(rl.reward.scenarios) - set(scenarios))
    return experiment


def step_logger(log, label: str):
    """on_step callback: one log line every 10 steps."""
    def on_step(rec: dict) -> None:
        if log is not None and rec["step"] % 10 == 0:
            log(f"{label} step {rec['step']}: reward {rec['reward_mean']:.4f} kl {rec['kl_after']:.4g} "
                f"entropy {rec['entropy']:.3f} group hit {rec.get('group_hit_share', float('nan')):.3f}")
    return on_step


def reward_curves(history: list[dict]) -> MetadataValue:
    return line_panels(history, {"reward": ("reward_mean",), "KL": ("kl_after",), "entropy": ("entropy",)}, x="step")


# ----------------------------------------------------------------------------------------------- assets
@asset(group_name=GROUP, kinds={"pytorch"}, code_version=CODE_VERSION)
def reward_model(
    context: AssetExecutionContext,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    catalog_embeddings: dict,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """Unified ranking reward model P(click/cart/order | user context, scenario, item) (models/rl/reward_training.py):
    fitted and calibrated on train-split rows only, scored on validation."""
    settings = params.settings
    rl, seed = settings.rl, rl_seed(settings)
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    item_x = item_feature_matrix(catalog_embeddings["item_ids"], catalog_embeddings["fused"], sid_table)
    s = rl.reward_model
    fit = fit_reward_from_examples(training_examples, sid_table, item_x, SCENARIOS, max_examples=rl.max_examples,
                                   num_negatives=s.num_negatives, seed=seed, model_settings=s.model_dump())
    out_dir = artifacts.asset_dir("reward_model") / "runs" / content_key(
        {"rows": min(rl.max_examples, int((training_examples["split"] == "train").sum())),
         "last": int(training_examples["target_timestamp"].max()),
         "codebook": sid_table.codebook_version, "config": dataclasses.asdict(fit.config)})
    context.add_output_metadata({**fit.summary(), "heads": md(fit.heads),
                                 "calibration": MetadataValue.json(fit.calibration)})
    return fit.save(out_dir, item_x, sid_table.codebook_version)


# deps on sft_evaluation: RL starts only from an SFT model its blocking gate (sft_beats_baseline) accepted
@asset(group_name=GROUP, kinds={"pytorch"}, code_version=CODE_VERSION, deps=["sft_evaluation"])
def rl_policy(
    context: AssetExecutionContext,
    sft_model: dict,
    reward_model: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """The generator after RL post-training (``rl.algorithm``, default SA-GCPO) against the unified reward."""
    settings = params.settings
    rl = settings.rl
    start = time.perf_counter()
    experiment = rl_experiment(sft_model, reward_model, training_examples, item_semantic_ids, settings)
    run_dir = artifacts.asset_dir("rl_policy") / "runs" / content_key(
        {"sft": sft_model["checkpoint"], "reward": reward_model["checkpoint"], "rl": rl.model_dump(),
         "seed": experiment.seed})
    try:
        out = post_train(experiment, rl_run(rl, experiment.seed), run_dir, gate_options(settings),
                         step_logger(context.log.info, rl.algorithm))
    except RLTrainingError as error:
        raise Failure(
            description=f"RL training stopped: {error}. The last good policy is saved at {error.last_good}; the "
                        "previous rl_policy materialization is kept.",
            metadata={"last_good_checkpoint": str(error.last_good), "steps_completed": len(error.history),
                      "history": MetadataValue.json(numeric_history(error.history))},
        ) from error
    if out.stopped_reason == "kl_stop":
        context.log.warning(f"KL blow-up: {out.history[-1]['stop_message']}; stopped after {len(out.history)} steps")
    context.add_output_metadata({
        **out.summary(), "per_scenario": md(out.per_scenario()), "rl_vs_sft_valid": md(out.intervals()),
        "curves": reward_curves(out.history), "unused_reward_weights": MetadataValue.json(experiment.unused_weights),
        "seconds": round(time.perf_counter() - start, 1)})
    return out.record(sft_model)


@asset(group_name=GROUP, kinds={"pytorch"}, code_version=CODE_VERSION)
def serving_candidate(context: AssetExecutionContext, sft_model: dict, rl_policy: dict, params: ParamsResource) -> dict:
    """The model to serve: the RL policy when the paired bootstrap of (RL - SFT) on every validation example
    clears the gate (``gate`` section, ``rl.gate_margin``), otherwise the SFT model it started from."""
    record, overall = serving_choice(sft_model, rl_policy, gate_options(params.settings))
    context.add_output_metadata({"served": record["served"], "reason": MetadataValue.md(record["reason"]),
                                 "comparison": md(overall)})
    return record


@asset_check(asset=serving_candidate, blocking=False,
             description="RL post-training helped: the RL policy (not the SFT fallback) is the serving candidate")
def serving_candidate_is_rl(serving_candidate: dict) -> AssetCheckResult:
    return AssetCheckResult(
        passed=serving_candidate["served"] == RL,
        severity=AssetCheckSeverity.WARN,
        description=serving_candidate["reason"],
        metadata={"served": serving_candidate["served"],
                  **{f"{c['metric']}_low": c["low"] for c in serving_candidate["valid_intervals"]},
                  **{f"{c['metric']}_difference": c["difference"] for c in serving_candidate["valid_intervals"]}},
    )
