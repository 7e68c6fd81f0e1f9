"""RL post-training of the SFT generator (OxygenREC's SA-GCPO stage): reward model, policy, gate, comparison.

* ``reward_model``: the unified ranking model P(click / cart / order | user context, scenario, item), trained on
  90% of the train split's logged actions (+ sampled negatives), calibrated on the other 10% (nothing is fitted
  on validation or test events) and scored on the validation rows (AUC and log-loss next to a constant
  predictor).
* ``rl_policy``: GRPO / GSPO / SA-GCPO (``rl.algorithm``) over the SFT generator with trie-constrained group
  sampling, a KL penalty to the frozen SFT model and ``rl.synthetic_share`` counterfactual prompts
  (models/rl/generator_policy.py). Metadata: reward / KL / entropy curves, validation HR@10 / NDCG@10 and mean
  reward per scenario, SFT vs RL. A fault (non-finite reward, loss or gradient) fails the asset with the reason;
  the restored last good policy is written next to the run and the previous materialization stays in place.
  A KL blow-up (post-update KL > ``rl.kl_stop``) stops training early and is reported.
* ``serving_candidate``: RL or SFT. The shared paired-bootstrap gate (models/eval/significance.py) compares the
  RL policy with its SFT model on every validation example; RL is served only when every lower bound of
  (RL - SFT) is >= -``rl.gate_margin``, otherwise the SFT model is. The choice and the reason are recorded, a
  warning-level check (``serving_candidate_is_rl``) flags an SFT fallback, and the run does not fail.
* ``rl_comparison`` (analysis, on demand): every ``rl.comparison`` algorithm x synthetic share with the same
  seed and budget: one table and one plot.

Group "training" (with sft_model): materialized by the ``train_sft`` job, not by ``daily_retraining``.
"""

import dataclasses
import time

import numpy as np
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
from models.eval.cases import gate as paired_gate_on_cases
from models.eval.cases import summary_table as case_table
from models.lightning.train import save_generator
from models.rl import RLTrainingError, save_reward_model
from models.rl.experiment import (
    RLExperiment,
    RLRun,
    compare_algorithms,
    comparison_summary,
    comparison_table,
    numeric_history,
)
from models.rl.generator_policy import mapping_for_scenarios
from models.rl.reward_training import fit_reward_from_examples, item_feature_matrix
from models.rl.verifiable import RewardMix
from models.semantic_ids import SemanticIdTable
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS
from orchestration.resources import ArtifactStoreResource
from orchestration.settings import RLSettings, Settings

from ._metadata import code_version, errorbar_panels, line_panels, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "training"
SFT, RL = "sft", "rl"  # the two candidates of serving_candidate
REWARD_MODEL_FIELDS = ("hidden_dim", "scenario_dim", "mlp_layers", "lr", "batch_size", "epochs", "calibration")


