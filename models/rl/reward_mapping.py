"""Unified reward mapping: ranking-model probabilities -> one scalar reward per generated item.

One policy serves every scenario; the scenario only changes how the three predicted actions are
weighed (OxygenREC's "unified reward mapping"). For prompt b in scenario s_b and sample g:

    R[b, g] = sum_k w[s_b, k] * p[b, g, k]                       k in (click, cart, order)
            + bonus * D[b, g]                                     (optional diversity bonus)
    R[b, g] = -invalid_penalty                if the generated SID is not a real item

    D[b, g] = #{h != g valid in group b : top[b, h] != top[b, g]} / max(#{h != g valid}, 1)

i.e. the share of the other valid samples of the group whose top-level SID code differs (1 when the
item's top-level category is unique in its group, 0 when all others share it). Invalid samples get
no bonus and do not count as "others". Everything is vectorised over [B, G] (the bonus uses a
[B, G, G] comparison, fine for group sizes of a few hundred).

Config from a dict (e.g. YAML):
    {"scenarios": {"homepage": {"click": 1.0, "cart": 0.3, "order": 0.3}, ...},
     "invalid_penalty": 1.0, "diversity_bonus": 0.05}
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .reward_model import ACTIONS, RewardModel

# homepage/feed favour engagement (click), cart/checkout favour conversion (order)
DEFAULT_SCENARIO_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "homepage": (1.0, 0.3, 0.3),
    "feed": (1.0, 0.5, 0.5),
    "cart": (0.2, 0.5, 1.0),
    "checkout": (0.1, 0.3, 1.0),
}


@dataclass(frozen=True)
class RewardMappingConfig:
    scenario_weights: Mapping[str, tuple[float, float, float]] = field(
        default_factory=lambda: dict(DEFAULT_SCENARIO_WEIGHTS)
    )
    invalid_penalty: float = 1.0
    diversity_bonus: float = 0.0

    def __post_init__(self) -> None:
        if not self.scenario_weights:
            raise ValueError("scenario_weights is empty")
        for name, w in self.scenario_weights.items():
            if len(w) != len(ACTIONS):
                raise ValueError(f"scenario {name!r}: need {len(ACTIONS)} weights {ACTIONS}, got {w}")
        if self.invalid_penalty < 0 or self.diversity_bonus < 0:
            raise ValueError(
                f"invalid_penalty and diversity_bonus must be >= 0, got {self.invalid_penalty}, {self.diversity_bonus}"
            )

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "RewardMappingConfig":
        """Scenario weights as {name: {"click": w, "cart": w, "order": w}} (missing actions = 0) or [w, w, w]."""
        unknown_keys = set(cfg) - {"scenarios", "invalid_penalty", "diversity_bonus"}
        if unknown_keys:
            raise ValueError(f"unknown reward-mapping keys: {sorted(unknown_keys)}")
        weights = {}
        for name, w in dict(cfg.get("scenarios", DEFAULT_SCENARIO_WEIGHTS)).items():
            if isinstance(w, Mapping):
                bad = set(w) - set(ACTIONS)
                if bad:
                    raise ValueError(f"scenario {name!r}: unknown actions {sorted(bad)}; expected {ACTIONS}")
                weights[str(name)] = tuple(float(w.get(a, 0.0)) for a in ACTIONS)
            else:
                weights[str(name)] = tuple(float(x) for x in w)
        return cls(
            scenario_weights=weights,
            invalid_penalty=float(cfg.get("invalid_penalty", 1.0)),
            diversity_bonus=float(cfg.get("diversity_bonus", 0.0)),
        )

    @property
    def scenario_names(self) -> tuple[str, ...]:
        """Scenario order defining integer scenario ids."""
        return tuple(self.scenario_weights)

    def weight_matrix(self) -> torch.Tensor:
        return torch.tensor([self.scenario_weights[n] for n in self.scenario_names], dtype=torch.float32)

    def scenario_ids(self, scenarios: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Names (or already-integer ids) -> LongTensor [B]; unknown names/ids raise ValueError naming them."""
        names = self.scenario_names
        if isinstance(scenarios, torch.Tensor):
            ids = scenarios.long().flatten()
            bad = ids[(ids < 0) | (ids >= len(names))]
            if bad.numel():
                raise ValueError(f"unknown scenario id(s) {sorted(set(bad.tolist()))}; known: 0..{len(names) - 1} = {names}")
            return ids
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({s for s in scenarios if s not in index})
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; known: {list(names)}")
        return torch.tensor([index[s] for s in scenarios], dtype=torch.long)


