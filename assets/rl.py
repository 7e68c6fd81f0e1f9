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
import hashlib
import json
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from dagster import (  # noqa: E402
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Failure,
    MetadataValue,
    asset,
    asset_check,
)

from models.eval.cases import gate as paired_gate_on_cases  # noqa: E402
from models.eval.cases import summary_table as case_table  # noqa: E402
from models.lightning.generator_data import ExampleEncoder  # noqa: E402
from models.lightning.train import save_generator  # noqa: E402
from models.rl import (  # noqa: E402
    ACTIONS,
    RewardModelConfig,
    RLTrainingError,
    calibrate,
    evaluate,
    log_loss,
    save_reward_model,
    train_reward_model,
)
from models.rl.experiment import RLExperiment, RLRun, measure, split_rows  # noqa: E402
from models.rl.generator_policy import mapping_for_scenarios, reward_data_from_examples  # noqa: E402
from models.rl.verifiable import RewardMix  # noqa: E402
from models.semantic_ids import SemanticIdTable  # noqa: E402
from models.semantic_ids.trie import SIDTrie  # noqa: E402
from orchestration.params import ParamsResource  # noqa: E402
from orchestration.partitions import SCENARIOS  # noqa: E402
from orchestration.resources import ArtifactStoreResource  # noqa: E402
from orchestration.settings import RLSettings, Settings  # noqa: E402

from ._metadata import md, png_markdown  # noqa: E402

GROUP = "training"
SFT, RL = "sft", "rl"  # the two candidates of serving_candidate


# ----------------------------------------------------------------------------------------------- helpers
def rl_seed(settings: Settings) -> int:
    return settings.seed if settings.rl.seed is None else settings.rl.seed


def item_features(catalog_embeddings: dict, sid_table: SemanticIdTable) -> torch.Tensor:
    """Fused catalog embeddings in SID-table row order (= trie leaf order)."""
    index = pd.Index(np.asarray(catalog_embeddings["item_ids"]).astype(str))
    pos = index.get_indexer(sid_table.item_ids.astype(str))
    if (pos < 0).any():
        missing = sid_table.item_ids[pos < 0][:5].tolist()
        raise ValueError(f"{int((pos < 0).sum())} items of the SID table have no catalog embedding, e.g. {missing}")
    return torch.from_numpy(np.ascontiguousarray(catalog_embeddings["fused"][pos], dtype=np.float32))


def rl_run(rl: RLSettings, seed: int) -> RLRun:
    """The RLRun of the rl section (models/rl/experiment.py)."""
    r = rl.reward
    return RLRun(algorithm=rl.algorithm, steps=rl.steps, lr=rl.lr, beta=rl.kl_coef, tau_pos=rl.tau_pos,
                 tau_neg=rl.tau_neg, group_clip=rl.group_clip, ppo_epochs=rl.ppo_epochs,
                 max_grad_norm=rl.max_grad_norm, kl_stop=rl.kl_stop, group_size=rl.group_size,
                 prompts_per_step=rl.prompts_per_step, synthetic_share=rl.synthetic_share,
                 group_sampling=rl.group_sampling, temperature=rl.temperature,
                 mix=RewardMix(learned_weight=r.learned_weight, verifiable_weight=r.verifiable_weight,
                               prefix_credit=r.prefix_credit, rank_penalty=r.rank_penalty), seed=seed)


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


def digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def reward_curves(history: list[dict], title: str = ""):
    figure, axes = plt.subplots(1, 3, figsize=(11, 2.6))
    steps = [h["step"] for h in history]
    for axis, key in zip(axes, ("reward_mean", "kl_after", "entropy")):
        axis.plot(steps, [h[key] for h in history], marker=".")
        axis.set_title(f"{title} {key}".strip()), axis.set_xlabel("step")
    figure.tight_layout()
    return png_markdown(figure)


def step_logger(log, label: str):
    """on_step callback: one log line every 10 steps."""
    def on_step(rec: dict) -> None:
        if log is not None and rec["step"] % 10 == 0:
            log(f"{label} step {rec['step']}: reward {rec['reward_mean']:.4f} kl {rec['kl_after']:.4g} "
                f"entropy {rec['entropy']:.3f} group hit {rec.get('group_hit_share', float('nan')):.3f}")
    return on_step


def comparison_table(before: dict, after: dict) -> pd.DataFrame:
    """Per-scenario HR@10 / NDCG@10 / reward, SFT next to RL."""
    left = before["table"][["group", "n", "hr@10", "ndcg@10", "reward"]]
    right = after["table"][["group", "hr@10", "ndcg@10", "reward"]]
    table = left.merge(right, on="group", suffixes=("_sft", "_rl"))
    return table[["group", "n", "hr@10_sft", "hr@10_rl", "ndcg@10_sft", "ndcg@10_rl", "reward_sft", "reward_rl"]]


