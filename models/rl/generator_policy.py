"""The SFT generator as an RL policy over semantic IDs, its prompts and its reward (pure torch).

Policy (:class:`GeneratorPolicy`). A sequence is the L+1 codes of one item. For prompt (user context) u and
level d with prefix c_<d, let trie node n = walk(c_<d) and A_d(n) = {v : prefix + v is a prefix of a catalog
item} (``SIDTrie.allowed_mask``). The policy is the trie-constrained, renormalised softmax

    pi(v | c_<d, u) = exp(z_v / T) 1[v in A_d(n)] / sum_{w in A_d(n)} exp(z_w / T)      z = decoder logits

so every sample is a real catalog item (internal trie nodes always have a child). ``sample`` draws G items
per prompt level by level (one batched ``decode_step`` over B x G rows with the KV cache, a Python loop over
the L+1 levels only); ``log_probs`` scores given tokens with the teacher-forced decoder under the SAME masked
softmax and is differentiable. With ``rescore=True`` (default) ``sample`` returns the log-probs of
``log_probs`` itself (same code path, same shapes), so the on-policy ratio exp(logp - logp_old) is exactly 1;
with ``rescore=False`` it returns the incremental-decoding log-probs (equal up to float rounding, ~1e-6).
The wrapped generator always runs with dropout off (eval mode): sampling and scoring must be one distribution.

Prompts (:class:`PromptSet`). Rows of ``ExampleEncoder.encode(frame)`` (real user contexts). A step draws
B rows uniformly with replacement; the first n_syn = round(synthetic_share * B) become SYNTHETIC prompts,
counterfactual contexts built from real parts:

    real row i:       profile_i, short/long history_i, scenario s_i, reasoning instruction r_i
    synthetic of i:   profile_i, short/long history_i, scenario s' ~ U(S \\ {s_i}), instruction r_j

with j a random row that has an instruction (a real output of the embedded rules reasoner, generated for
another user or day): "what would this user want in another scenario if the reasoner had inferred that
intent?". No text model runs in the RL loop; the instruction stays in the reasoner's embedding space.

Reward (:func:`make_reward_fn`): ``UnifiedReward`` (reward_mapping.py) over the ranking reward model, with

    item(tokens)   = trie leaf of the L+1 codes = row of the SemanticIdTable the trie was built from (-1: invalid,
                     reward -invalid_penalty)
    user_x(prompt) = [ r * has_instruction  (instruction_dim),  mean_{k: short_mask} F[item(short_k)]  (d_item) ]
    scenario       = the prompt's scenario id (reward model and mapping use the encoder's scenario order)

where F [N_items, d_item] are the item features (catalog embeddings in SID-table order). Reward-model training
rows (:func:`reward_data_from_examples`) use the same user_x of each example and its logged action:

    click = action in {click, cart, order},  cart = action in {cart, order},  order = action == order
    (a "view" is an impression without a click: labels (0, 0, 0)), plus sampled negatives (build_reward_data).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.nn.generator import OxygenGenerator
from models.semantic_ids.trie import SIDTrie

from .reward_mapping import RewardMappingConfig, UnifiedReward
from .reward_model import ACTIONS, RewardData, RewardModel, build_reward_data

__all__ = [
    "GENERATOR_KEYS",
    "GeneratorPolicy",
    "GeneratorPolicyConfig",
    "PromptConfig",
    "PromptSet",
    "action_labels",
    "expected_reward",
    "make_reward_fn",
    "mapping_for_scenarios",
    "reward_data_from_examples",
    "user_context_features",
]

GENERATOR_KEYS = ("scenario", "profile", "instruction_emb", "has_instruction", "instruction_age", "short_sids",
                  "short_mask", "long_sids", "long_mask")


# ----------------------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class GeneratorPolicyConfig:
    temperature: float = 1.0  # part of the policy: applied in both sample and log_probs
    rescore: bool = True  # sample returns log_probs' values (on-policy ratio exactly 1)
    # how a group is drawn: "sample" = G items sampled level by level; "beam" = the G best distinct items of the
    # trie-constrained beam search (the hard negatives a ranking is judged by; needs item_codes)
    group_sampling: str = "sample"
    # the logged next item of a real training prompt replaces the group's last member when the group lacks it (an
    # off-policy demonstration, as in guided RL): most sampled groups of a large catalog never hold the logged item,
    # so the verifiable reward has nothing to rank; with it every real prompt's group does. Synthetic prompts and
    # prompts without a catalog target are left as drawn.
    target_in_group: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"GeneratorPolicyConfig.temperature must be > 0, got {self.temperature}")
        if self.group_sampling not in ("sample", "beam"):
            raise ValueError(f"GeneratorPolicyConfig.group_sampling must be 'sample' or 'beam', got {self.group_sampling!r}")


class GeneratorPolicy(nn.Module):
    """``Policy`` (models/rl/trainer.py) over an :class:`OxygenGenerator` with trie-constrained decoding."""

    def __init__(self, model: OxygenGenerator, trie: SIDTrie, config: GeneratorPolicyConfig = GeneratorPolicyConfig(),
                 item_codes: torch.Tensor | None = None):
        super().__init__()
        if tuple(trie.vocab_sizes) != tuple(model.cfg.vocab_sizes):
            raise ValueError(f"trie vocab_sizes {trie.vocab_sizes} != generator vocab_sizes {model.cfg.vocab_sizes}")
        if config.group_sampling == "beam":
            if item_codes is None or tuple(item_codes.shape) != (trie.num_items, model.cfg.n_levels):
                raise ValueError(f"beam groups need item_codes [{trie.num_items}, {model.cfg.n_levels}] (the SID "
                                 f"table's codes), got {None if item_codes is None else tuple(item_codes.shape)}")
        if model.cfg.history_bias:
            raise ValueError("GeneratorConfig.history_bias is not supported by RL post-training yet (sampling and "
                             "log-probs would miss the repeat bias)")
        self.model, self.trie, self.config = model, trie, config
        self.item_codes = None if item_codes is None else torch.as_tensor(item_codes, dtype=torch.long)
        self.model.eval()

    def train(self, mode: bool = True) -> "GeneratorPolicy":
        super().train(mode)
        self.model.eval()  # dropout stays off: sample and log_probs must score one distribution
        return self

    @property
    def n_levels(self) -> int:
        return self.model.cfg.n_levels

    def _masked_log_softmax(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        z = logits.float() / self.config.temperature
        return F.log_softmax(z.masked_fill(~allowed.to(z.device), float("-inf")), dim=-1)

    @torch.no_grad()
    def sample(self, prompts: dict, group_size: int, generator: torch.Generator):
        """tokens Long[B, G, L+1] (valid catalog items), logp Float[B, G, L+1], mask Float[B, G, L+1] (all ones).

        Each group is ordered by sequence log-prob, best first (a rank-aware reward reads the order)."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if self.config.group_sampling == "beam":
            return self._beam_group(prompts, group_size)
        if self.config.target_in_group and not self.config.rescore:
            raise ValueError("GeneratorPolicyConfig.target_in_group needs rescore=True (the logged item is not drawn)")
        memory, memory_mask = self.model.encode(prompts)
        b, dev = memory.shape[0], memory.device
        rows = b * group_size
        cache, nodes = None, self.trie.root_nodes(rows)
        prefix = torch.zeros(rows, 0, dtype=torch.long, device=dev)
        logps = []
        for d in range(self.n_levels):  # loop over levels only; everything inside is batched over B x G rows
            logits, cache = self.model.decode_step(memory, memory_mask, prefix, cache)
            lp = self._masked_log_softmax(logits, self.trie.allowed_mask(nodes, d))
            token = torch.multinomial(lp.exp().cpu(), 1, generator=generator).to(dev)  # [rows, 1]
            logps.append(lp.gather(1, token)[:, 0])
            nodes = self.trie.advance(nodes, token[:, 0].cpu(), d)
            prefix = torch.cat([prefix, token], dim=1)
        tokens = self._with_target(prompts, prefix.view(b, group_size, -1))
        logp = torch.stack(logps, 1).view(b, group_size, -1)
        if self.config.rescore:  # log_probs' own computation on the same (deterministic) encoder output
            logp = self._score(memory, memory_mask, tokens)
        return _best_first(tokens, logp)

    def _beam_group(self, prompts: dict, group_size: int):
        """The G best distinct items of the trie-constrained beam search, scored by log_probs, best first."""
        from models.decoding.beam_search import constrained_beam_search

        items, _ = constrained_beam_search(self.model, prompts, self.trie, group_size, group_size)
        items = torch.where(items >= 0, items, items[:, :1])  # tiny catalogs: repeat the best item
        tokens = self._with_target(prompts, self.item_codes[items.cpu()].to(items.device))
        memory, memory_mask = self.model.encode(prompts)
        return _best_first(tokens, self._score(memory, memory_mask, tokens))

    def _with_target(self, prompts: dict, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, G, L+1] with the logged item in the last slot of every real prompt whose group lacks it
        (``target_in_group``); unchanged otherwise."""
        if not self.config.target_in_group or "target_sids" not in prompts:
            return tokens
        target = prompts["target_sids"].to(tokens.device).long()
        real = prompts.get("has_target", torch.ones(len(target), dtype=torch.bool)).bool().to(tokens.device)
        if "synthetic" in prompts:
            real = real & ~prompts["synthetic"].bool().to(tokens.device)
        missing = real & ~(tokens == target[:, None, :]).all(-1).any(-1)
        tokens = tokens.clone()
        tokens[missing, -1] = target[missing]
        return tokens

    def _allowed_per_level(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Allowed-token masks of every level for the prefixes of ``flat`` Long[N, L+1]; ValueError on invalid SIDs."""
        nodes = self.trie.root_nodes(flat.shape[0])
        masks = []
        for d in range(self.n_levels):
            masks.append(self.trie.allowed_mask(nodes, d))
            nodes = self.trie.advance(nodes, flat[:, d].cpu(), d)
        bad = nodes < 0
        if bool(bad.any()):
            r = int(bad.nonzero()[0, 0])
            raise ValueError(f"log_probs: {int(bad.sum())} of {flat.shape[0]} token tuples are not catalog items "
                             f"(e.g. {flat[r].tolist()}); the trie-constrained policy gives them probability 0")
        return masks

    def log_probs(self, prompts: dict, tokens: torch.Tensor) -> torch.Tensor:
        """Float[B, G, L+1]: log pi(c_d | c_<d, u) under the trie-constrained softmax (differentiable)."""
        memory, memory_mask = self.model.encode(prompts)
        return self._score(memory, memory_mask, tokens)

    def _score(self, memory: torch.Tensor, memory_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b = memory.shape[0]
        if tokens.dim() != 3 or tokens.shape[0] != b or tokens.shape[2] != self.n_levels:
            raise ValueError(f"tokens must be [B={b}, G, {self.n_levels}], got {tuple(tokens.shape)}")
        g = tokens.shape[1]
        flat = tokens.reshape(b * g, -1).long()
        with torch.no_grad():
            allowed = self._allowed_per_level(flat)
        logits, _ = self.model.decoder_logits(memory, memory_mask, flat)
        lp = [self._masked_log_softmax(lg, allowed[d]).gather(1, flat[:, d : d + 1])[:, 0] for d, lg in enumerate(logits)]
        return torch.stack(lp, 1).view(b, g, -1)

    def items(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(item index Long[...], valid Bool[...]) of token tuples [..., L+1] (item = SID-table row, -1 invalid)."""
        lead = tokens.shape[:-1]
        idx = self.trie.lookup(tokens.reshape(-1, tokens.shape[-1]).long().cpu()).view(lead)
        return idx, idx >= 0


def _best_first(tokens: torch.Tensor, logp: torch.Tensor):
    """(tokens, logp, mask) with each group sorted by the policy's sequence log-prob, best first (stable)."""
    order = logp.sum(-1).argsort(dim=1, descending=True, stable=True)
    tokens = tokens.gather(1, order[..., None].expand_as(tokens))
    logp = logp.gather(1, order[..., None].expand_as(logp))
    return tokens, logp, torch.ones_like(logp)


# ----------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class PromptConfig:
    batch_size: int = 32  # prompts per RL step
    synthetic_share: float = 0.0  # fraction of each step's prompts that are counterfactual (module docstring)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"PromptConfig.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.synthetic_share <= 1.0:
            raise ValueError(f"PromptConfig.synthetic_share must be in [0, 1], got {self.synthetic_share}")

    @property
    def n_synthetic(self) -> int:
        return int(round(self.synthetic_share * self.batch_size))


class PromptSet:
    """Real user contexts (encoded examples) and the step sampler ``prompt_fn(step, generator) -> batch``.

    A batch is the generator's input dict plus ``row`` Long[B] (source example) and ``synthetic`` Bool[B], and
    ``target_sids`` / ``has_target`` (the logged next item) when the encoded examples carry targets."""

    def __init__(self, encoded: Mapping[str, torch.Tensor], n_scenarios: int, config: PromptConfig = PromptConfig()):
        missing = [k for k in ("scenario", "instruction_emb", "has_instruction") if k not in encoded]
        if missing:
            raise ValueError(f"encoded examples are missing {missing}; pass ExampleEncoder.encode(frame)")
        self.tensors = {k: encoded[k] for k in GENERATOR_KEYS if k in encoded}
        if "target_sids" in encoded:  # the logged next item of each prompt (for the verifiable reward)
            self.tensors["target_sids"] = encoded["target_sids"]
            self.tensors["has_target"] = (encoded["target_item"] >= 0 if "target_item" in encoded
                                          else torch.ones(len(encoded["target_sids"]), dtype=torch.bool))
        self.n = int(self.tensors["scenario"].shape[0])
        if self.n == 0:
            raise ValueError("no prompts: the encoded example set is empty")
        if n_scenarios < 1 or int(self.tensors["scenario"].max()) >= n_scenarios:
            raise ValueError(f"n_scenarios={n_scenarios} does not cover scenario id {int(self.tensors['scenario'].max())}")
        self.n_scenarios, self.config = int(n_scenarios), config
        self.donors = torch.nonzero(self.tensors["has_instruction"].bool()).flatten()  # rows with a real instruction

    def __len__(self) -> int:
        return self.n

    def batch(self, rows: torch.Tensor) -> dict:
        """The real prompts of ``rows`` (e.g. a fixed evaluation set)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        out = {k: v[rows] for k, v in self.tensors.items()}
        out["row"], out["synthetic"] = rows, torch.zeros(len(rows), dtype=torch.bool)
        return out

    def counterfactual(self, batch: dict, which: torch.Tensor, generator: torch.Generator) -> dict:
        """Turn rows ``which`` (Bool[B]) of ``batch`` into synthetic prompts: other scenario, donor instruction."""
        out = dict(batch)
        k = int(which.sum())
        if k == 0:
            return out
        scen = out["scenario"].clone()
        if self.n_scenarios > 1:  # s' uniform over the other scenarios
            shift = torch.randint(1, self.n_scenarios, (k,), generator=generator)
            scen[which] = (scen[which] + shift) % self.n_scenarios
        out["scenario"] = scen
        if len(self.donors):
            donor = self.donors[torch.randint(0, len(self.donors), (k,), generator=generator)]
            emb, has = out["instruction_emb"].clone(), out["has_instruction"].clone()
            emb[which] = self.tensors["instruction_emb"][donor]
            has[which] = True
            out["instruction_emb"], out["has_instruction"] = emb, has
            if "instruction_age" in out:  # the donor's instruction comes with its age
                age = out["instruction_age"].clone()
                age[which] = self.tensors["instruction_age"][donor]
                out["instruction_age"] = age
        out["synthetic"] = out["synthetic"] | which
        return out

    def __call__(self, step: int, generator: torch.Generator) -> dict:
        b = self.config.batch_size
        batch = self.batch(torch.randint(0, self.n, (b,), generator=generator))
        which = torch.arange(b) < self.config.n_synthetic
        return self.counterfactual(batch, which, generator)


# ----------------------------------------------------------------------------------------------- reward
def user_context_features(batch: Mapping[str, torch.Tensor], item_features: torch.Tensor, trie: SIDTrie) -> torch.Tensor:
    """user_x Float[B, instruction_dim + d_item] = [instruction * has_instruction, mean item features of the short
    history] (zeros for an empty history; history SIDs outside the catalog are ignored)."""
    emb = batch["instruction_emb"].float() * batch["has_instruction"].float().unsqueeze(-1)
    b = emb.shape[0]
    hist = torch.zeros(b, item_features.shape[1], dtype=item_features.dtype)
    if "short_sids" in batch and batch["short_sids"].shape[1] > 0:
        sids = batch["short_sids"].long().cpu()
        s = sids.shape[1]
        idx = trie.lookup(sids.reshape(b * s, -1)).view(b, s)
        m = batch["short_mask"].bool().cpu() & (idx >= 0)
        feats = item_features[idx.clamp(min=0)] * m.unsqueeze(-1).to(item_features.dtype)  # [B, S, d_item]
        hist = feats.sum(1) / m.sum(1, keepdim=True).clamp(min=1).to(item_features.dtype)
    return torch.cat([emb.cpu(), hist], dim=-1)


def action_labels(actions: Sequence[str] | np.ndarray) -> np.ndarray:
    """Float32[N, 3] click / cart / order labels of logged actions (module docstring); unknown actions raise."""
    a = np.asarray(actions, dtype=object).astype(str)
    known = {"view", "click", "cart", "order"}
    bad = sorted(set(np.unique(a)) - known)
    if bad:
        raise ValueError(f"unknown action(s) {bad[:5]}; expected {sorted(known)}")
    return np.stack([np.isin(a, ("click", "cart", "order")), np.isin(a, ("cart", "order")), a == "order"], 1).astype(np.float32)


def reward_data_from_examples(
    encoded: Mapping[str, torch.Tensor],
    actions: Sequence[str] | np.ndarray,
    item_features: torch.Tensor,
    trie: SIDTrie,
    num_scenarios: int,
    num_negatives: int = 4,
    seed: int = 0,
) -> RewardData:
    """Reward-model rows: each example's (user_x, scenario, target item, action labels) + sampled negatives.
    Examples whose target is not in the catalog (target_item -1) are dropped."""
    if "target_item" not in encoded:
        raise ValueError("encoded examples need 'target_item' (ExampleEncoder.encode(frame, targets=True))")
    target = encoded["target_item"].long().numpy()
    labels = action_labels(actions)
    if len(labels) != len(target):
        raise ValueError(f"{len(labels)} actions for {len(target)} encoded examples")
    keep = target >= 0
    user_x = user_context_features(encoded, item_features, trie).numpy()
    return build_reward_data(
        user_x, item_features.numpy(), np.flatnonzero(keep), target[keep], encoded["scenario"].numpy()[keep],
        labels[keep], num_negatives=num_negatives, seed=seed, num_scenarios=num_scenarios,
    )


def mapping_for_scenarios(
    scenarios: Sequence[str],
    weights: Mapping[str, Mapping[str, float]],
    default: Mapping[str, float],
    invalid_penalty: float = 1.0,
    diversity_bonus: float = 0.0,
) -> RewardMappingConfig:
    """RewardMappingConfig whose scenario order is ``scenarios`` (the generator's scenario ids); scenarios without
    explicit weights use ``default``; weights for scenarios the data does not have are an error."""
    unknown = sorted(set(weights) - set(scenarios))
    if unknown:
        raise ValueError(f"reward weights given for unknown scenario(s) {unknown}; the data has {list(scenarios)}")
    table = {}
    for name in scenarios:
        w = weights.get(name, default)
        bad = set(w) - set(ACTIONS)
        if bad:
            raise ValueError(f"reward weights of {name!r}: unknown actions {sorted(bad)}; expected {ACTIONS}")
        table[str(name)] = tuple(float(w.get(a, 0.0)) for a in ACTIONS)
    return RewardMappingConfig(scenario_weights=table, invalid_penalty=invalid_penalty, diversity_bonus=diversity_bonus)


def make_reward_fn(
    reward_model: RewardModel, mapping: RewardMappingConfig, item_features: torch.Tensor, trie: SIDTrie
) -> UnifiedReward:
    """reward_fn(prompts, tokens [B, G, L+1]) -> [B, G] for the trainer (module docstring)."""
    if reward_model.config.item_dim != item_features.shape[1]:
        raise ValueError(f"reward model expects item features of dim {reward_model.config.item_dim}, got {item_features.shape[1]}")

    def lookup(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = trie.lookup(tokens.reshape(-1, tokens.shape[-1]).long().cpu()).view(tokens.shape[:-1])
        return idx, idx >= 0

    def context(prompts: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return user_context_features(prompts, item_features, trie), prompts["scenario"].long().cpu()

    return UnifiedReward(reward_model, mapping, item_features, lookup, context)


@torch.no_grad()
def expected_reward(
    policy: GeneratorPolicy, prompts: dict, reward_fn, group_size: int = 8, seed: int = 0, batch_size: int = 256
) -> dict:
    """Monte-Carlo mean reward of the policy on fixed prompts, G samples each, in chunks of ``batch_size`` prompts
    (fixed seed: before/after numbers are paired). Returns {"mean", "per_scenario": {scenario id: mean},
    "valid_share", "rewards": Float[B, G]}."""
    gen = torch.Generator().manual_seed(seed)
    n = int(prompts["scenario"].shape[0])
    rewards, valids = [], []
    for start in range(0, n, batch_size):  # loop over prompt chunks (memory), not items
        chunk = {k: v[start : start + batch_size] for k, v in prompts.items() if isinstance(v, torch.Tensor)}
        tokens, _, _ = policy.sample(chunk, group_size, gen)
        rewards.append(torch.as_tensor(reward_fn(chunk, tokens), dtype=torch.float32))
        valids.append(policy.items(tokens)[1])
    r, valid = torch.cat(rewards), torch.cat(valids)
    scen = prompts["scenario"].long().cpu()
    per = {int(s): float(r[scen == s].mean()) for s in torch.unique(scen)}
    return {"mean": float(r.mean()), "per_scenario": per, "valid_share": float(valid.float().mean()), "rewards": r}
