"""The pipeline's one configuration file (``params.yaml``), its schema and how it is found.

Every stage reads its section from the same file, and DVC reads its params from it too, so a parameter
change is visible to both. The schema lives here as pydantic models: unknown keys are errors (a typo is
caught at load time rather than silently ignored) and paths are validated.

Lookup order: ``OXYREC_CONFIG`` (a path) or ``params.yaml`` at the project root. Overrides by environment:
``OXYREC_HOME`` replaces ``data.root``; ``OXYREC_DATA_DIR`` switches the source to ``files`` in that directory.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    root: str = "data"
    source: Literal["synthetic", "files"] = "synthetic"
    files_dir: str | None = None
    scenarios: list[str] | Literal["auto"] = Field(
        default_factory=lambda: ["homepage", "product_detail", "cart", "feed", "search", "checkout"]
    )

    @field_validator("scenarios")
    @classmethod
    def _scenario_names(cls, value):
        if value == "auto":
            return value
        if not value:
            raise ValueError("data.scenarios must list at least one scenario (or be 'auto')")
        bad = [s for s in value if not s or not all(c.isalnum() or c in "_-" for c in s)]
        if bad:
            raise ValueError(f"data.scenarios: names must be alphanumeric/_/-, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"data.scenarios has duplicates: {value}")
        return value

    @model_validator(mode="after")
    def _files_need_dir(self):
        if self.source == "files" and not self.files_dir:
            raise ValueError("data.source is 'files' but data.files_dir is not set")
        return self


class SyntheticSettings(_Section):
    seed: int = 0                           # the world's own seed: model seeds (top-level seed) vary, the data not
    n_items: int = Field(5000, ge=10)
    n_users: int = Field(3000, ge=10)
    n_days: int = Field(90, ge=7)
    start_date: str = "2026-08-20"
    sessions_per_user_mean: float = Field(8.0, gt=0)
    life_event_rate: float = Field(0.3, ge=0, le=1)


class ValidationSettings(_Section):
    min_interactions_per_user: int = Field(3, ge=1)
    timestamp_min: dt.date = dt.date(1995, 1, 1)
    timestamp_max: dt.date = dt.date(2100, 1, 1)

    def timestamp_range(self) -> tuple[int, int]:
        to_ts = lambda d: int(dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp())  # noqa: E731
        return to_ts(self.timestamp_min), to_ts(self.timestamp_max)


class EmbeddingSettings(_Section):
    batch_size: int = Field(128, ge=1)
    fusion: Literal["concat", "text_only", "pca_concat"] = "concat"
    text_weight: float = Field(0.8, gt=0, le=1)
    behaviour_dim: int = Field(64, ge=2)
    behaviour_window: int = Field(5, ge=1)
    fused_dim: int = Field(256, ge=2)


class SemanticIdGate(_Section):
    """Blocking quality thresholds: a codebook outside them never reaches training."""

    min_l1_coverage: float = Field(0.9, ge=0, le=1)
    max_collision_p99: float = Field(5, ge=1)
    min_l1_purity: float = Field(0.0, ge=0, le=1)


class SemanticIdSettings(_Section):
    levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=2)
    assignment: Literal["plain", "balanced"] = "balanced"
    max_iter: int = Field(50, ge=1)
    fit_sample_size: int | None = Field(None, ge=1)
    refit: Literal["auto", "always", "never"] = "auto"   # auto: refit only when the staleness report asks
    gate: SemanticIdGate = SemanticIdGate()


DEFAULT_SCENARIO_TEXTS = {
    "homepage": "Homepage: broad, popular items matching the user's main interests.",
    "product_detail": "Product page: items similar to the product being viewed.",
    "cart": "Cart: complementary items that go with what is in the cart.",
    "feed": "Feed: explore new categories beyond the usual interests.",
    "search": "Search: items matching the user's query.",
    "checkout": "Checkout: cheap add-ons to the order.",
}


class FeatureSettings(_Section):
    """Feast features and the slow-thinking reasoner (fast-slow thinking)."""

    store_dir: str = "feast"                 # relative to data.root
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = None             # default: $OXYREC_REDIS_URL or 127.0.0.1:6379
    n_short: int = Field(20, ge=1)
    n_long: int = Field(100, ge=1)
    instruction_window_days: int = Field(30, ge=1)
    # point-in-time TTLs (feature_repo/definitions.py): behaviour never expires by default (null); an
    # instruction older than this many days is stale and dropped (the default instruction is used instead)
    history_ttl_days: float | None = Field(None, gt=0)
    instruction_max_age_days: float = Field(30.0, gt=0)
    instruction_history_days: int | None = Field(None, ge=1)  # daily partitions kept; None: the whole data span
    instruction_embedding: Literal["intents", "text"] = "intents"
    reasoner: Literal["rules", "openai"] = "rules"
    llm_base_url: str | None = None           # OpenAI-compatible endpoint; key from $OXYREC_LLM_API_KEY
    llm_model: str | None = None
    high_value_actions: list[str] = Field(default_factory=lambda: ["cart", "order"])
    incremental_window_minutes: int = Field(5, ge=1)
    scenario_texts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SCENARIO_TEXTS))

    @model_validator(mode="after")
    def _llm_needs_endpoint(self):
        if self.reasoner == "openai" and not (self.llm_base_url and self.llm_model):
            raise ValueError("features.reasoner 'openai' needs features.llm_base_url and features.llm_model")
        return self


class SASRecSettings(_Section):
    """The SASRec baselines trained next to the generator on the same split (models/nn/sasrec.py): the plain
    model and, when the data has more than one scenario, the scenario-aware variant (``variants``)."""

    hidden: int = Field(64, ge=8)
    n_blocks: int = Field(2, ge=1)
    n_heads: int = Field(1, ge=1)
    max_len: int = Field(50, ge=2)
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    max_epochs: int = Field(200, ge=1)          # a cap only: early stopping on validation NDCG@10 ends training
    patience: int = Field(20, ge=1)
    window_stride: int | None = Field(25, ge=1)   # every target trained once per epoch; None: the last window only
    variants: list[Literal["plain", "scenario"]] = Field(default_factory=lambda: ["plain", "scenario"], min_length=1)


class AblationSettings(_Section):
    """sft_ablations (group analysis, on demand): which studies, and an optional smaller budget per variant."""

    studies: list[Literal["instruction_position", "igr_q2i", "recent_context", "unified_vs_per_scenario"]] = Field(
        default_factory=lambda: ["instruction_position", "igr_q2i", "recent_context", "unified_vs_per_scenario"])
    max_epochs: int | None = Field(None, ge=1)            # None: the sft section's budget
    limit_train_batches: int | None = Field(None, ge=1)


class SFTSettings(_Section):
    """Generator size and SFT training (models/nn/config.py, models/lightning/train.py)."""

    d_model: int = Field(128, ge=8)
    n_heads: int = Field(4, ge=1)
    enc_layers: int = Field(2, ge=1)
    dec_layers: int = Field(2, ge=1)
    ffn: Literal["dense", "moe"] = "dense"
    n_experts: int = Field(4, ge=1)
    instruction_position: Literal["none", "replace_bos", "add_to_bos", "left_of_bos", "right_of_bos"] = "right_of_bos"
    use_igr: bool = True
    igr_top_k: int = Field(20, ge=1)
    n_recent: int = Field(10, ge=0)          # newest long-history items (all scenarios) always in the encoder
    q2i_weight: float = Field(0.1, ge=0)
    history_encoder: Literal["set", "causal"] = "set"   # models/nn/config.py: the paper's set encoder | causal
    item_buckets: int = Field(0, ge=0)       # hashed item-level embedding of history items (0 = off)
    instruction_age: bool = False            # the instruction's age (log buckets) added to the decoder's INS token
    max_long: int | None = Field(None, ge=2)  # newest long-history items the generator reads (None: features.n_long)
    dropout: float = Field(0.1, ge=0, lt=1)
    train_positions: Literal["last", "all"] = "last"    # all: every position of each sequence (causal encoder)
    window_stride: int | None = Field(None, ge=1)       # train_positions all: targets per window
    max_epochs: int = Field(2, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    patience: int = Field(2, ge=1)
    beam_width: int = Field(20, ge=10)
    limit_train_batches: int | None = Field(240, ge=1)    # cap per epoch (CPU demo budgets; None = all)
    limit_val_batches: int | None = Field(4, ge=1)
    accelerator: str = "cpu"                 # gpu + devices/strategy ddp in production
    devices: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"
    # blocking gate on sft_evaluation (the `gate` section's paired bootstrap on the validation examples): the
    # lower bound of (generator - this baseline) must be >= -gate_margin for every gated metric
    gate_baseline: Literal["popularity", "popularity_per_scenario", "sasrec", "sasrec_scenario",
                           "best_sasrec"] = "popularity"
    gate_margin: float = Field(0.0, ge=0)
    sasrec: SASRecSettings = SASRecSettings()
    ablations: AblationSettings = AblationSettings()


class GateSettings(_Section):
    """The one statistical gate (models/eval/significance.py): a paired bootstrap over the scored examples,
    used by the SFT gate (generator vs a baseline) and the RL gate (RL policy vs its SFT model)."""

    resamples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    metrics: list[Literal["ndcg@10", "hr@10", "ndcg@5", "hr@5", "hr@1"]] = Field(
        default_factory=lambda: ["ndcg@10", "hr@10"], min_length=1)


class ScheduleSettings(_Section):
    retrain_cron: str = "0 3 * * *"
    instructions_cron: str = "0 1 * * *"      # daily full refresh of the reasoning instructions
    timezone: str = "UTC"


ActionName = Literal["click", "cart", "order"]

DEFAULT_REWARD_WEIGHTS: dict[str, dict[str, float]] = {
    "homepage": {"click": 1.0, "cart": 0.3, "order": 0.3},
    "product_detail": {"click": 1.0, "cart": 0.5, "order": 0.5},
    "cart": {"click": 0.2, "cart": 0.5, "order": 1.0},
    "feed": {"click": 1.0, "cart": 0.5, "order": 0.5},
    "search": {"click": 1.0, "cart": 0.5, "order": 0.5},
    "checkout": {"click": 0.1, "cart": 0.3, "order": 1.0},
}


class RewardModelSettings(_Section):
    """The unified ranking reward model P(click/cart/order | user context, scenario, item) (models/rl/reward_model.py)."""

    hidden_dim: int = Field(64, ge=1)
    scenario_dim: int = Field(8, ge=1)
    mlp_layers: int = Field(2, ge=0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(3e-3, gt=0)
    num_negatives: int = Field(4, ge=0)      # random catalog items per logged row, labels (0, 0, 0)
    calibration: Literal["temperature", "platt"] = "temperature"


class RewardMappingSettings(_Section):
    """The RL reward (models/rl/verifiable.py): learned_weight * R_learned + verifiable_weight * R_verif, with
    R_learned = sum_k w[scenario, k] P_k (models/rl/reward_mapping.py, weights per scenario) and R_verif = hit on
    the logged next item + prefix_credit for a matching SID prefix - a rank-aware penalty for hard negatives."""

    learned_weight: float = Field(1.0, ge=0)
    verifiable_weight: float = Field(1.0, ge=0)
    prefix_credit: float = Field(0.5, ge=0, lt=1)
    rank_penalty: float = Field(0.5, ge=0)
    scenarios: dict[str, dict[ActionName, float]] = Field(default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS))
    default: dict[ActionName, float] = Field(default_factory=lambda: {"click": 1.0, "cart": 0.5, "order": 0.5})
    invalid_penalty: float = Field(1.0, ge=0)
    diversity_bonus: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _some_reward(self):
        if self.learned_weight == 0 and self.verifiable_weight == 0:
            raise ValueError("rl.reward: learned_weight and verifiable_weight cannot both be 0")
        return self


class RLComparisonSettings(_Section):
    """rl_comparison (analysis group, on demand): every algorithm x synthetic share, same seed and budget."""

    # sagcpo_gc: SA-GCPO with the group clip on (target below); the others run with rl.group_clip as configured
    algorithms: list[Literal["grpo", "gspo", "sagcpo", "sagcpo_gc"]] = Field(
        default_factory=lambda: ["grpo", "gspo", "sagcpo", "sagcpo_gc"])
    synthetic_shares: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.33, 0.5])
    seeds: list[int] | None = Field(default_factory=lambda: [0, 1, 2])  # same seeds for every cell; None: [rl seed]
    steps: int | None = Field(20, ge=1)      # None: rl.steps
    lr: float | None = Field(1e-4, gt=0)     # None: rl.lr
    group_clip: float | None = None          # sagcpo_gc's target reward; None: the SFT policy's mean reward
    # Policy updates per sampled batch. With 1 every update is on-policy (ratio == 1), where GRPO's clip is
    # inactive, GSPO's sequence ratio has the token-mean gradient and SA-GCPO's gate weight 4σ(0)(1-σ(0)) = 1:
    # the three objectives then have identical gradients. The comparison needs > 1 to tell them apart.
    ppo_epochs: int | None = Field(4, ge=1)  # None: rl.ppo_epochs

    @field_validator("synthetic_shares")
    @classmethod
    def _shares(cls, value):
        if not value or any(not 0 <= s <= 1 for s in value):
            raise ValueError(f"rl.comparison.synthetic_shares must be non-empty and in [0, 1], got {value}")
        return value


class RLSettings(_Section):
    """SA-GCPO post-training of the SFT generator (models/rl): rl_policy, and serving_candidate's RL-or-SFT choice."""

    algorithm: Literal["grpo", "gspo", "sagcpo"] = "sagcpo"
    group_size: int = Field(8, ge=2)           # G items sampled per prompt
    prompts_per_step: int = Field(32, ge=1)
    steps: int = Field(30, ge=1)
    lr: float = Field(1e-5, gt=0)
    beta: float = Field(0.04, ge=0)            # weight of the k3 KL to the frozen SFT reference
    tau_pos: float = Field(1.0, gt=0)          # SA-GCPO gate temperatures (tau_neg >= tau_pos)
    tau_neg: float = Field(1.05, gt=0)
    group_clip: float | None = None            # SA-GCPO group clip target; None = off
    ppo_epochs: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    kl_stop: float | None = Field(1.0, gt=0)   # stop (and report) when the post-update KL exceeds this
    temperature: float = Field(1.0, gt=0)      # sampling temperature (part of the policy)
    group_sampling: Literal["sample", "beam"] = "sample"  # a group: G sampled items, or the beam search's top G
    target_in_group: bool = False              # the logged next item joins its prompt's group (off-policy demonstration)
    synthetic_share: float = Field(0.2, ge=0, le=1)   # fraction of prompts that are counterfactual contexts
    max_examples: int = Field(20000, ge=1)     # train examples (sampled) for prompts and reward-model rows
    # serving_candidate: RL is served when the `gate` section's paired bootstrap of (RL - SFT) on every
    # validation example has every lower bound >= -gate_margin; otherwise the SFT model is served
    gate_margin: float = Field(0.0, ge=0)
    seed: int | None = None                    # None: the top-level seed
    reward_model: RewardModelSettings = RewardModelSettings()
    reward: RewardMappingSettings = RewardMappingSettings()
    comparison: RLComparisonSettings = RLComparisonSettings()

    @model_validator(mode="after")
    def _gate_temperatures(self):
        if self.tau_neg < self.tau_pos:
            raise ValueError(f"rl.tau_neg ({self.tau_neg}) must be >= rl.tau_pos ({self.tau_pos})")
        return self


