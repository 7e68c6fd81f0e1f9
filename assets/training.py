"""Supervised fine-tuning of the generator, the SASRec baseline, their evaluation on one split, the blocking
no-worse-than-baseline gate, and the paper's ablations (``sft_ablations``, group analysis, on demand)."""

import dataclasses
import hashlib
import json
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from dagster import (  # noqa: E402
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    asset,
    asset_check,
)

from models.eval.generative import compare_models, log_without  # noqa: E402
from models.eval.split import encode_ids, leave_last_out  # noqa: E402
from models.lightning.ablations import run_ablations, summary_table  # noqa: E402
from models.lightning.generator_data import ExampleEncoder  # noqa: E402
from models.lightning.sasrec_module import load_sasrec, save_sasrec, train_sasrec  # noqa: E402
from models.lightning.train import SFTConfig, load_generator, train_generator  # noqa: E402
from models.nn.config import GeneratorConfig  # noqa: E402
from models.nn.sasrec import SASRecConfig  # noqa: E402
from models.semantic_ids import SemanticIdTable  # noqa: E402
from models.semantic_ids.trie import SIDTrie  # noqa: E402
from orchestration.params import ParamsResource  # noqa: E402
from orchestration.partitions import SCENARIOS  # noqa: E402
from orchestration.resources import ArtifactStoreResource  # noqa: E402

from ._metadata import markdown_table, md, png_markdown  # noqa: E402

GROUP = "training"


def configs(params: ParamsResource) -> tuple[GeneratorConfig, SFTConfig]:
    settings = params.settings
    s = settings.sft
    generator = GeneratorConfig(
        d_model=s.d_model, n_heads=s.n_heads, enc_layers=s.enc_layers, dec_layers=s.dec_layers, ffn=s.ffn,
        n_experts=s.n_experts, instruction_position=s.instruction_position, use_igr=s.use_igr,
        igr_top_k=s.igr_top_k, n_recent=s.n_recent, q2i_weight=s.q2i_weight, max_short=settings.features.n_short,
        max_long=settings.features.n_long, seed=settings.seed,
    )
    sft = SFTConfig(
        max_epochs=s.max_epochs, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps, patience=s.patience,
        beam_width=s.beam_width, limit_train_batches=s.limit_train_batches, limit_val_batches=s.limit_val_batches,
        accelerator=s.accelerator, devices=s.devices, strategy=s.strategy, precision=s.precision, seed=settings.seed,
    )
    return generator, sft


def sasrec_config(params: ParamsResource) -> SASRecConfig:
    section = params.settings.sft.sasrec
    return SASRecConfig(seed=params.settings.seed, **section.model_dump())