# ----------------------------------------------------------------------------------------------- helpers
def rl_seed(settings: Settings) -> int:
    return settings.seed if settings.rl.seed is None else settings.rl.seed


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
                                   num_negatives=s.num_negatives, seed=seed,
                                   model_settings={k: getattr(s, k) for k in REWARD_MODEL_FIELDS})
    out_dir = artifacts.asset_dir("reward_model") / "runs" / content_key(
        {"rows": min(rl.max_examples, int((training_examples["split"] == "train").sum())),
         "last": int(training_examples["target_timestamp"].max()),
         "codebook": sid_table.codebook_version, "config": dataclasses.asdict(fit.config)})
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = save_reward_model(fit.model, out_dir / "reward_model.pt")
    features_path = out_dir / "item_features.npy"
    np.save(features_path, item_x.numpy(), allow_pickle=False)
    context.add_output_metadata({
        "train_rows": fit.n_train_rows,
        "held_out_rows": fit.n_held_out_rows,
        "auc_click": fit.metrics["auc_click"],
        "auc_order": fit.metrics["auc_order"],
        "heads": md(fit.heads),
        "calibration": MetadataValue.json(fit.calibration),
        "seconds": round(fit.seconds, 1),
    })
    return {
        "checkpoint": str(checkpoint),
        "item_features": str(features_path),
        "scenarios": list(fit.scenarios),
        "codebook_version": sid_table.codebook_version,
        "config": dataclasses.asdict(fit.config),
        "metrics": fit.metrics,
        "calibration": fit.calibration,
        "history": fit.history,
    }


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
    run = rl_run(rl, experiment.seed)
    run_dir = artifacts.asset_dir("rl_policy") / "runs" / content_key(
        {"sft": sft_model["checkpoint"], "reward": reward_model["checkpoint"], "rl": rl.model_dump(),
         "seed": experiment.seed})
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        policy, history = experiment.train(run, step_logger(context.log.info, rl.algorithm))
    except RLTrainingError as error:
        saved = save_generator(error.policy.model, run_dir / "last_good.pt")
        raise Failure(
            description=f"RL training stopped: {error}. The last good policy is saved at {saved}; the previous "
                        "rl_policy materialization is kept.",
            metadata={"last_good_checkpoint": str(saved), "steps_completed": len(error.history),
                      "history": MetadataValue.json(numeric_history(error.history))},
        ) from error
    train_seconds = time.perf_counter() - start
    after = experiment.evaluate(policy.model, RL, temperature=run.temperature)
    before = experiment.before
    checkpoint = save_generator(policy.model, run_dir / "policy.pt")
    # every validation and test example, SFT and RL side by side: what serving_candidate's gate reads
    cases = pd.concat([before["cases"].assign(model=SFT), after["cases"].assign(model=RL)], ignore_index=True)
    cases_path = run_dir / "cases.parquet"
    cases.to_parquet(cases_path, index=False)
    gate = settings.gate
    _, decision = paired_gate_on_cases(cases, RL, SFT, "valid", gate.metrics, margin=rl.gate_margin,
                                       resamples=gate.resamples, confidence=gate.confidence, seed=experiment.seed)
    last = history[-1]
    stopped = last["stopped_reason"]
    if stopped == "kl_stop":
        context.log.warning(f"KL blow-up: {last['stop_message']}; training stopped after {len(history)} steps")
    table = comparison_table(before, after)
    result = {
        "checkpoint": str(checkpoint),
        "encoder": sft_model["encoder"],
        "generator_config": policy.model.cfg.to_dict(),
        "sft_checkpoint": sft_model["checkpoint"],
        "algorithm": rl.algorithm,
        "synthetic_share": rl.synthetic_share,
        "steps": len(history),
        "stopped_reason": stopped,
        "kl_blowup": stopped == "kl_stop",
        "val_examples": before["n"],
        "val_hr10_sft": before["hr10"],
        "val_hr10_rl": after["hr10"],
        "val_ndcg10_sft": before["ndcg10"],
        "val_ndcg10_rl": after["ndcg10"],
        "reward_sft": before["reward"],
        "reward_rl": after["reward"],
        "per_scenario": table.to_dict(orient="records"),
        "cases": str(cases_path),
        "valid_intervals": decision.table(),
        "history": numeric_history(history),
    }
    context.add_output_metadata({
        "algorithm": rl.algorithm,
        "steps": len(history),
        "stopped_reason": stopped,
        "kl_blowup": stopped == "kl_stop",
        "final_kl": float(last["kl_after"]),
        "reward_sft": before["reward"],
        "reward_rl": after["reward"],
        "val_hr10_sft": before["hr10"],
        "val_hr10_rl": after["hr10"],
        "val_ndcg10_sft": before["ndcg10"],
        "val_ndcg10_rl": after["ndcg10"],
        "per_scenario": md(table),
        "rl_vs_sft_valid": md(pd.DataFrame(decision.table())[["metric", "n", "candidate", "reference", "difference",
                                                               "low", "high"]]),
        "curves": reward_curves(history),
        "unused_reward_weights": MetadataValue.json(experiment.unused_weights),
        "seconds": round(time.perf_counter() - start, 1),
        "train_seconds": round(train_seconds, 1),
    })
    return result


