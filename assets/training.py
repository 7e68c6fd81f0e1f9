"""Supervised fine-tuning of the generator, the SASRec baseline, their evaluation on one split, the blocking
no-worse-than-baseline gate, and the paper's ablations (``sft_ablations``, group analysis, on demand)."""

import dataclasses

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    asset,
    asset_check,
)

from models.artifacts import content_key
from models.configs import from_section
from models.eval.cases import BEST_SASREC, compare_all
from models.eval.cases import summary_table as case_table
from models.eval.cases import gate as paired_gate_on_cases
from models.eval.generative import evaluate_splits
from models.eval.split import leave_last_out
from models.features.example_encoder import ExampleEncoder
from models.lightning.progress import EpochProgress
from models.lightning.sasrec_module import load_sasrec, train_variants
from models.lightning.train import SFTConfig, load_generator, train_generator
from models.nn.config import GeneratorConfig
from models.nn.sasrec import SASRecConfig
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS
from orchestration.resources import ArtifactStoreResource

from ._metadata import bar_chart, code_version, line_panels, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "training"
CANDIDATE = "oxygenrec_sft"  # the generator's name in sft_evaluation


def configs(params: ParamsResource) -> tuple[GeneratorConfig, SFTConfig]:
    """GeneratorConfig and SFTConfig of the sft section (same field names); the history lengths are capped by what the
    features store (features.n_short / n_long)."""
    settings = params.settings
    section = settings.sft.model_dump()
    generator = from_section(GeneratorConfig, section, max_short=settings.features.n_short,
                             max_long=min(settings.sft.max_long or settings.features.n_long, settings.features.n_long),
                             seed=settings.seed)
    return generator, from_section(SFTConfig, section, seed=settings.seed)


def sasrec_configs(params: ParamsResource, n_scenarios: int) -> dict[str, SASRecConfig]:
    """{name in sft_evaluation: config} of the SASRec variants to train (the scenario-aware one only when the
    data has more than one scenario)."""
    section = params.settings.sft.sasrec
    base = from_section(SASRecConfig, section.model_dump(), seed=params.settings.seed)
    out = {}
    if "plain" in section.variants:
        out["sasrec"] = base
    if "scenario" in section.variants and n_scenarios > 1:
        out["sasrec_scenario"] = dataclasses.replace(base, scenario_aware=True)
    return out or {"sasrec": base}


def run_key(training_examples: pd.DataFrame, sid_table: SemanticIdTable, generator, sft) -> str:
    """Same data + same config -> same directory, so an interrupted run resumes from its last checkpoint."""
    payload = {
        "rows": len(training_examples),
        "last_target": int(training_examples["target_timestamp"].max()),
        "codebook": sid_table.codebook_version,
        "generator": generator.to_dict(),
        "sft": dataclasses.asdict(sft),
    }
    return content_key(payload)


def curves(history: list[dict], losses=("train_loss_epoch", "train_loss", "val_loss"),
           metrics=("val_hr10", "val_ndcg10")) -> MetadataValue:
    return line_panels(history, {"loss": tuple(losses), "validation": tuple(metrics)})


