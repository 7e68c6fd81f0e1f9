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

import copy
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
from models.eval.generative import generator_ranked  # noqa: E402
from models.eval.metrics import target_ranks  # noqa: E402
from models.lightning.generator_data import ExampleEncoder  # noqa: E402
from models.lightning.train import load_generator, save_generator  # noqa: E402
from models.rl import (  # noqa: E402
    ACTIONS,
    GroupPolicyTrainer,
    RewardModelConfig,
    RLConfig,
    RLTrainingError,
    calibrate,
    evaluate,
    load_reward_model,
    log_loss,
    save_reward_model,
    train_reward_model,
)
from models.rl.verifiable import MixedReward, RewardMix  # noqa: E402
from models.rl.generator_policy import (  # noqa: E402
    GeneratorPolicy,
    GeneratorPolicyConfig,
    PromptConfig,
    PromptSet,
    expected_reward,
    make_reward_fn,
    mapping_for_scenarios,
    reward_data_from_examples,
)
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


def split_rows(training_examples: pd.DataFrame, split: str, limit: int, seed: int) -> pd.DataFrame:
    """At most ``limit`` rows of a split, a seeded sample in the original order (same rows for every asset)."""
    frame = training_examples[training_examples["split"] == split]
    if frame.empty:
        raise ValueError(f"training_examples has no {split!r} rows: RL needs train and valid examples")
    if len(frame) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))
        frame = frame.iloc[keep]
    return frame.reset_index(drop=True)


def item_features(catalog_embeddings: dict, sid_table: SemanticIdTable) -> torch.Tensor:
    """Fused catalog embeddings in SID-table row order (= trie leaf order)."""
    index = pd.Index(np.asarray(catalog_embeddings["item_ids"]).astype(str))
    pos = index.get_indexer(sid_table.item_ids.astype(str))
    if (pos < 0).any():
        missing = sid_table.item_ids[pos < 0][:5].tolist()
        raise ValueError(f"{int((pos < 0).sum())} items of the SID table have no catalog embedding, e.g. {missing}")
    return torch.from_numpy(np.ascontiguousarray(catalog_embeddings["fused"][pos], dtype=np.float32))


def rl_config(rl: RLSettings, seed: int, algorithm: str | None = None, steps: int | None = None,
              ppo_epochs: int | None = None, **overrides) -> RLConfig:
    """The RLConfig of the rl section; ``overrides`` (e.g. lr, group_clip_target) replace its fields."""
    config = RLConfig(
        algorithm=algorithm or rl.algorithm, group_size=rl.group_size, lr=rl.lr, beta=rl.kl_coef, tau_pos=rl.tau_pos,
        tau_neg=rl.tau_neg, group_clip_target=rl.group_clip, ppo_epochs=ppo_epochs or rl.ppo_epochs,
        max_grad_norm=rl.max_grad_norm,
        steps=steps or rl.steps, seed=seed, kl_stop=rl.kl_stop,
    )
    return dataclasses.replace(config, **overrides)


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


