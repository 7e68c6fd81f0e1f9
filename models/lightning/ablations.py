"""The paper's SFT ablations, each trained with the same data, seed and budget and scored on the same test split.

Studies (``STUDIES``):

* ``instruction_position`` (paper Table 5): the decoder's instruction token none / replace_bos / add_to_bos /
  left_of_bos / right_of_bos, everything else as the base config;
* ``igr_q2i`` (Table 7): no IGR and no Q2I (first K long items, q2i_weight 0) / IGR without the Q2I loss /
  IGR + Q2I (the base config's q2i_weight);
* ``recent_context`` (not in the paper): no cross-scenario recent items (n_recent 0) vs the base config's
  n_recent (10, at most max_long, if the base has none): how much the session context from other scenarios matters;
* ``unified_vs_per_scenario`` (Table 8): the unified model trained on all scenarios vs one model per scenario
  trained on that scenario's examples only (scenarios with test examples in the frame); both scored per
  scenario on the same test examples.

A variant whose generator config equals one already trained (the base config appears in every study) is
trained once. Each variant trains in its own ``out_dir/<variant key>``, so an interrupted study resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.eval.generative import evaluate_generator
from models.lightning.train import SFTConfig, SFTResult, train_generator
from models.nn.config import INSTRUCTION_POSITIONS, GeneratorConfig
from models.semantic_ids.codebook import SemanticIdTable

__all__ = ["STUDIES", "Variant", "ablation_variants", "run_ablations", "summary_table"]

STUDIES = ("instruction_position", "igr_q2i", "recent_context", "unified_vs_per_scenario")


@dataclass(frozen=True)
class Variant:
    study: str
    name: str
    generator: GeneratorConfig
    scenario: str | None = None  # a per-scenario model: trained and scored on this scenario's examples only

    @property
    def key(self) -> str:
        payload = {"generator": self.generator.to_dict(), "scenario": self.scenario}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def ablation_variants(base: GeneratorConfig, studies: Sequence[str], scenarios: Sequence[str]) -> list[Variant]:
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        raise ValueError(f"unknown ablation studies {unknown}; known: {list(STUDIES)}")
    out: list[Variant] = []
    if "instruction_position" in studies:
        out += [Variant("instruction_position", p, dataclasses.replace(base, instruction_position=p))
                for p in INSTRUCTION_POSITIONS]
    if "igr_q2i" in studies:
        q2i = base.q2i_weight if base.q2i_weight > 0 else 0.1
        out += [
            Variant("igr_q2i", "no_igr_no_q2i", dataclasses.replace(base, use_igr=False, q2i_weight=0.0)),
            Variant("igr_q2i", "igr_only", dataclasses.replace(base, use_igr=True, q2i_weight=0.0)),
            Variant("igr_q2i", "igr_q2i", dataclasses.replace(base, use_igr=True, q2i_weight=q2i)),
        ]
    if "recent_context" in studies:
        out += [Variant("recent_context", "no_recent", dataclasses.replace(base, n_recent=0)),
                Variant("recent_context", "recent", dataclasses.replace(base, n_recent=base.n_recent or min(10, base.max_long)))]
    if "unified_vs_per_scenario" in studies:
        out.append(Variant("unified_vs_per_scenario", "unified", base))
        out += [Variant("unified_vs_per_scenario", "per_scenario", base, scenario=s) for s in scenarios]
    return out


def run_ablations(
    frame: pd.DataFrame,
    sid_table: SemanticIdTable,
    scenarios: Sequence[str],
    base: GeneratorConfig,
    sft: SFTConfig,
    studies: Sequence[str],
    out_dir: str | Path,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Train and score every variant; returns one row per (study, variant, scenario group) with ``n``,
    ``hr@k``, ``ndcg@k`` (test split, trie-constrained beam search, full catalog), ``best_val_hr10`` and
    ``train_seconds``. Per-scenario models contribute their scenario's rows only."""
    if "split" not in frame.columns:
        raise ValueError("the ablation frame needs a 'split' column (train / valid / test)")
    trained: dict[str, tuple[SFTResult, pd.DataFrame]] = {}
    rows = []
    # per-scenario models only for scenarios with test examples (nothing to score them on otherwise)
    present = set(frame.loc[frame["split"] == "test", "scenario"].astype(str))
    variants = ablation_variants(base, studies, [s for s in scenarios if s in present])
    for i, variant in enumerate(variants, 1):
        if variant.key not in trained:
            data = frame if variant.scenario is None else frame[frame["scenario"] == variant.scenario]
            test = data[data["split"] == "test"].reset_index(drop=True)
            if test.empty or (data["split"] == "train").sum() == 0:
                raise ValueError(f"ablation {variant.study}/{variant.name} ({variant.scenario or 'all'}): "
                                 "no train or test examples")
            log(f"ablation {i}/{len(variants)}: {variant.study}/{variant.name} {variant.scenario or ''}".rstrip())
            result = train_generator(data, sid_table, scenarios, variant.generator, sft,
                                     Path(out_dir) / variant.key)
            _, table = evaluate_generator(result.model, result.encoder.encode(test), result.trie, sid_table,
                                          ks=sft.ks, beam_width=sft.beam_width,
                                          scenario_names=result.encoder.scenarios)
            trained[variant.key] = result, table
        result, table = trained[variant.key]
        if variant.scenario is not None:
            table = table[table["group"] == variant.scenario]
        rows.append(table.assign(study=variant.study, variant=variant.name,
                                 best_val_hr10=float(result.best_score or 0.0),
                                 train_seconds=round(result.train_seconds, 1)))
    out = pd.concat(rows, ignore_index=True)
    return out[["study", "variant"] + [c for c in out.columns if c not in ("study", "variant")]]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, variant): the overall HR/NDCG (per-scenario models: the example-weighted mean
    over their scenarios, i.e. the metric over all their test examples)."""
    metric_cols = [c for c in results.columns if c.startswith(("hr@", "ndcg@"))]
    per_group = results[results["group"] != "overall"]
    rows = []
    for (study, variant), g in per_group.groupby(["study", "variant"], sort=False):
        n = g["n"].to_numpy()
        row = {"study": study, "variant": variant, "n": int(n.sum())}
        row.update({c: float((g[c] * n).sum() / max(n.sum(), 1)) for c in metric_cols})
        rows.append(row)
    return pd.DataFrame(rows)
