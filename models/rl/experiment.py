"""One RL experiment over a trained SFT generator: data, reward, runs, and RL-vs-SFT measurements (pure library).

:class:`RLExperiment` holds what every RL run over one SFT model shares (the SID trie, the example encoder, the
SFT generator and its frozen copy, the learned reward, the training prompts and the validation / test examples);
:meth:`RLExperiment.train` runs one :class:`RLRun` (algorithm, optimiser, group, reward mix, prompts) and
:meth:`RLExperiment.evaluate` measures a policy. The ``rl_policy`` / ``rl_comparison`` assets and
``bench/rl_effect.py`` all go through it, so the pipeline and the benchmark measure the same thing.

Data. Prompts are up to ``max_examples`` train-split rows (seeded sample, original order) encoded *with* their
targets (the verifiable reward reads the logged next item); validation and test are every row of the split, in
the training frame's order (the same examples ``sft_evaluation`` scores).

Measurements of a policy pi against its SFT model pi_0 (:meth:`RLExperiment.evaluate`):

    cases       per (split, example): 0-based rank of the target in pi's top-10 beam search (inf when absent)
                (models.eval.cases), for every validation and test example
    hr10/ndcg10 validation means of the cases
    reward      mean learned reward R_learned of G items *sampled* from pi on the validation prompts
                (models.rl.generator_policy.expected_reward; fixed seed, so before / after are paired)
    reward@10   mean learned reward of the 10 items pi's beam search serves (what a user is shown)
    kl          sequence KL(pi || pi_0) on the validation prompts, Monte-Carlo over G sampled items:
                mean_{u, y ~ pi(.|u)} [ log pi(y|u) - log pi_0(y|u) ]   (sum over the L+1 levels; 0 for pi_0)
    history_overlap  share of the top-10 items that are already in the user's short history (a recommender of
                 never-repeated items wastes those slots; a learned reward over the history mean can reward them)

:func:`paired_differences` gives the paired bootstrap of (RL - SFT) per split and metric
(models.eval.cases.compare), and :func:`seed_summary` the mean and std over seeds of the per-seed differences.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from models.configs import from_section
from models.eval.cases import compare, summary_table
from models.eval.generative import generator_ranked
from models.eval.metrics import target_ranks
from models.features.example_encoder import ExampleEncoder
from models.lightning.train import load_generator
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie

from .generator_policy import (
    GeneratorPolicy,
    GeneratorPolicyConfig,
    PromptConfig,
    PromptSet,
    expected_reward,
    make_reward_fn,
)
from .reward_mapping import RewardMappingConfig
from .reward_model import load_reward_model
from .trainer import GroupPolicyTrainer, RLConfig, RLTrainingError
from .verifiable import MixedReward, RewardMix

__all__ = ["RLExperiment", "RLRun", "compare_algorithms", "comparison_summary", "comparison_table", "measure",
           "numeric_history", "paired_differences", "seed_summary", "split_rows"]

SPLITS = ("valid", "test")
METRICS = ("ndcg@10", "hr@10")


@dataclass(frozen=True)
class RLRun:
    """The knobs of one RL run (what a variant of an experiment changes)."""

    algorithm: str = "sagcpo"  # grpo | gspo | sagcpo
    steps: int = 30
    lr: float = 1e-5
    beta: float = 0.04  # KL(pi || SFT) weight
    tau_pos: float = 1.0  # SA-GCPO gate temperatures
    tau_neg: float = 1.05
    group_clip: float | None = None  # SA-GCPO group clip target (advantages.py); None = off
    adv_scale: str = "std"  # group advantages: "std" (R - mean) / std, or "none" R - mean (advantages.py)
    ppo_epochs: int = 1
    max_grad_norm: float = 1.0
    kl_stop: float | None = None
    group_size: int = 8
    prompts_per_step: int = 32
    synthetic_share: float = 0.0
    group_sampling: str = "sample"  # sample | beam (GeneratorPolicyConfig)
    target_in_group: bool = False  # the logged item joins its prompt's group (GeneratorPolicyConfig)
    temperature: float = 1.0
    mix: RewardMix = field(default_factory=RewardMix)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.synthetic_share <= 1.0:
            raise ValueError(f"RLRun.synthetic_share must be in [0, 1], got {self.synthetic_share}")
        self.rl_config()  # validates algorithm, lr, group size, temperatures early
        self.policy_config()

    def rl_config(self) -> RLConfig:
        return from_section(RLConfig, dataclasses.asdict(self))

    def policy_config(self) -> GeneratorPolicyConfig:
        return from_section(GeneratorPolicyConfig, dataclasses.asdict(self))

    def replace(self, **changes) -> "RLRun":
        """A copy with ``changes``; reward-mix fields (learned_weight, ...) may be given flat."""
        mix_fields = {f.name for f in dataclasses.fields(RewardMix)}
        mix = {k: changes.pop(k) for k in list(changes) if k in mix_fields}
        if mix:
            changes["mix"] = dataclasses.replace(changes.get("mix", self.mix), **mix)
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(RLRun)})
        if unknown:
            raise ValueError(f"unknown RLRun field(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(out.pop("mix"))
        return out


def split_rows(training_examples: pd.DataFrame, split: str, limit: int, seed: int) -> pd.DataFrame:
    """At most ``limit`` rows of a split, a seeded sample in the original order (same rows for every asset)."""
    frame = training_examples[training_examples["split"] == split]
    if frame.empty:
        raise ValueError(f"training_examples has no {split!r} rows: RL needs train, valid and test examples")
    if len(frame) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))
        frame = frame.iloc[keep]
    return frame.reset_index(drop=True)


class RLExperiment:
    """What every RL run over one SFT model shares (module docstring).

    ``reward_model``: the reward_model manifest (``checkpoint``, ``item_features``, ``scenarios``,
    ``codebook_version``); ``mapping``: the per-scenario reward weights in the encoder's scenario order
    (:func:`models.rl.generator_policy.mapping_for_scenarios`)."""

    def __init__(self, sft_checkpoint: str, encoder_path: str, reward_model: Mapping, mapping: RewardMappingConfig,
                 training_examples: pd.DataFrame, item_semantic_ids: pd.DataFrame, *, max_examples: int = 20000,
                 seed: int = 0, beam_width: int = 20, eval_group_size: int = 8):
        self.seed, self.beam_width, self.eval_group_size = int(seed), int(beam_width), int(eval_group_size)
        self.sid_table = SemanticIdTable.from_frame(item_semantic_ids)
        self.trie = SIDTrie.from_codes(self.sid_table.codes, self.sid_table.vocab_sizes)
        self.item_codes = torch.as_tensor(self.sid_table.codes, dtype=torch.long)
        self.encoder = ExampleEncoder.load(encoder_path, self.sid_table)
        if list(self.encoder.scenarios) != list(reward_model["scenarios"]):
            raise ValueError(f"sft_model scenarios {list(self.encoder.scenarios)} differ from reward_model's "
                             f"{list(reward_model['scenarios'])}: rematerialize reward_model")
        if reward_model.get("codebook_version") != self.sid_table.codebook_version:
            raise ValueError(f"reward_model was trained with SID codebook {reward_model.get('codebook_version')}, the "
                             f"current one is {self.sid_table.codebook_version}: rematerialize reward_model")
        if list(mapping.scenario_weights) != list(self.encoder.scenarios):
            raise ValueError(f"reward mapping scenarios {list(mapping.scenario_weights)} are not the encoder's "
                             f"{list(self.encoder.scenarios)} (use mapping_for_scenarios(encoder.scenarios, ...))")
        self.sft = load_generator(sft_checkpoint)
        self.encoder.check_config(self.sft.cfg)
        for p in self.sft.parameters():  # the frozen reference; runs train deep copies
            p.requires_grad_(False)
        train = split_rows(training_examples, "train", max_examples, self.seed)
        self.frames = {split: split_rows(training_examples, split, len(training_examples), self.seed)
                       for split in SPLITS}
        self.train_prompts = self.encoder.encode(train)  # with targets: the verifiable reward reads them
        self.encoded = {split: self.encoder.encode(frame) for split, frame in self.frames.items()}
        self.valid_prompts = {k: v for k, v in self.encoded["valid"].items() if k not in ("target_sids", "target_item")}
        self.reward_net = load_reward_model(reward_model["checkpoint"])
        self.item_x = torch.from_numpy(np.load(reward_model["item_features"], allow_pickle=False))
        self.mapping = mapping
        self.learned_reward = make_reward_fn(self.reward_net, mapping, self.item_x, self.trie)
        self._before: dict | None = None

    # ------------------------------------------------------------------------------------------ runs
    def policy(self, model, config: GeneratorPolicyConfig = GeneratorPolicyConfig()) -> GeneratorPolicy:
        return GeneratorPolicy(model, self.trie, config, item_codes=self.item_codes)

    def reward_fn(self, mix: RewardMix) -> MixedReward:
        return MixedReward(self.learned_reward, mix)  # with learned_weight 0 still reported (stats), not optimised

    def train(self, run: RLRun, log: Callable[[dict], None] | None = None) -> tuple[GeneratorPolicy, list[dict]]:
        """(policy, history) of one run from a fresh copy of the SFT model; RLTrainingError propagates with
        ``error.policy`` (restored to the last good state) and ``error.history``."""
        config = run.policy_config()
        model = copy.deepcopy(self.sft)
        for p in model.parameters():
            p.requires_grad_(True)
        policy = self.policy(model, config)
        reference = self.policy(self.sft, GeneratorPolicyConfig(temperature=run.temperature))
        prompts = PromptSet(self.train_prompts, len(self.encoder.scenarios),
                            PromptConfig(batch_size=run.prompts_per_step, synthetic_share=run.synthetic_share))
        trainer = GroupPolicyTrainer(policy, self.reward_fn(run.mix), run.rl_config(), reference)
        try:
            trainer.fit(prompts, log)
        except RLTrainingError as error:
            error.policy, error.history = policy, trainer.history
            raise
        return policy, trainer.history

    @torch.no_grad()
    def sft_reward(self, run: RLRun, n_prompts: int = 256) -> float:
        """Mean training reward (``run``'s mix and group) of the SFT policy on ``n_prompts`` real training prompts
        (seeded): e.g. a group-clip target on the scale of the reward it clips."""
        policy = self.policy(self.sft, run.policy_config())
        prompts = PromptSet(self.train_prompts, len(self.encoder.scenarios), PromptConfig(batch_size=n_prompts))
        gen = torch.Generator().manual_seed(self.seed)
        batch = prompts(0, gen)
        tokens, _, _ = policy.sample(batch, run.group_size, gen)
        return float(self.reward_fn(run.mix)(batch, tokens).mean())

    # ------------------------------------------------------------------------------------------ measurements
    @property
    def before(self) -> dict:
        """:meth:`evaluate` of the SFT model (computed once)."""
        if self._before is None:
            self._before = self.evaluate(self.sft)
        return self._before

    def cases(self, model, name: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """(per-example ranks of ``model``'s top-10 beam search on every validation and test example,
        {split: ranked item rows Long[N, 10]})."""
        parts, ranked_items = [], {}
        for split, frame in self.frames.items():
            ranked, targets, _, _ = generator_ranked(model, self.encoded[split], self.trie, 10, self.beam_width)
            ranked_items[split] = ranked
            parts.append(pd.DataFrame({
                "split": split, "model": name, "example": np.arange(len(frame)),
                "user_id": frame["user_id"].astype(str).to_numpy(), "scenario": frame["scenario"].astype(str).to_numpy(),
                "rank": target_ranks(ranked, np.where(targets >= 0, targets, -2))}))
        return pd.concat(parts, ignore_index=True), ranked_items

    @torch.no_grad()
    def evaluate(self, model, name: str = "policy", temperature: float = 1.0) -> dict:
        """The measurements of the module docstring for generator ``model`` (the SFT model or a trained policy's
        ``.model``): {"hr10", "ndcg10", "reward", "reward_at10", "kl", "history_overlap", "valid_share", "n",
        "table" (validation summary per scenario), "cases"}."""
        cases, ranked = self.cases(model, name)
        valid = cases[cases["split"] == "valid"]
        table = summary_table(valid.drop(columns="split"))
        overall = table[table["group"] == "overall"].iloc[0]
        sampler = self.policy(model, GeneratorPolicyConfig(temperature=temperature))
        sampled = expected_reward(sampler, self.valid_prompts, self.learned_reward, self.eval_group_size,
                                  seed=self.seed)
        per_reward = {str(self.encoder.scenarios[s]): v for s, v in sampled["per_scenario"].items()}
        table = table.assign(reward=[sampled["mean"] if g == "overall" else per_reward.get(str(g), float("nan"))
                                     for g in table["group"]])
        return {"hr10": float(overall["hr@10"]), "ndcg10": float(overall["ndcg@10"]), "reward": sampled["mean"],
                "reward_at10": self.served_reward(ranked["valid"]), "kl": self.sequence_kl(sampler),
                "history_overlap": self.history_overlap(ranked["valid"]), "valid_share": sampled["valid_share"],
                "n": int(len(valid)), "table": table.drop(columns="model"), "cases": cases}

    def served_reward(self, ranked: np.ndarray, batch_size: int = 256) -> float:
        """Mean learned reward of the served (beam top-10) validation items; unfilled slots are skipped."""
        items = torch.as_tensor(ranked, dtype=torch.long)
        total, count = 0.0, 0
        for start in range(0, len(items), batch_size):  # prompt chunks (memory), not items
            chunk = {k: v[start:start + batch_size] for k, v in self.valid_prompts.items()}
            rows = items[start:start + batch_size]
            filled = rows >= 0
            tokens = self.item_codes[rows.clamp(min=0)]  # [b, 10, L+1]
            r = torch.as_tensor(self.learned_reward(chunk, tokens), dtype=torch.float32)
            total += float(r[filled].sum())
            count += int(filled.sum())
        return total / max(count, 1)

    def history_overlap(self, ranked: np.ndarray) -> float:
        """Share of served validation items (filled slots) that are in the prompt's short history."""
        hist = self.trie.lookup(self.encoded["valid"]["short_sids"].reshape(-1, self.sft.cfg.n_levels).long())
        hist = hist.view(len(ranked), -1)
        hist = torch.where(self.encoded["valid"]["short_mask"].bool(), hist, torch.full_like(hist, -3))
        items = torch.as_tensor(ranked, dtype=torch.long)
        seen = (items[:, :, None] == hist[:, None, :]).any(-1) & (items >= 0)
        return float(seen.sum()) / max(int((items >= 0).sum()), 1)

    @torch.no_grad()
    def sequence_kl(self, policy: GeneratorPolicy, batch_size: int = 256) -> float:
        """Monte-Carlo KL(policy || SFT) per item on the validation prompts (module docstring)."""
        if policy.model is self.sft:
            return 0.0
        reference = self.policy(self.sft, policy.config)
        gen = torch.Generator().manual_seed(self.seed)
        n, total = int(self.valid_prompts["scenario"].shape[0]), 0.0
        for start in range(0, n, batch_size):
            chunk = {k: v[start:start + batch_size] for k, v in self.valid_prompts.items()}
            tokens, logp, _ = policy.sample(chunk, self.eval_group_size, gen)
            total += float((logp.sum(-1) - reference.log_probs(chunk, tokens).sum(-1)).sum())
        return total / (n * self.eval_group_size)


def paired_differences(before: Mapping, after: Mapping, *, metrics: Sequence[str] = METRICS, resamples: int = 1000,
                       confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per split and metric the paired bootstrap of (RL - SFT) over every example of the split:
    [{split, metric, n, candidate, reference, difference, low, high, ...}]."""
    cases = pd.concat([before["cases"].assign(model="sft"), after["cases"].assign(model="rl")], ignore_index=True)
    return [{"split": split, **c.as_dict()}
            for split in SPLITS
            for c in compare(cases, "rl", "sft", split, metrics, resamples=resamples, confidence=confidence, seed=seed)]


def measure(experiment: RLExperiment, run: RLRun, *, resamples: int = 1000, bootstrap_seed: int = 0,
            log: Callable[[dict], None] | None = None) -> dict:
    """One run, trained and measured against the SFT model: a flat row (one per run of a benchmark table).

    Keys: seed, status ("steps_done" | "kl_stop" | "failed: ..."), steps, train_seconds, eval_seconds,
    reward_rl / reward_sft (sampled), reward_at10_rl / _sft (served), kl_valid (sequence KL on validation prompts),
    kl_train_last (post-update token KL of the last step), history_overlap_rl / _sft, group_hit_share (mean over
    steps), clip_frac (mean over steps: tokens the clip, or SA-GCPO's gate at weight < 0.5, held back), gate_mean
    (SA-GCPO: mean gradient weight f'(r)), and per split and metric ``<split>_<metric>_{rl,sft,diff,low,high}``
    (paired bootstrap of RL - SFT). A failed run (RLTrainingError) has only seed, status and steps."""
    before = experiment.before
    row: dict = {"seed": run.seed}
    start = time.perf_counter()
    try:
        policy, history = experiment.train(run, log)
    except RLTrainingError as error:
        return row | {"status": f"failed: {error}"[:200], "steps": len(error.history)}
    train_seconds = time.perf_counter() - start
    after = experiment.evaluate(policy.model, "rl", temperature=run.temperature)
    row |= {"status": history[-1]["stopped_reason"], "steps": len(history), "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(time.perf_counter() - start - train_seconds, 1),
            "reward_rl": after["reward"], "reward_sft": before["reward"], "reward_at10_rl": after["reward_at10"],
            "reward_at10_sft": before["reward_at10"], "kl_valid": after["kl"], "kl_train_last": history[-1]["kl_after"],
            "history_overlap_rl": after["history_overlap"], "history_overlap_sft": before["history_overlap"],
            "group_hit_share": _mean(history, "group_hit_share"), "clip_frac": _mean(history, "clip_frac"),
            "gate_mean": _mean(history, "gate_mean"),
            "train_reward_first": history[0]["reward_mean"], "train_reward_last": history[-1]["reward_mean"]}
    for c in paired_differences(before, after, resamples=resamples, seed=bootstrap_seed):
        key = f"{c['split']}_{c['metric']}"
        row |= {f"{key}_rl": c["candidate"], f"{key}_sft": c["reference"], f"{key}_diff": c["difference"],
                f"{key}_low": c["low"], f"{key}_high": c["high"]}
    return row


def _mean(history: Sequence[Mapping], key: str) -> float:
    values = [h[key] for h in history if key in h]
    return float(np.mean(values)) if values else float("nan")


def seed_summary(rows: Sequence[Mapping], keys: Sequence[str] = ("variant",)) -> pd.DataFrame:
    """Mean, std (ddof 1) and runs over seeds of every numeric column of ``rows`` (one row per run) grouped by
    ``keys`` (order kept)."""
    table = pd.DataFrame(list(rows))
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise ValueError(f"seed_summary: rows have no column(s) {missing}")
    numeric = [c for c in table.columns if c not in keys and c != "seed" and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(list(keys), sort=False, dropna=False)[numeric]
    out = grouped.agg(["mean", "std"])
    out.columns = [f"{col}_{stat}" for col, stat in out.columns]
    out.insert(0, "runs", grouped.size())
    return out.reset_index()


def numeric_history(history: Sequence[Mapping]) -> list[dict]:
    """The JSON-friendly fields of a training history (numbers, strings, None)."""
    return [{k: v for k, v in h.items() if isinstance(v, (int, float, str)) or v is None} for h in history]


def comparison_table(before: Mapping, after: Mapping) -> pd.DataFrame:
    """Per-scenario HR@10 / NDCG@10 / reward of two :meth:`RLExperiment.evaluate` results, SFT next to RL."""
    left = before["table"][["group", "n", "hr@10", "ndcg@10", "reward"]]
    right = after["table"][["group", "hr@10", "ndcg@10", "reward"]]
    table = left.merge(right, on="group", suffixes=("_sft", "_rl"))
    return table[["group", "n", "hr@10_sft", "hr@10_rl", "ndcg@10_sft", "ndcg@10_rl", "reward_sft", "reward_rl"]]


def compare_algorithms(experiment: RLExperiment, base: RLRun, algorithms: Sequence[str], shares: Sequence[float],
                       seeds: Sequence[int], *, group_clip: float, resamples: int = 1000,
                       log: Callable[[str], Callable[[dict], None]] | None = None) -> pd.DataFrame:
    """Every algorithm x synthetic share x seed with the budget of ``base`` (``"sagcpo_gc"`` = SA-GCPO with the
    group clip at ``group_clip``): one row per run, after a first row for the SFT model itself. A diverging
    configuration is a row with status ``failed: ...``, not a crash. ``log(label)`` gives a per-step callback."""
    before = experiment.before
    rows = []
    for algorithm in algorithms:
        for share in shares:
            for seed in seeds:
                run = base.replace(algorithm=algorithm.removesuffix("_gc"), synthetic_share=share, seed=seed,
                                   **({"group_clip": group_clip} if algorithm == "sagcpo_gc" else {}))
                start = time.perf_counter()
                label = f"{algorithm} share={share} seed={seed}"
                m = measure(experiment, run, resamples=resamples, log=log(label) if log else None)
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
    sft_test = summary_table(before["cases"][before["cases"]["split"] == "test"].drop(columns="split"))
    sft_test = sft_test[sft_test["group"] == "overall"].iloc[0]
    sft_row = {"algorithm": "sft", "synthetic_share": float("nan"), "seed": experiment.seed, "status": "reference",
               "steps": 0, "final_kl": 0.0, "kl_valid": 0.0, "reward": before["reward"], "hr@10": before["hr10"],
               "ndcg@10": before["ndcg10"], "test_hr@10": float(sft_test["hr@10"]),
               "test_ndcg@10": float(sft_test["ndcg@10"]), "clip_frac": 0.0, "seconds": 0.0, "reward_gain": 0.0,
               "hr@10_delta": 0.0}
    return pd.concat([pd.DataFrame([sft_row]), table], ignore_index=True)


def comparison_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (algorithm, synthetic share) of a :func:`compare_algorithms` table."""
    metrics = ["reward", "hr@10", "ndcg@10", "test_hr@10", "test_ndcg@10", "final_kl", "kl_valid", "clip_frac"]
    grouped = table.groupby(["algorithm", "synthetic_share"], dropna=False, sort=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out.insert(0, "runs", grouped.size())
    out.insert(1, "failed", grouped["status"].agg(lambda s: int(s.str.startswith("failed").sum())))
    return out.reset_index()