def run_key(training_examples: pd.DataFrame, sid_table: SemanticIdTable, generator, sft) -> str:
    """Same data + same config -> same directory, so an interrupted run resumes from its last checkpoint."""
    payload = {
        "rows": len(training_examples),
        "last_target": int(training_examples["target_timestamp"].max()),
        "codebook": sid_table.codebook_version,
        "generator": generator.to_dict(),
        "sft": dataclasses.asdict(sft),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def curves(history: list[dict]):
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8))
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    for key in ("train_loss_epoch", "train_loss", "val_loss"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            left.plot(epochs, values, marker="o", label=key)
    for key in ("val_hr10", "val_ndcg10"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            right.plot(epochs, values, marker="o", label=key)
    left.set_title("loss"), right.set_title("validation")
    for axis in (left, right):
        axis.set_xlabel("epoch"), axis.legend(fontsize=7)
    figure.tight_layout()
    return png_markdown(figure)


@asset(group_name=GROUP, kinds={"pytorch", "lightning"}, code_version="1")
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
    result = train_generator(training_examples, sid_table, SCENARIOS, generator, sft, out_dir)
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


@asset(group_name=GROUP, kinds={"pytorch", "lightning"}, code_version="1")
def sasrec_baseline(
    context: AssetExecutionContext,
    interaction_log: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """SASRec trained on the same leave-last-out split as the generator (early stopping on validation NDCG@10)."""
    config = sasrec_config(params)
    split = leave_last_out(interaction_log)
    encoder = encode_ids(split.items)
    out_dir = artifacts.asset_dir("sasrec_baseline")
    shutil.rmtree(out_dir / "lightning", ignore_errors=True)  # a fresh fit each time: no stale best.ckpt to pick up
    sft = params.settings.sft
    model, metrics = train_sasrec(split, config, encoder=encoder, default_root_dir=out_dir / "lightning",
                                  accelerator=sft.accelerator, devices=sft.devices)
    weights = save_sasrec(model, encoder, out_dir / "sasrec.pt")
    shown = {k: round(float(v), 4) for k, v in metrics.items() if k.startswith(("valid/", "test/"))}
    context.add_output_metadata(
        {
            "config": MetadataValue.json(dataclasses.asdict(config)),
            "epochs": int(metrics["epochs"]),
            "best_epoch": int(metrics["best_epoch"]),
            "train_seconds": round(float(metrics["train_seconds"]), 1),
            "valid_hr10": float(metrics["valid/hr@10"]),
            "test_hr10": float(metrics["test/hr@10"]),
            "metrics": MetadataValue.json(shown),
        }
    )
    return {"weights": str(weights), "metrics": {k: float(v) for k, v in metrics.items()}}


@asset(group_name=GROUP, kinds={"pytorch"}, code_version="2")
def sft_evaluation(
    context: AssetExecutionContext,
    sft_model: dict,
    sasrec_baseline: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    interaction_log: pd.DataFrame,
    params: ParamsResource,
) -> pd.DataFrame:
    """HR@k / NDCG@k per scenario on the validation and test splits: the generator next to popularity,
    per-scenario popularity and SASRec, all on the same examples (baselines fitted before the targets)."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    encoder = ExampleEncoder.load(sft_model["encoder"], sid_table)
    model = load_generator(sft_model["checkpoint"])
    sasrec, sasrec_encoder = load_sasrec(sasrec_baseline["weights"])
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    tables, overall = [], {}
    held_out = training_examples[training_examples["split"].isin(["valid", "test"])]
    for split in ("valid", "test"):
        frame = training_examples[training_examples["split"] == split].reset_index(drop=True)
        # validation baselines see the train events only; test baselines also the validation events
        train_log = log_without(interaction_log, held_out if split == "valid" else frame)
        overall[split], table = compare_models(
            {"oxygenrec_sft": (model, encoder.encode(frame))}, frame, train_log, trie, sid_table,
            beam_width=params.settings.sft.beam_width, scenario_names=encoder.scenarios,
            sasrec=sasrec, sasrec_encoder=sasrec_encoder,
        )
        tables.append(table.assign(split=split))
    table = pd.concat(tables, ignore_index=True)
    table = table[["split", "model"] + [c for c in table.columns if c not in ("split", "model")]]
    at_a_glance = pd.DataFrame(
        [{"split": split, "model": name, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], "n": m["n"]}
         for split, models in overall.items() for name, m in models.items()]
    )
    context.add_output_metadata(
        {
            "test_examples": int(overall["test"]["oxygenrec_sft"]["n"]),
            "hr10": float(overall["test"]["oxygenrec_sft"]["hr@10"]),
            "ndcg10": float(overall["test"]["oxygenrec_sft"]["ndcg@10"]),
            "comparison": md(at_a_glance),
            "per_scenario_test": md(table[(table["split"] == "test") & (table["group"] != "overall")]),
        }
    )
    return table


def _overall(table: pd.DataFrame, split: str, model: str) -> float:
    row = table[(table["split"] == split) & (table["model"] == model) & (table["group"] == "overall")]
    if row.empty:
        raise ValueError(f"sft_evaluation has no overall {split} row for {model!r}")
    return float(row["hr@10"].iloc[0])


@asset_check(asset=sft_evaluation, blocking=True,
             description="the generator's validation HR@10 is not below the configured baseline's")
def sft_beats_baseline(sft_evaluation: pd.DataFrame, params: ParamsResource) -> AssetCheckResult:
    baseline, tolerance = params.settings.sft.gate_baseline, params.settings.sft.gate_tolerance
    model_hr, base_hr = _overall(sft_evaluation, "valid", "oxygenrec_sft"), _overall(sft_evaluation, "valid", baseline)
    passed = model_hr >= base_hr - tolerance
    valid = sft_evaluation[(sft_evaluation["split"] == "valid") & (sft_evaluation["group"] == "overall")]
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=(f"validation HR@10 {model_hr:.4f} {'>=' if passed else '<'} {baseline} {base_hr:.4f}"
                     + (f" - tolerance {tolerance}" if tolerance else "")
                     + ("" if passed else ": the model is refused (nothing downstream is built from it)")),
        metadata={"model_valid_hr10": model_hr, "baseline": baseline, "baseline_valid_hr10": base_hr,
                  "tolerance": tolerance,
                  "validation": md(valid[["model", "n", "hr@10", "ndcg@10"]])},
    )


@asset(group_name="analysis", kinds={"pytorch", "lightning"}, code_version="1")
def sft_ablations(
    context: AssetExecutionContext,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> pd.DataFrame:
    """Paper Tables 5 / 7 / 8 on this data: instruction position, IGR/Q2I on/off, unified vs per-scenario models,
    each trained with the same seed and budget and scored on the same test split."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    generator, sft = configs(params)
    section = params.settings.sft.ablations
    sft = dataclasses.replace(
        sft, enable_progress_bar=False,
        max_epochs=section.max_epochs or sft.max_epochs,
        limit_train_batches=section.limit_train_batches or sft.limit_train_batches,
    )
    out_dir = artifacts.asset_dir("sft_ablations") / run_key(training_examples, sid_table, generator, sft)
    results = run_ablations(training_examples, sid_table, SCENARIOS, generator, sft, section.studies, out_dir,
                            log=context.log.info)
    summary = summary_table(results)
    report = "\n\n".join(f"### {study}\n\n" + markdown_table(summary[summary["study"] == study])
                           for study in summary["study"].unique())
    (out_dir / "ablations.md").write_text(report + "\n")
    (out_dir / "ablations.json").write_text(json.dumps(summary.to_dict(orient="records"), indent=1))
    context.add_output_metadata({"summary": MetadataValue.md(report), "report": str(out_dir / "ablations.md"),
                                 "variants": int(len(summary))})
    return results