def comparison_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (algorithm, synthetic share) of the rl_comparison table (SFT row first)."""
    metrics = ["reward", "hr@10", "ndcg@10", "test_hr@10", "test_ndcg@10", "final_kl", "kl_valid", "clip_frac"]
    grouped = table.groupby(["algorithm", "synthetic_share"], dropna=False, sort=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out.insert(0, "runs", grouped.size())
    out.insert(1, "failed", grouped["status"].agg(lambda s: int(s.str.startswith("failed").sum())))
    return out.reset_index()


def numeric_history(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if isinstance(v, (int, float, str)) or v is None} for h in history]


# ----------------------------------------------------------------------------------------------- assets
@asset(group_name=GROUP, kinds={"pytorch"}, code_version="1")
def reward_model(
    context: AssetExecutionContext,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    catalog_embeddings: dict,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """Unified ranking reward model P(click/cart/order | user context, scenario, item), calibrated on validation."""
    settings = params.settings
    rl, seed = settings.rl, rl_seed(settings)
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    item_x = item_features(catalog_embeddings, sid_table)
    train = split_rows(training_examples, "train", rl.max_examples, seed)
    valid = split_rows(training_examples, "valid", len(training_examples), seed)
    encoder = ExampleEncoder.fit(train, sid_table, SCENARIOS)  # reads scenario, instruction and short history
    n_scen = len(encoder.scenarios)
    s = rl.reward_model
    train_rows = reward_data_from_examples(encoder.encode(train), train["action"], item_x, trie, n_scen,
                                           s.num_negatives, seed)
    # fitted and calibrated on train-split rows only (nothing fitted on held-out events); scored on validation
    train_data, calibration_rows = train_rows.split((0.9, 0.1), seed=seed)
    eval_rows = reward_data_from_examples(encoder.encode(valid), valid["action"], item_x, trie, n_scen,
                                          s.num_negatives, seed + 1)
    config = RewardModelConfig(
        user_dim=train_data.user_x.shape[1], item_dim=item_x.shape[1], num_scenarios=n_scen, hidden_dim=s.hidden_dim,
        scenario_dim=s.scenario_dim, mlp_layers=s.mlp_layers, lr=s.lr, batch_size=s.batch_size, epochs=s.epochs,
        seed=seed, calibration=s.calibration,
    )
    start = time.perf_counter()
    model, history = train_reward_model(train_data, config)
    uncalibrated = evaluate(model, eval_rows)
    fitted = calibrate(model, calibration_rows)
    metrics = evaluate(model, eval_rows)
    seconds = time.perf_counter() - start

    base_rate = train_data.labels.mean(0)  # the constant predictor
    with torch.no_grad():
        probs = model.predict_proba(eval_rows.user_x, eval_rows.scenario, eval_rows.item_x)
    rows = []
    for k, action in enumerate(ACTIONS):
        y = eval_rows.labels[:, k]
        rows.append({
            "head": action, "auc": metrics[f"auc_{action}"], "auc_constant": 0.5,
            "logloss": metrics[f"logloss_{action}"], "logloss_uncalibrated": uncalibrated[f"logloss_{action}"],
            "logloss_constant": log_loss(torch.full_like(y, float(base_rate[k])), y),
            "mean_predicted": float(probs[:, k].mean()), "observed_rate": float(y.mean()),
        })
    table = pd.DataFrame(rows)

    out_dir = artifacts.asset_dir("reward_model") / "runs" / digest(
        {"rows": len(train), "last": int(training_examples["target_timestamp"].max()),
         "codebook": sid_table.codebook_version, "config": dataclasses.asdict(config)})
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "reward_model.pt"
    save_reward_model(model, checkpoint)
    features_path = out_dir / "item_features.npy"
    np.save(features_path, item_x.numpy(), allow_pickle=False)
    context.add_output_metadata({
        "train_rows": len(train_data),
        "held_out_rows": len(eval_rows),
        "auc_click": float(metrics["auc_click"]),
        "auc_order": float(metrics["auc_order"]),
        "heads": md(table),
        "calibration": MetadataValue.json(fitted),
        "seconds": round(seconds, 1),
    })
    return {
        "checkpoint": str(checkpoint),
        "item_features": str(features_path),
        "scenarios": list(encoder.scenarios),
        "codebook_version": sid_table.codebook_version,
        "config": dataclasses.asdict(config),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "calibration": fitted,
        "history": history,
    }


# deps on sft_evaluation: RL starts only from an SFT model its blocking gate (sft_beats_baseline) accepted
@asset(group_name=GROUP, kinds={"pytorch"}, code_version="1", deps=["sft_evaluation"])
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
    run_dir = artifacts.asset_dir("rl_policy") / "runs" / digest(
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


@asset(group_name=GROUP, kinds={"pytorch"}, code_version="1")
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


@asset(group_name="analysis", kinds={"pytorch"}, code_version="1")
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
    rows = []
    for algorithm in cmp.algorithms:
        for share in cmp.synthetic_shares:
            for seed in seeds:
                run = base.replace(algorithm=algorithm.removesuffix("_gc"), synthetic_share=share, seed=seed,
                                   **({"group_clip": group_clip} if algorithm == "sagcpo_gc" else {}))
                start = time.perf_counter()
                # a diverging configuration is a result (status "failed: ..."), not a crash
                m = measure(experiment, run, resamples=settings.gate.resamples,
                            log=step_logger(context.log.info, f"{algorithm} share={share} seed={seed}"))
                rows.append({"algorithm": algorithm, "synthetic_share": share, "seed": seed, "status": m["status"],
                             "steps": m["steps"], "final_kl": m.get("kl_train_last", np.nan),
                             "kl_valid": m.get("kl_valid", np.nan), "reward": m.get("reward_rl", np.nan),
                             "hr@10": m.get("valid_hr@10_rl", np.nan), "ndcg@10": m.get("valid_ndcg@10_rl", np.nan),
                             "test_hr@10": m.get("test_hr@10_rl", np.nan),
                             "test_ndcg@10": m.get("test_ndcg@10_rl", np.nan),
                             # how far the ratios left 1: the share of tokens the clip (GRPO, GSPO) or the soft gate
                             # (SA-GCPO: gradient weight < 0.5) held back, mean over steps (last update of each step)
                             "clip_frac": m.get("clip_frac", np.nan), "seconds": time.perf_counter() - start})
    table = pd.DataFrame(rows)
    table["reward_gain"] = table["reward"] - before["reward"]
    table["hr@10_delta"] = table["hr@10"] - before["hr10"]
    sft_test = case_table(before["cases"][before["cases"]["split"] == "test"].drop(columns="split"))
    sft_test = sft_test[sft_test["group"] == "overall"].iloc[0]
    sft_row = {"algorithm": "sft", "synthetic_share": float("nan"), "seed": experiment.seed, "status": "reference",
               "steps": 0, "final_kl": 0.0, "kl_valid": 0.0, "reward": before["reward"], "hr@10": before["hr10"],
               "ndcg@10": before["ndcg10"], "test_hr@10": float(sft_test["hr@10"]),
               "test_ndcg@10": float(sft_test["ndcg@10"]), "clip_frac": 0.0, "seconds": 0.0, "reward_gain": 0.0,
               "hr@10_delta": 0.0}
    table = pd.concat([pd.DataFrame([sft_row]), table], ignore_index=True)
    summary = comparison_summary(table)

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    for algorithm in cmp.algorithms:
        part = summary[summary["algorithm"] == algorithm]
        left.errorbar(part["synthetic_share"], part["reward_mean"], part["reward_std"], marker="o", capsize=3,
                      label=algorithm)
        right.errorbar(part["synthetic_share"], part["hr@10_mean"], part["hr@10_std"], marker="o", capsize=3,
                       label=algorithm)
    left.axhline(before["reward"], color="grey", ls="--", label="sft")
    right.axhline(before["hr10"], color="grey", ls="--", label="sft")
    left.set_title("mean reward (validation prompts)"), right.set_title("validation HR@10")
    for axis in (left, right):
        axis.set_xlabel("synthetic share"), axis.legend(fontsize=7)
    figure.tight_layout()
    plot_path = artifacts.asset_dir("rl_comparison") / "comparison.png"
    figure.savefig(plot_path, dpi=90, bbox_inches="tight")
    context.add_output_metadata({
        "summary": md(summary),
        "table": md(table.drop(columns=["status"]).assign(status=table["status"].str[:40])),
        "plot": png_markdown(figure),
        "plot_path": str(plot_path),
        "budget": MetadataValue.json({"steps": cmp.steps or rl.steps, "group_size": rl.group_size,
                                      "prompts_per_step": rl.prompts_per_step, "seeds": seeds,
                                      "lr": base.lr, "ppo_epochs": base.ppo_epochs,
                                      "group_clip_target": group_clip, "reward_mix": dataclasses.asdict(base.mix),
                                      "group_sampling": base.group_sampling}),
    })
    return table