def diversity_share(top_codes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """D[b, g]: share of the other valid group members whose top-level code differs from g's ([B, G])."""
    same = top_codes.unsqueeze(-1) == top_codes.unsqueeze(-2)  # [B, G, G]
    pair_valid = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    same_others = (same & pair_valid).sum(-1) - valid.long()  # drop the self-match
    n_others = valid.sum(-1, keepdim=True) - valid.long()  # [B, G]
    share = (n_others - same_others).float() / n_others.clamp(min=1).float()
    return torch.where(valid & (n_others > 0), share, torch.zeros_like(share))


def map_rewards(
    probs: torch.Tensor,
    scenarios: Sequence[str] | torch.Tensor,
    config: RewardMappingConfig,
    valid: torch.Tensor | None = None,
    top_codes: torch.Tensor | None = None,
) -> torch.Tensor:
    """probs [B, G, 3] (click, cart, order), scenarios [B] -> rewards [B, G] (see module docstring)."""
    if probs.ndim != 3 or probs.shape[-1] != len(ACTIONS):
        raise ValueError(f"probs must have shape [B, G, {len(ACTIONS)}], got {tuple(probs.shape)}")
    b, g, _ = probs.shape
    ids = config.scenario_ids(scenarios)
    if ids.shape != (b,):
        raise ValueError(f"need one scenario per prompt: got {tuple(ids.shape)} for B={b}")
    valid = torch.ones(b, g, dtype=torch.bool) if valid is None else valid.bool()
    if valid.shape != (b, g):
        raise ValueError(f"valid must have shape [B, G] = {(b, g)}, got {tuple(valid.shape)}")
    w = config.weight_matrix().to(probs.device, probs.dtype)[ids.to(probs.device)]  # [B, 3]
    reward = (probs * w.unsqueeze(1)).sum(-1)
    if config.diversity_bonus > 0:
        if top_codes is None:
            raise ValueError("diversity_bonus > 0 needs top_codes [B, G]")
        if top_codes.shape != (b, g):
            raise ValueError(f"top_codes must have shape [B, G] = {(b, g)}, got {tuple(top_codes.shape)}")
        reward = reward + config.diversity_bonus * diversity_share(top_codes, valid).to(reward.dtype)
    return torch.where(valid, reward, torch.full_like(reward, -config.invalid_penalty))


class UnifiedReward:
    """reward_fn(prompts, tokens) -> [B, G] for the RL trainer: ranking model + reward mapping.

    ``lookup(tokens [B, G, T]) -> (item_idx [B, G] long, valid [B, G] bool)`` maps generated SIDs to
    catalog rows (invalid SIDs may carry any index); ``context(prompts) -> (user_x [B, du],
    scenario ids [B] long or names)`` extracts the user features and scenario of each prompt. The top-level
    code for the diversity bonus is ``tokens[..., top_level_position]``.
    """

    def __init__(
        self,
        model: RewardModel,
        config: RewardMappingConfig,
        item_features: torch.Tensor,
        lookup: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        context: Callable[[Any], tuple[torch.Tensor, Sequence[str] | torch.Tensor]],
        top_level_position: int = 0,
    ):
        if model.config.num_scenarios < len(config.scenario_names):
            raise ValueError(
                f"reward model knows {model.config.num_scenarios} scenarios, mapping has {len(config.scenario_names)}"
            )
        self.model, self.config, self.item_features = model, config, item_features
        self.lookup, self.context, self.top_level_position = lookup, context, top_level_position

    @torch.no_grad()
    def __call__(self, prompts: Any, tokens: torch.Tensor) -> torch.Tensor:
        item_idx, valid = self.lookup(tokens)
        user_x, scenarios = self.context(prompts)
        ids = self.config.scenario_ids(scenarios)
        safe_idx = torch.where(valid, item_idx, torch.zeros_like(item_idx))  # invalid rows: any real item, masked later
        probs = self.model.predict_proba(user_x.unsqueeze(1), ids.unsqueeze(1), self.item_features[safe_idx])
        return map_rewards(probs, ids, self.config, valid, tokens[..., self.top_level_position])