class Settings(_Section):
    seed: int = 0
    data: DataSettings = DataSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    validation: ValidationSettings = ValidationSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    semantic_ids: SemanticIdSettings = SemanticIdSettings()
    features: FeatureSettings = FeatureSettings()
    sft: SFTSettings = SFTSettings()
    rl: RLSettings = RLSettings()
    gate: GateSettings = GateSettings()
    schedule: ScheduleSettings = ScheduleSettings()

    @property
    def data_root(self) -> Path:
        return resolve_path(self.data.root)


def resolve_path(value: str | os.PathLike) -> Path:
    """Resolve a configured path against the project root and refuse what cannot be a directory path."""
    text = str(value)
    if not text or "\x00" in text:
        raise ValueError(f"invalid path in configuration: {value!r}")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"configured directory {path} exists and is not a directory")
    return path


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read the config file, apply the environment overrides and validate everything."""
    config_path = Path(path or os.environ.get("OXYREC_CONFIG") or DEFAULT_CONFIG)
    if not config_path.is_file():
        raise FileNotFoundError(f"configuration file not found: {config_path}")
    raw = yaml.safe_load(config_path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: top level must be a mapping, got {type(raw).__name__}")
    data = dict(raw.get("data") or {})
    if os.environ.get("OXYREC_HOME"):
        data["root"] = os.environ["OXYREC_HOME"]
    if os.environ.get("OXYREC_DATA_DIR"):
        data["source"] = "files"
        data["files_dir"] = os.environ["OXYREC_DATA_DIR"]
        data["scenarios"] = "auto"
    raw["data"] = data
    if os.environ.get("OXYREC_SEED"):  # the models' seed (make evaluate SEED=...); the synthetic world keeps its own
        try:
            raw["seed"] = int(os.environ["OXYREC_SEED"])
        except ValueError as exc:
            raise ValueError(f"OXYREC_SEED must be an integer, got {os.environ['OXYREC_SEED']!r}") from exc
    try:
        return Settings.model_validate(raw)
    except Exception as exc:  # pydantic's message names the key; add the file
        raise ValueError(f"invalid configuration in {config_path}:\n{exc}") from exc


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    return load_settings()