@asset(group_name=GROUP, kinds={"pytorch", "lightning"}, code_version=CODE_VERSION)
def sft_model(
    context: AssetExecutionContext,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """The unified multi-scenario generator after SFT (best checkpoint on validation HR@10)."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    generator, sft = configs(params)
    out_dir = artifacts.asset_dir("sft_model") / "runs" / run_key(training_examples, sid_table, generator, sft)
    result = train_generator(training_examples, sid_table, SCENARIOS, generator, sft, out_dir,
                             callbacks=[EpochProgress(context.log.info, "sft")])
    last = result.history[-1] if result.history else {}
    context.add_output_metadata(
        {
            "run_dir": str(out_dir),
            "resumed_from": str(result.resumed_from or ""),
            "epochs": len(result.history),
            "best_val_hr10": float(result.best_score or 0.0),
            "train_seconds": round(result.train_seconds, 1),
            "curves": curves(result.history) if result.history else "",
            "last_epoch": MetadataValue.json({k: v for k, v in last.items() if isinstance(v, (int, float))}),
        }
    )
    return {
        "checkpoint": str(result.best_checkpoint or result.last_checkpoint),
        "encoder": str(out_dir / "encoder.json"),
        "generator_config": result.generator_config.to_dict(),
        "best_val_hr10": float(result.best_score or 0.0),
        "history": [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in result.history],
    }


@asset(group_name=GROUP, kinds={"pytorch", "lightning"}, code_version=CODE_VERSION)
def sasrec_baseline(
    context: AssetExecutionContext,
    interaction_log: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """The SASRec baselines (plain, and scenario-aware with > 1 scenario) trained on the same leave-last-out split
    as the generator until early stopping on validation NDCG@10 ends them."""
    split = leave_last_out(interaction_log)
    configs_ = sasrec_configs(params, interaction_log["scenario"].nunique())
    sft = params.settings.sft
    variants, rows, learning = train_variants(split, configs_, artifacts.asset_dir("sasrec_baseline"),
                                              accelerator=sft.accelerator, devices=sft.devices, log=context.log.info)
    context.add_output_metadata({
        "config": MetadataValue.json({k: dataclasses.asdict(v) for k, v in configs_.items()}),
        "variants": md(rows), "epochs": int(rows["epochs"].iloc[0]), "best_epoch": int(rows["best_epoch"].iloc[0]),
        "valid_hr10": float(rows["valid/hr@10"].iloc[0]),
        **{f"curves_{name}": curves(c, ("train/loss", "val/loss"), ("val/hr@10", "val/ndcg@10"))
           for name, c in learning.items()}})
    return {"variants": variants}


@asset(group_name=GROUP, kinds={"pytorch"}, code_version=CODE_VERSION)
def sft_evaluation(
    context: AssetExecutionContext,
    sft_model: dict,
    sasrec_baseline: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    interaction_log: pd.DataFrame,
    params: ParamsResource,
) -> pd.DataFrame:
    """Every model on the same validation and test examples, one row per (split, model, example) with the
    target's rank: the generator next to popularity, per-scenario popularity and SASRec (baselines fitted
    before the targets). Metadata: HR@k / NDCG@k per scenario, a bar chart, and paired-bootstrap intervals of
    the generator against each baseline on the test split."""
    settings = params.settings
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    encoder = ExampleEncoder.load(sft_model["encoder"], sid_table)
    model = load_generator(sft_model["checkpoint"])
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    sasrec_models = {name: load_sasrec(path) for name, path in sasrec_weights(sasrec_baseline).items()}
    cases = evaluate_splits({CANDIDATE: (model, encoder)}, training_examples, interaction_log, trie, sid_table,
                            sasrec_models=sasrec_models, beam_width=settings.sft.beam_width)
    table = case_table(cases)
    overall = table[table["group"] == "overall"]
    mine = overall[(overall["split"] == "test") & (overall["model"] == CANDIDATE)].iloc[0]
    gate = settings.gate
    intervals = compare_all(cases, CANDIDATE, "test", gate.metrics, resamples=gate.resamples,
                            confidence=gate.confidence, seed=settings.seed)
    test = table[table["split"] == "test"]
    context.add_output_metadata(
        {
            "test_examples": int(mine["n"]),
            "hr10": float(mine["hr@10"]),
            "ndcg10": float(mine["ndcg@10"]),
            "comparison": md(overall[["split", "model", "n", "hr@10", "ndcg@10", "hr@1", "ndcg@5"]]),
            "paired_test": md(intervals[["model", "metric", "candidate", "reference", "difference", "low", "high",
                                         "ratio"]]),
            "per_scenario_test": md(test[test["group"] != "overall"]),
            "test_by_scenario": bar_chart(test, title="test"),
        }
    )
    return cases


def sasrec_weights(sasrec_baseline: dict) -> dict[str, str]:
    """{variant name: weights path} of the sasrec_baseline manifest."""
    return {name: v["weights"] for name, v in sasrec_baseline["variants"].items()}


@asset_check(asset=sft_evaluation, blocking=True,
             description="paired bootstrap on the validation examples: the generator is not worse than the baseline")
def sft_beats_baseline(sft_evaluation: pd.DataFrame, params: ParamsResource) -> AssetCheckResult:
    settings = params.settings
    gate = settings.gate
    options = dict(resamples=gate.resamples, confidence=gate.confidence, seed=settings.seed)
    baseline, decision = paired_gate_on_cases(sft_evaluation, CANDIDATE, settings.sft.gate_baseline, "valid",
                                              gate.metrics, margin=settings.sft.gate_margin, **options)
    versus_sasrec = {}
    if any(m.startswith("sasrec") for m in sft_evaluation["model"].unique()):
        best, vs = paired_gate_on_cases(sft_evaluation, CANDIDATE, BEST_SASREC, "valid", gate.metrics, **options)
        versus_sasrec = {"best_sasrec": best,
                         **{f"ratio_to_best_sasrec_{c.metric}": round(c.ratio, 4) for c in vs.comparisons}}
    intervals = pd.DataFrame(decision.table())
    return AssetCheckResult(
        passed=decision.passed,
        severity=AssetCheckSeverity.ERROR,
        description=decision.describe(CANDIDATE, baseline)
        + ("" if decision.passed else ": the model is refused (nothing downstream is built from it)"),
        metadata={"baseline": baseline, "margin": settings.sft.gate_margin,
                  "intervals": md(intervals[["metric", "n", "candidate", "reference", "difference", "low", "high",
                                             "ratio"]]),
                  **{f"model_valid_{c.metric}": c.candidate for c in decision.comparisons},
                  **{f"baseline_valid_{c.metric}": c.reference for c in decision.comparisons},
                  **versus_sasrec},
    )
