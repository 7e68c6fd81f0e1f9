"""Configuration of the OxygenREC generator (encoder-decoder over semantic IDs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["GeneratorConfig", "HISTORY_ENCODERS", "INSTRUCTION_POSITIONS"]

# Where the decoder sees the instruction token (paper Table 5; "right_of_bos" was best):
#   none          [BOS, c0, ..., c_{L-1}]
#   replace_bos   [INS, c0, ...]
#   add_to_bos    [BOS + INS, c0, ...]
#   left_of_bos   [INS, BOS, c0, ...]
#   right_of_bos  [BOS, INS, c0, ...]
INSTRUCTION_POSITIONS = ("none", "replace_bos", "add_to_bos", "left_of_bos", "right_of_bos")
HISTORY_ENCODERS = ("set", "causal")


@dataclass(frozen=True)
class GeneratorConfig:
    # semantic IDs: levels 0..L-1 from RQ-k-means (K each) + disambiguation level L (D)
    vocab_sizes: tuple[int, ...] = (256, 256, 256, 8)
    # inputs
    n_scenarios: int = 8
    profile_vocab_size: int = 1024  # shared vocabulary of profile tokens; id 0 = padding
    n_profile_fields: int = 8  # max profile tokens P per user (one field embedding per position)
    instruction_dim: int = 384  # reasoning-instruction text embedding size (all-MiniLM-L6-v2)
    max_short: int = 20
    max_long: int = 100
    # the n_recent newest long-history items (over all scenarios) always enter the encoder, in recency order:
    # the session context (e.g. the product viewed right before a cart page) lives in other scenarios
    n_recent: int = 0
    # how the encoder reads the user's history:
    #   "set"    the paper's encoder: [profile, Is, Ir, short, recent, IGR top-k] with bidirectional attention
    #   "causal" a SASRec-style causal encoder over the newest max_long long-history items (oldest -> newest,
    #            right-aligned position embeddings); memory = [profile tokens, item states]; the scenario and
    #            reasoning instruction reach the decoder through its instruction token INS. The short-term list,
    #            n_recent and IGR are not used. Item state j only sees items <= j, so one pass over a user's
    #            sequence trains every position (``forward_sequence``) and serving (encode the whole history,
    #            decode once) is exactly the computation of the sequence's last position.
    history_encoder: str = "set"
    # hashed item-level embedding added to the sum of code embeddings of every history item (0 = off): the
    # full SID tuple is hashed into this many buckets by two independent hashes (two rows summed), so items
    # with similar codes still get their own vector. Only the encoder's item tokens use it (the decoder reads codes).
    item_buckets: int = 0
    # learned repeat awareness: at decoding level l the codes v that continue the prefix into an item of the user's
    # long history (some history item has prefix (c_<l, v)) get a logit bias b[scenario, l] (trained, init 0).
    # Level 0 = "a cluster the user has visited", the last levels ~ "this exact item again". The model learns from
    # the training targets how often users return to what they had (never on MovieLens; often in cart/checkout).
    # EXPERIMENTAL, unmeasured: applied in training and constrained_beam_search only; ONNX export and RL refuse it.
    history_bias: bool = False
    # the reasoning instruction's age as an input: a learned embedding of its log-spaced age bucket
    # (models/nn/instruction_age.py; batch key ``instruction_age`` Float[B] days, -1 = none) is added to the
    # decoder's instruction token INS, so the model can trust a minutes-old instruction more than a weeks-old one.
    # Off: the input is accepted (the exported interface is the same) and ignored.
    instruction_age: bool = False
    # backbone
    d_model: int = 128
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    ffn_mult: int = 4
    ffn: str = "dense"  # "dense" | "moe"
    n_experts: int = 4
    moe_top_k: int = 2
    moe_aux_weight: float = 0.01
    dropout: float = 0.1
    label_smoothing: float = 0.0
    instruction_position: str = "right_of_bos"
    # IGR + Q2I (models/nn/igr.py)
    use_igr: bool = True  # False: the first igr_top_k valid long-history items are used instead
    igr_top_k: int = 20
    igr_dim: int = 64
    igr_hidden: int = 128
    q2i_weight: float = 0.1
    q2i_temperature: float = 0.07
    q2i_var_weight: float = 1.0
    q2i_var_gamma: float = 1.0
    q2i_decor_weight: float = 1.0
    seed: int = 0  # parameter initialisation

    def __post_init__(self) -> None:
        vs = self.vocab_sizes
        if isinstance(vs, int) or not hasattr(vs, "__len__"):
            raise ValueError(f"GeneratorConfig.vocab_sizes must be a sequence of ints, got {vs!r}")
        object.__setattr__(self, "vocab_sizes", tuple(int(v) for v in vs))  # lists from YAML are fine
        if len(self.vocab_sizes) < 1 or any(v < 1 for v in self.vocab_sizes):
            raise ValueError(f"GeneratorConfig.vocab_sizes must be non-empty positive ints, got {self.vocab_sizes}")
        positive = ("n_scenarios", "profile_vocab_size", "n_profile_fields", "instruction_dim", "max_short",
                    "max_long", "d_model", "n_heads", "enc_layers", "dec_layers", "ffn_mult", "n_experts",
                    "moe_top_k", "igr_top_k", "igr_dim", "igr_hidden")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GeneratorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.n_recent <= self.max_long:
            raise ValueError(f"GeneratorConfig.n_recent must be in [0, max_long={self.max_long}], got {self.n_recent}")
        if self.d_model % self.n_heads:
            raise ValueError(f"GeneratorConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.history_encoder not in HISTORY_ENCODERS:
            raise ValueError(f"GeneratorConfig.history_encoder must be one of {HISTORY_ENCODERS}, got {self.history_encoder!r}")
        if self.item_buckets < 0:
            raise ValueError(f"GeneratorConfig.item_buckets must be >= 0, got {self.item_buckets}")
        if self.ffn not in ("dense", "moe"):
            raise ValueError(f"GeneratorConfig.ffn must be 'dense' or 'moe', got {self.ffn!r}")
        if self.moe_top_k > self.n_experts:
            raise ValueError(f"GeneratorConfig.moe_top_k={self.moe_top_k} exceeds n_experts={self.n_experts}")
        if self.instruction_position not in INSTRUCTION_POSITIONS:
            raise ValueError(
                f"GeneratorConfig.instruction_position must be one of {INSTRUCTION_POSITIONS}, got {self.instruction_position!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GeneratorConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"GeneratorConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.q2i_temperature <= 0:
            raise ValueError(f"GeneratorConfig.q2i_temperature must be > 0, got {self.q2i_temperature}")
        for name in ("moe_aux_weight", "q2i_weight", "q2i_var_weight", "q2i_var_gamma", "q2i_decor_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"GeneratorConfig.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def n_levels(self) -> int:
        """L+1: codes per item (and decoding steps)."""
        return len(self.vocab_sizes)

    @property
    def n_prefix(self) -> int:
        """Decoder positions before the first code (BOS and/or instruction)."""
        return 2 if self.instruction_position in ("left_of_bos", "right_of_bos") else 1

    @property
    def min_long(self) -> int:
        """Long-history slots the exported encoder needs (recent + IGR top-k are constants of the graph)."""
        if self.history_encoder == "causal":
            return 1
        return min(self.n_recent + self.igr_top_k, self.max_long)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vocab_sizes"] = list(self.vocab_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GeneratorConfig got unknown keys {unknown}")
        return cls(**d)