class RLSetup:
    """What every RL run of one materialization shares: data, SFT model, reward, evaluation examples."""

    def __init__(self, sft_model: dict, reward_model: dict, training_examples: pd.DataFrame,
                 item_semantic_ids: pd.DataFrame, settings: Settings):
        rl, seed = settings.rl, rl_seed(settings)
        self.settings, self.rl, self.seed = settings, rl, seed
        self.sid_table = SemanticIdTable.from_frame(item_semantic_ids)
        self.trie = SIDTrie.from_codes(self.sid_table.codes, self.sid_table.vocab_sizes)
        self.encoder = ExampleEncoder.load(sft_model["encoder"], self.sid_table)
        if list(self.encoder.scenarios) != list(reward_model["scenarios"]):
            raise ValueError(f"sft_model scenarios {list(self.encoder.scenarios)} differ from reward_model's "
                             f"{reward_model['scenarios']}: rematerialize reward_model")
        if reward_model.get("codebook_version") != self.sid_table.codebook_version:
            raise ValueError(f"reward_model was trained with SID codebook {reward_model.get('codebook_version')}, the "
                             f"current one is {self.sid_table.codebook_version}: rematerialize reward_model")
        self.sft = load_generator(sft_model["checkpoint"])
        self.encoder.check_config(self.sft.cfg)
        train = split_rows(training_examples, "train", rl.max_examples, seed)
        # evaluated on every validation (and test) example sft_evaluation scores, in the same order
        self.frames = {split: split_rows(training_examples, split, len(training_examples), seed)
                       for split in ("valid", "test")}
        self.train_prompts = self.encoder.encode(train)  # with targets: the verifiable reward reads them
        self.encoded = {split: self.encoder.encode(frame) for split, frame in self.frames.items()}
        self.valid = self.encoded["valid"]
        self.valid_prompts = {k: v for k, v in self.valid.items() if k not in ("target_sids", "target_item")}
        self.reward_net = load_reward_model(reward_model["checkpoint"])
        self.item_x = torch.from_numpy(np.load(reward_model["item_features"], allow_pickle=False))
        weights = {k: dict(v) for k, v in rl.reward.scenarios.items() if k in self.encoder.scenarios}
        self.unused_weights = sorted(set(rl.reward.scenarios) - set(self.encoder.scenarios))
        self.mapping = mapping_for_scenarios(self.encoder.scenarios, weights, dict(rl.reward.default),
                                             rl.reward.invalid_penalty, rl.reward.diversity_bonus)
        self.learned_reward = make_reward_fn(self.reward_net, self.mapping, self.item_x, self.trie)
        r = rl.reward
        self.mix = RewardMix(learned_weight=r.learned_weight, verifiable_weight=r.verifiable_weight,
                             prefix_credit=r.prefix_credit, rank_penalty=r.rank_penalty)
        self.reward_fn = MixedReward(self.learned_reward, self.mix)
        self.policy_config = GeneratorPolicyConfig(temperature=rl.temperature, group=rl.group_sampling)
        self.item_codes = torch.as_tensor(self.sid_table.codes, dtype=torch.long)
        # frozen copy: the SFT reference of the KL term and of the before numbers (self.sft stays trainable to copy)
        self.reference = self.policy(copy.deepcopy(self.sft))
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.beam_width = settings.sft.beam_width
        self.before = self.evaluate(self.reference)

    def policy(self, model) -> GeneratorPolicy:
        return GeneratorPolicy(model, self.trie, self.policy_config, item_codes=self.item_codes)

    def cases(self, model, name: str) -> pd.DataFrame:
        """Per-example ranks (models.eval.cases) of ``model``'s beam search on every validation and test example."""
        parts = []
        for split, frame in self.frames.items():
            ranked, targets, _, _ = generator_ranked(model, self.encoded[split], self.trie, 10, self.beam_width)
            parts.append(pd.DataFrame({
                "split": split, "model": name, "example": np.arange(len(frame)),
                "user_id": frame["user_id"].astype(str).to_numpy(), "scenario": frame["scenario"].astype(str).to_numpy(),
                "rank": target_ranks(ranked, np.where(targets >= 0, targets, -2))}))
        return pd.concat(parts, ignore_index=True)

    def evaluate(self, policy: GeneratorPolicy) -> dict:
        """Validation HR@10 / NDCG@10 (beam search, every validation example) and mean sampled learned reward,
        overall and per scenario."""
        cases = self.cases(policy.model, "policy")
        table = case_table(cases[cases["split"] == "valid"].drop(columns="split"))
        overall = table[table["group"] == "overall"].iloc[0]
        reward = expected_reward(policy, self.valid_prompts, self.learned_reward, self.rl.group_size, seed=self.seed)
        names = np.asarray(self.encoder.scenarios, dtype=object)
        scen = self.valid_prompts["scenario"].numpy()
        per_reward = {str(names[s]): v for s, v in reward["per_scenario"].items()}
        table = table.assign(reward=[reward["mean"] if g == "overall" else per_reward.get(str(g), float("nan"))
                                     for g in table["group"]])
        return {"hr10": float(overall["hr@10"]), "ndcg10": float(overall["ndcg@10"]), "reward": reward["mean"],
                "valid_share": reward["valid_share"], "table": table.drop(columns="model"), "n": int(len(scen)),
                "cases": cases}

    def train(self, algorithm: str, synthetic_share: float, steps: int | None = None, log=None,
              ppo_epochs: int | None = None, seed: int | None = None, **overrides):
        """(policy, history) of one RL run; RLTrainingError propagates with the policy restored.
        ``seed`` (default: the setup's) seeds prompt and item sampling; ``overrides`` replace RLConfig fields."""
        seed = self.seed if seed is None else seed
        policy = self.policy(copy.deepcopy(self.sft))
        prompts = PromptSet(self.train_prompts, len(self.encoder.scenarios),
                            PromptConfig(batch_size=self.rl.prompts_per_step, synthetic_share=synthetic_share))
        config = rl_config(self.rl, seed, algorithm, steps, ppo_epochs, **overrides)
        trainer = GroupPolicyTrainer(policy, self.reward_fn, config, self.reference)

        def on_step(rec: dict) -> None:
            if log is not None and (rec["step"] % 10 == 0):
                log(f"{algorithm} share={synthetic_share} step {rec['step']}: reward {rec['reward_mean']:.4f} "
                    f"kl {rec['kl_after']:.4g} entropy {rec['entropy']:.3f}")

        try:
            trainer.fit(prompts, on_step)
        except RLTrainingError as error:
            error.policy, error.history = policy, trainer.history  # the restored last good state
            raise
        return policy, trainer.history


