"""One RL post-training run as the ``rl_policy`` asset runs it, and the choice of the model to serve.

:func:`post_train` trains ``run`` from the experiment's SFT model, scores SFT and RL on every validation and test
example (the same beam search as serving), saves the policy and those per-example cases in ``run_dir``, and gates
(RL - SFT) on the validation examples with the shared paired bootstrap (models/eval/cases.py ``gate``). A fault
(non-finite reward, loss or gradient) saves the restored last good policy as ``run_dir/last_good.pt`` and
re-raises :class:`RLTrainingError` with ``error.last_good`` set.

:func:`serving_choice` re-reads the saved cases and picks RL only when every lower bound of (RL - SFT) is at
least ``-margin``; otherwise the SFT model it started from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.artifacts import atomic_write
from models.eval.cases import gate, summary_table
from models.eval.significance import GateDecision
from models.lightning.train import save_generator

from .experiment import RLExperiment, RLRun, comparison_table, numeric_history
from .trainer import RLTrainingError

__all__ = ["RL", "SFT", "GateOptions", "PostTraining", "post_train", "serving_choice"]

SFT, RL = "sft", "rl"  # the two candidates of the serving choice


@dataclass(frozen=True)
class GateOptions:
    """The shared gate's settings (the ``gate`` section) and the RL margin."""

    metrics: Sequence[str] = ("ndcg@10", "hr@10")
    margin: float = 0.0
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def decide(self, cases: pd.DataFrame) -> GateDecision:
        _, decision = gate(cases, RL, SFT, "valid", self.metrics, margin=self.margin, resamples=self.resamples,
                           confidence=self.confidence, seed=self.seed)
        return decision


@dataclass
class PostTraining:
    run: RLRun
    before: dict  # RLExperiment.evaluate of the SFT model
    after: dict  # ... of the RL policy
    history: list[dict]
    decision: GateDecision
    checkpoint: Path
    cases_path: Path
    config: dict  # the policy's GeneratorConfig
    train_seconds: float

    @property
    def stopped_reason(self) -> str:
        return self.history[-1]["stopped_reason"]

    def summary(self) -> dict:
        """The run's numbers, flat (JSON and metadata friendly)."""
        b, a = self.before, self.after
        return {"algorithm": self.run.algorithm, "synthetic_share": self.run.synthetic_share,
                "steps": len(self.history), "stopped_reason": self.stopped_reason,
                "kl_blowup": self.stopped_reason == "kl_stop", "final_kl": float(self.history[-1]["kl_after"]),
                "val_examples": b["n"], "val_hr10_sft": b["hr10"], "val_hr10_rl": a["hr10"],
                "val_ndcg10_sft": b["ndcg10"], "val_ndcg10_rl": a["ndcg10"], "reward_sft": b["reward"],
                "reward_rl": a["reward"], "train_seconds": round(self.train_seconds, 1)}

    def per_scenario(self) -> pd.DataFrame:
        return comparison_table(self.before, self.after)

    def intervals(self) -> pd.DataFrame:
        return pd.DataFrame(self.decision.table())[["metric", "n", "candidate", "reference", "difference", "low",
                                                    "high"]]

    def record(self, sft_model: Mapping) -> dict:
        """What the ``rl_policy`` asset returns: the artifact paths, the summary, the intervals, the history."""
        return {"checkpoint": str(self.checkpoint), "encoder": sft_model["encoder"], "generator_config": self.config,
                "sft_checkpoint": sft_model["checkpoint"], **self.summary(),
                "per_scenario": self.per_scenario().to_dict(orient="records"), "cases": str(self.cases_path),
                "valid_intervals": self.decision.table(), "history": numeric_history(self.history)}


def post_train(experiment: RLExperiment, run: RLRun, run_dir: str | Path, options: GateOptions,
               on_step: Callable[[dict], None] | None = None) -> PostTraining:
    """Train, evaluate, save and gate one run (module docstring)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        policy, history = experiment.train(run, on_step)
    except RLTrainingError as error:
        error.last_good = save_generator(error.policy.model, run_dir / "last_good.pt")
        raise
    train_seconds = time.perf_counter() - start
    after = experiment.evaluate(policy.model, RL, temperature=run.temperature)
    before = experiment.before
    checkpoint = save_generator(policy.model, run_dir / "policy.pt")
    cases = pd.concat([before["cases"].assign(model=SFT), after["cases"].assign(model=RL)], ignore_index=True)
    cases_path = atomic_write(run_dir / "cases.parquet", lambda tmp: cases.to_parquet(tmp, index=False))
    return PostTraining(run=run, before=before, after=after, history=history, decision=options.decide(cases),
                        checkpoint=checkpoint, cases_path=cases_path, config=policy.model.cfg.to_dict(),
                        train_seconds=train_seconds)


def serving_choice(sft_model: Mapping, rl_policy: Mapping, options: GateOptions) -> tuple[dict, pd.DataFrame]:
    """(the serving candidate record, SFT vs RL per split) from the RL run's saved cases (module docstring)."""
    cases = pd.read_parquet(rl_policy["cases"])
    decision = options.decide(cases)
    chosen = RL if decision.passed else SFT
    source = rl_policy if decision.passed else sft_model
    reason = decision.describe(RL, SFT) + (": serving the RL policy" if decision.passed else
                                           ": RL did not clear the gate, serving the SFT model")
    table = summary_table(cases)
    overall = table[table["group"] == "overall"][["split", "model", "n", "hr@10", "ndcg@10"]]
    record = {"served": chosen, "reason": reason, "checkpoint": source["checkpoint"], "encoder": source["encoder"],
              "generator_config": source["generator_config"],
              "algorithm": rl_policy["algorithm"] if decision.passed else "sft", "valid_intervals": decision.table()}
    return record, overall
