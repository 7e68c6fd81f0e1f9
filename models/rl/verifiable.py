"""The RL reward: a verifiable part from logged next items beside the learned reward model's part.

For a prompt u with a logged next item t (a *training-split* target: never a validation or test event) and a
group of G candidate items y_1..y_G ordered by the policy's sequence log-prob (best first, rank rho = 1..G):

    m(y)        = number of leading SID codes y shares with t                     (0 .. L+1)
    hit(y)      = 1[m(y) = L+1]                                                   (y is the logged item)
    rule(y)     = hit(y) + prefix_credit * (1 - hit(y)) * m(y) / (L+1)             (partial credit for the prefix)
    rank(y)     = -rank_penalty * (1 - hit(y)) * g(rho) / sum_{k=1..G} g(k),   g(rho) = 1 / log2(rho + 1)
    R_verif(y)  = rule(y) + rank(y)

The rank term is the rank-aware penalty for hard negatives: a wrong item the policy ranks first costs the most
(the same shape as an NDCG discount), so the update moves probability from confident mistakes to the logged item
and to items that share its prefix. Public generative-recommendation RL (e.g. MiniOneRec's rule + ranking rewards)
uses this combination with beam-search groups.

The learned part R_learned(y) is the unified reward model's scenario-weighted P(click / cart / order)
(:mod:`models.rl.reward_mapping`). The reward the trainer optimises is

    R(y) = learned_weight * R_learned(y) + verifiable_weight * R_verif(y)

where a prompt without a logged item (a counterfactual, synthetic prompt, or an example whose target is not in
the catalog) gets R_verif = 0. Group-relative advantages (advantages.py) remove each prompt's mean, so only the
differences between a group's candidates matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["RewardMix", "MixedReward", "verifiable_rewards"]


@dataclass(frozen=True)
class RewardMix:
    learned_weight: float = 1.0
    verifiable_weight: float = 1.0
    prefix_credit: float = 0.5
    rank_penalty: float = 0.5

    def __post_init__(self) -> None:
        for name in ("learned_weight", "verifiable_weight", "prefix_credit", "rank_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardMix.{name} must be >= 0, got {getattr(self, name)}")
        if self.learned_weight == 0 and self.verifiable_weight == 0:
            raise ValueError("RewardMix: learned_weight and verifiable_weight cannot both be 0")
        if self.prefix_credit >= 1:
            raise ValueError(f"RewardMix.prefix_credit must be < 1 (a hit is worth 1), got {self.prefix_credit}")


def verifiable_rewards(tokens: torch.Tensor, targets: torch.Tensor, has_target: torch.Tensor,
                       mix: RewardMix = RewardMix()) -> torch.Tensor:
    """R_verif Float[B, G] (module docstring) of candidates ``tokens`` Long[B, G, L+1] (best first in each group)
    against ``targets`` Long[B, L+1]; rows with ``has_target`` False get 0."""
    if tokens.dim() != 3 or targets.dim() != 2 or targets.shape != (tokens.shape[0], tokens.shape[2]):
        raise ValueError(f"tokens must be [B, G, L+1] and targets [B, L+1], got {tuple(tokens.shape)} and "
                         f"{tuple(targets.shape)}")
    b, g, n_levels = tokens.shape
    same = tokens.long() == targets.long()[:, None, :]
    matched = same.long().cumprod(-1).sum(-1).float()  # leading codes in common
    hit = (matched == n_levels).float()
    rule = hit + mix.prefix_credit * (1 - hit) * matched / n_levels
    discount = 1.0 / torch.log2(torch.arange(2, g + 2, dtype=torch.float32))
    rank = -mix.rank_penalty * (1 - hit) * (discount / discount.sum())[None, :]
    return torch.where(has_target.bool()[:, None], rule + rank, torch.zeros(b, g))


class MixedReward:
    """``reward_fn(prompts, tokens) -> [B, G]`` of the trainer: the mix of the module docstring.

    ``learned``: the learned reward function (or None when ``mix.learned_weight`` is 0). Prompts carry
    ``target_sids`` [B, L+1] and ``has_target`` [B] (real training prompts); a ``synthetic`` flag [B] marks
    counterfactual prompts, which have no logged item."""

    def __init__(self, learned: Callable[[Any, torch.Tensor], torch.Tensor] | None, mix: RewardMix = RewardMix()):
        if learned is None and mix.learned_weight > 0:
            raise ValueError("MixedReward: learned_weight > 0 needs a learned reward function")
        self.learned, self.mix = learned, mix
        self.stats: dict[str, float] = {}  # of the last call; the trainer copies them into its step record

    def __call__(self, prompts: dict, tokens: torch.Tensor) -> torch.Tensor:
        b, g = tokens.shape[:2]
        reward = torch.zeros(b, g)
        self.stats = {}
        if self.mix.learned_weight > 0 or self.learned is not None:
            learned = torch.as_tensor(self.learned(prompts, tokens), dtype=torch.float32).cpu()
            reward = reward + self.mix.learned_weight * learned
            self.stats["reward_learned"] = float(learned.mean())
        if "target_sids" in prompts:
            has = prompts.get("has_target", torch.ones(b, dtype=torch.bool)).bool().cpu()
            if "synthetic" in prompts:
                has = has & ~prompts["synthetic"].bool().cpu()
            hit = (tokens.cpu().long() == prompts["target_sids"].cpu().long()[:, None, :]).all(-1).any(-1)
            # share of the real prompts whose group holds the logged item (the verifiable signal's reach)
            self.stats["group_hit_share"] = float(hit[has].float().mean()) if bool(has.any()) else 0.0
            if self.mix.verifiable_weight > 0:
                verif = verifiable_rewards(tokens.cpu(), prompts["target_sids"].cpu(), has, self.mix)
                reward = reward + self.mix.verifiable_weight * verif
        return reward
