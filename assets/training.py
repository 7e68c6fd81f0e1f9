"""Supervised fine-tuning of the generator and its evaluation against the popularity baselines.

Not yet part of ``daily_retraining`` (job ``train_sft``): the SASRec baseline, the ablations and the
blocking no-worse-than-popularity gate of the SFT issue are still open.
"""

import dataclasses
import hashlib
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from dagster import AssetExecutionContext, MetadataValue, asset  # noqa: E402

from models.eval.generative import evaluate_baselines, evaluate_generator  # noqa: E402
from models.lightning.generator_data import ExampleEncoder  # noqa: E402
from models.lightning.train import SFTConfig, load_generator, train_generator  # noqa: E402
from models.nn.config import GeneratorConfig  # noqa: E402
from models.semantic_ids import SemanticIdTable  # noqa: E402
from models.semantic_ids.trie import SIDTrie  # noqa: E402
from orchestration.params import ParamsResource  # noqa: E402
from orchestration.partitions import SCENARIOS  # noqa: E402
from orchestration.resources import ArtifactStoreResource  # noqa: E402

from ._metadata import md, png_markdown  # noqa: E402

GROUP = "training"


def configs(params: ParamsResource) -> tuple[GeneratorConfig, SFTConfig]:
    settings = params.settings
    s = settings.sft
    generator = GeneratorConfig(
        d_model=s.d_model, n_heads=s.n_heads, enc_layers=s.enc_layers, dec_layers=s.dec_layers, ffn=s.ffn,
        n_experts=s.n_experts, instruction_position=s.instruction_position, use_igr=s.use_igr,
        igr_top_k=s.igr_top_k, q2i_weight=s.q2i_weight, max_short=settings.features.n_short,
        max_long=settings.features.n_long, seed=settings.seed,
    )
    sft = SFTConfig(
        max_epochs=s.max_epochs, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps, patience=s.patience,
        beam_width=s.beam_width, limit_train_batches=s.limit_train_batches, limit_val_batches=s.limit_val_batches,
        accelerator=s.accelerator, devices=s.devices, strategy=s.strategy, precision=s.precision, seed=settings.seed,
    )
    return generator, sft


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


@asset(group_name=GROUP, kinds={"pytorch"}, code_version="1")
def sft_evaluation(
    context: AssetExecutionContext,
    sft_model: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    interaction_log: pd.DataFrame,
    params: ParamsResource,
) -> pd.DataFrame:
    """Test-split HR@k / NDCG@k per scenario, the generator next to the popularity baselines (same split)."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    encoder = ExampleEncoder.load(sft_model["encoder"], sid_table)
    model = load_generator(sft_model["checkpoint"])
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    test = training_examples[training_examples["split"] == "test"].reset_index(drop=True)
    overall, per_scenario = evaluate_generator(
        model, encoder.encode(test), trie, sid_table, beam_width=params.settings.sft.beam_width,
        scenario_names=encoder.scenarios,
    )
    # popularity counts everything before the test targets (train + validation events)
    targets = test[["user_id", "target_timestamp"]].rename(columns={"target_timestamp": "timestamp"})
    marked = interaction_log.merge(targets.assign(_test=True), on=["user_id", "timestamp"], how="left")
    train_log = marked[marked["_test"].isna()].drop(columns="_test")
    rows = [per_scenario.assign(model="oxygenrec_sft")]
    for name, (_, table) in evaluate_baselines(train_log, test, sid_table).items():
        rows.append(table.assign(model=name))
    table = pd.concat(rows, ignore_index=True)
    table = table[["model"] + [c for c in table.columns if c != "model"]]
    context.add_output_metadata(
        {
            "test_examples": len(test),
            "hr10": float(overall["hr@10"]),
            "ndcg10": float(overall["ndcg@10"]),
            "metrics": md(table),
        }
    )
    return table