def comparison_table(before: dict, after: dict) -> pd.DataFrame:
    """Per-scenario HR@10 / NDCG@10 / reward, SFT next to RL."""
    left = before["table"][["group", "n", "hr@10", "ndcg@10", "reward"]]
    right = after["table"][["group", "hr@10", "ndcg@10", "reward"]]
    table = left.merge(right, on="group", suffixes=("_sft", "_rl"))
    return table[["group", "n", "hr@10_sft", "hr@10_rl", "ndcg@10_sft", "ndcg@10_rl", "reward_sft", "reward_rl"]]


def comparison_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (algorithm, synthetic share) of the rl_comparison table (SFT row first)."""
    metrics = ["reward", "hr@10", "ndcg@10", "final_kl", "clip_frac"]
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
    setup = RLSetup(sft_model, reward_model, training_examples, item_semantic_ids, settings)
    run_dir = artifacts.asset_dir("rl_policy") / "runs" / digest(
        {"sft": sft_model["checkpoint"], "reward": reward_model["checkpoint"], "rl": rl.model_dump(), "seed": setup.seed})
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        policy, history = setup.train(rl.algorithm, rl.synthetic_share, log=context.log.info)
    except RLTrainingError as error:
        saved = save_generator(error.policy.model, run_dir / "last_good.pt")
        raise Failure(
            description=f"RL training stopped: {error}. The last good policy is saved at {saved}; the previous "
                        "rl_policy materialization is kept.",
            metadata={"last_good_checkpoint": str(saved), "steps_completed": len(error.history),
                      "history": MetadataValue.json(numeric_history(error.history))},
        ) from error
    train_seconds = time.perf_counter() - start
    after = setup.evaluate(policy)
    before = setup.before
    checkpoint = save_generator(policy.model, run_dir / "policy.pt")
    # every validation and test example, SFT and RL side by side: what serving_candidate's gate reads
    cases = pd.concat([before["cases"].assign(model=SFT), after["cases"].assign(model=RL)], ignore_index=True)
    cases_path = run_dir / "cases.parquet"
    cases.to_parquet(cases_path, index=False)
    gate = settings.gate
    _, decision = paired_gate_on_cases(cases, RL, SFT, "valid", gate.metrics, margin=rl.gate_margin,
                                       resamples=gate.resamples, confidence=gate.confidence, seed=setup.seed)
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
        "unused_reward_weights": MetadataValue.json(setup.unused_weights),
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
    setup = RLSetup(sft_model, reward_model, training_examples, item_semantic_ids, settings)
    before = setup.before
    seeds = cmp.seeds or [setup.seed]
    group_clip = before["reward"] if cmp.group_clip is None else cmp.group_clip
    rows = []
    for algorithm in cmp.algorithms:
        overrides = {} if cmp.lr is None else {"lr": cmp.lr}
        if algorithm == "sagcpo_gc":
            overrides["group_clip_target"] = group_clip
        for share in cmp.synthetic_shares:
            for seed in seeds:
                start = time.perf_counter()
                row = {"algorithm": algorithm, "synthetic_share": share, "seed": seed}
                try:
                    policy, history = setup.train(algorithm.removesuffix("_gc"), share, cmp.steps, log=context.log.info,
                                                  ppo_epochs=cmp.ppo_epochs, seed=seed, **overrides)
                    after = setup.evaluate(policy)
                    row |= {"status": history[-1]["stopped_reason"], "steps": len(history),
                            "final_kl": history[-1]["kl_after"], "reward": after["reward"], "hr@10": after["hr10"],
                            "ndcg@10": after["ndcg10"],
                            # how far the ratios left 1: the share of tokens the clip (GRPO, GSPO) or the soft gate
                            # (SA-GCPO: gradient weight < 0.5) held back, mean over steps (last update of each step)
                            "clip_frac": float(np.mean([h.get("clip_frac", 0.0) for h in history]))}
                except RLTrainingError as error:  # one diverging configuration is a result, not a crash
                    row |= {"status": f"failed: {error}"[:120], "steps": len(error.history), "final_kl": float("nan"),
                            "reward": float("nan"), "hr@10": float("nan"), "ndcg@10": float("nan"),
                            "clip_frac": float("nan")}
                row["seconds"] = time.perf_counter() - start
                rows.append(row)
    table = pd.DataFrame(rows)
    table["reward_gain"] = table["reward"] - before["reward"]
    table["hr@10_delta"] = table["hr@10"] - before["hr10"]
    sft_row = {"algorithm": "sft", "synthetic_share": float("nan"), "seed": setup.seed, "status": "reference",
               "steps": 0, "final_kl": 0.0, "reward": before["reward"], "hr@10": before["hr10"],
               "ndcg@10": before["ndcg10"], "clip_frac": 0.0, "seconds": 0.0, "reward_gain": 0.0, "hr@10_delta": 0.0}
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
                                      "lr": cmp.lr or rl.lr, "ppo_epochs": cmp.ppo_epochs or rl.ppo_epochs,
                                      "group_clip_target": group_clip}),
    })
    return table