@asset(group_name=GROUP, kinds={"pytorch"}, code_version=CODE_VERSION)
def serving_candidate(context: AssetExecutionContext, sft_model: dict, rl_policy: dict, params: ParamsResource) -> dict:
    """The model to serve: the RL policy when the paired bootstrap of (RL - SFT) on every validation example
    clears the gate (``gate`` section, ``rl.gate_margin``), otherwise the SFT model it started from."""
    settings = params.settings
    gate = settings.gate
    cases = pd.read_parquet(rl_policy["cases"])
    _, decision = paired_gate_on_cases(cases, RL, SFT, "valid", gate.metrics, margin=settings.rl.gate_margin,
                                       resamples=gate.resamples, confidence=gate.confidence,
                                       seed=rl_seed(settings))
    chosen = RL if decision.passed else SFT
    source = rl_policy if decision.passed else sft_model
    reason = decision.describe(RL, SFT) + (": serving the RL policy" if decision.passed else
                                           ": RL did not clear the gate, serving the SFT model")
    table = case_table(cases)
    overall = table[table["group"] == "overall"][["split", "model", "n", "hr@10", "ndcg@10"]]
    context.add_output_metadata({"served": chosen, "reason": MetadataValue.md(reason), "comparison": md(overall)})
    return {"served": chosen, "reason": reason, "checkpoint": source["checkpoint"], "encoder": source["encoder"],
            "generator_config": source["generator_config"], "algorithm": rl_policy["algorithm"] if decision.passed
            else "sft", "valid_intervals": decision.table()}


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


@asset(group_name="analysis", kinds={"pytorch"}, code_version=CODE_VERSION)
def rl_comparison(
    context: AssetExecutionContext,
    sft_model: dict,
    reward_model: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> pd.DataFrame:
    """GRPO vs GSPO vs SA-GCPO (without and with the group clip) at each synthetic share, the same seeds and
    budget for every cell: one row per run, plus the SFT reference row; metadata has the mean ± std over seeds."""
    settings = params.settings
    rl, cmp = settings.rl, settings.rl.comparison
    experiment = rl_experiment(sft_model, reward_model, training_examples, item_semantic_ids, settings)
    before = experiment.before
    seeds = cmp.seeds or [experiment.seed]
    base = rl_run(rl, experiment.seed).replace(
        steps=cmp.steps or rl.steps, ppo_epochs=cmp.ppo_epochs or rl.ppo_epochs, **({} if cmp.lr is None else {"lr": cmp.lr}))
    # sagcpo_gc's target on the scale of the reward it clips (learned + verifiable): the SFT policy's mean
    group_clip = experiment.sft_reward(base) if cmp.group_clip is None else cmp.group_clip
    table = compare_algorithms(experiment, base, cmp.algorithms, cmp.synthetic_shares, seeds, group_clip=group_clip,
                               resamples=settings.gate.resamples,
                               log=lambda label: step_logger(context.log.info, label))
    summary = comparison_summary(table)
    plot_path = artifacts.asset_dir("rl_comparison") / "comparison.png"
    plot = errorbar_panels(summary[summary["algorithm"] != "sft"], "synthetic_share", "algorithm",
                           {"mean reward (validation prompts)": ("reward", before["reward"]),
                            "validation HR@10": ("hr@10", before["hr10"])}, path=plot_path)
    context.add_output_metadata({
        "summary": md(summary),
        "table": md(table.drop(columns=["status"]).assign(status=table["status"].str[:40])),
        "plot": plot,
        "plot_path": str(plot_path),
        "budget": MetadataValue.json({"steps": cmp.steps or rl.steps, "group_size": rl.group_size,
                                      "prompts_per_step": rl.prompts_per_step, "seeds": seeds,
                                      "lr": base.lr, "ppo_epochs": base.ppo_epochs,
                                      "group_clip": group_clip, "reward_mix": dataclasses.asdict(base.mix),
                                      "group_sampling": base.group_sampling}),
    })
    return table
