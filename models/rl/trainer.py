"""Group-sampled policy optimisation (GRPO / GSPO / SA-GCPO) for a sequence-generating policy.

One step t = 0..steps-1:
    prompts             = prompt_fn(t, generator)
    tokens, logp_old, m = policy.sample(prompts, G, generator)           (no grad; [B, G, T] each)
    R                   = reward_fn(prompts, tokens)                       ([B, G]; must be finite)
    A                   = group_advantages(R, group_clip, adv_scale)  (advantages.py)
    logp_ref            = reference.log_probs(prompts, tokens)             (frozen copy of the initial policy)
    repeat ppo_epochs:  logp = policy.log_probs(prompts, tokens)
                        loss = policy_loss(algorithm, logp, logp_old, logp_ref, m, A)   (objectives.py)
                        clip grad-norm to max_grad_norm; AdamW step
    kl_after            = mean_tok k3(policy.log_probs(prompts, tokens), logp_ref)  after the update

History record per step: reward_mean/std/max, adv_zero_frac, loss, pg_loss, kl (pre-update, from the
last epoch's loss), kl_after, entropy (Monte-Carlo per-token entropy estimate -mean_tok logp_old of
the sampled tokens), ratio_mean, clip_frac (+ gate_mean/gate_min for SA-GCPO), grad_norm (pre-clip,
last epoch), the reward function's ``stats`` of the step when it has any (MixedReward: reward_learned,
group_hit_share), stopped_reason (None except on the last record: "steps_done" or "kl_stop").

Faults: non-finite rewards, a non-finite loss or a non-finite gradient norm restore the policy to the
state it had at the start of the step (the last good state, after the previous step's updates) and
raise ``RLTrainingError``. ``kl_after > kl_stop`` ends training with stopped_reason "kl_stop" (the
step's update is kept; it is reported, not undone).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from .advantages import group_advantages
from .objectives import k3_kl, make_loss_config, masked_mean, policy_loss


class RLTrainingError(RuntimeError):
    """RL training hit a fault (non-finite reward/loss/gradient); the policy was restored first."""


@runtime_checkable
class Policy(Protocol):
    """What the trainer needs from a generator policy (an nn.Module in practice).

    ``sample`` and ``log_probs`` must score tokens under the same distribution: with trie-constrained
    decoding both use the constrained, renormalised softmax, so that on-policy ratios are exactly 1.
    Padded / unused positions have mask 0.
    """

    def sample(
        self, prompts: Any, group_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> tokens [B, G, T] long, logp [B, G, T] (per-token log-probs of the sampled tokens), mask [B, G, T]."""
        ...

    def log_probs(self, prompts: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token log-probs [B, G, T] of the given tokens, differentiable."""
        ...

    def parameters(self, recurse: bool = True): ...

    def state_dict(self, *args, **kwargs) -> dict: ...

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False): ...


RewardFn = Callable[[Any, torch.Tensor], torch.Tensor]
PromptFn = Callable[[int, torch.Generator], Any]


@dataclass(frozen=True)
class RLConfig:
    algorithm: str = "sagcpo"  # "grpo" | "gspo" | "sagcpo"
    group_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 0.0
    beta: float = 0.04  # KL(pi || pi_ref) weight
    eps_low: float | None = None  # None: the algorithm's default (GRPO 0.2/0.2, GSPO 3e-4/4e-4)
    eps_high: float | None = None
    tau_pos: float = 1.0  # SA-GCPO gate temperatures
    tau_neg: float = 1.05
    group_clip: float | None = None  # SA-GCPO group clip (advantages.py); None = off
    adv_eps: float = 1e-6
    adv_scale: str = "std"  # "std": (R - mean) / std per group (GRPO); "none": R - mean (advantages.py)
    ppo_epochs: int = 1
    max_grad_norm: float = 1.0
    steps: int = 100
    seed: int = 0
    kl_stop: float | None = None  # stop when the post-update KL exceeds this

    def __post_init__(self) -> None:
        if self.algorithm not in ("grpo", "gspo", "sagcpo"):
            raise ValueError(f"RLConfig.algorithm must be 'grpo', 'gspo' or 'sagcpo', got {self.algorithm!r}")
        for name in ("group_size", "ppo_epochs", "steps"):
            if getattr(self, name) < (2 if name == "group_size" else 1):
                raise ValueError(f"RLConfig.{name} too small: {getattr(self, name)}")
        if self.adv_scale not in ("std", "none"):
            raise ValueError(f"RLConfig.adv_scale must be 'std' or 'none', got {self.adv_scale!r}")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError(f"lr and max_grad_norm must be > 0, got {self.lr}, {self.max_grad_norm}")
        self.loss_config()  # validates eps/tau/beta early

    def loss_config(self):
        if self.algorithm == "sagcpo":
            return make_loss_config("sagcpo", tau_pos=self.tau_pos, tau_neg=self.tau_neg, beta=self.beta)
        return make_loss_config(self.algorithm, eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta)


class GroupPolicyTrainer:
    """Holds policy, frozen reference, optimizer and generator; `step` runs one RL step, `fit` many."""

    def __init__(self, policy: Policy, reward_fn: RewardFn, config: RLConfig, reference: Policy | None = None):
        if not isinstance(policy, Policy):
            raise TypeError(f"policy {type(policy).__name__} does not implement the Policy protocol")
        self.policy, self.reward_fn, self.config = policy, reward_fn, config
        self.reference = copy.deepcopy(policy) if reference is None else reference
        for p in self.reference.parameters():
            p.requires_grad_(False)
        if hasattr(self.reference, "eval"):
            self.reference.eval()
        self.params = [p for p in policy.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.loss_config = config.loss_config()
        self.history: list[dict] = []

    def _fail(self, good_state: dict, message: str) -> None:
        self.policy.load_state_dict(good_state)
        self.optimizer.zero_grad(set_to_none=True)
        raise RLTrainingError(message + " (policy restored to the last good state)")

    def step(self, prompts: Any) -> dict:
        cfg, step_idx = self.config, len(self.history)
        good_state = copy.deepcopy(self.policy.state_dict())  # last good state = start of this step
        with torch.no_grad():
            tokens, logp_old, mask = self.policy.sample(prompts, cfg.group_size, self.generator)
        if tokens.ndim != 3 or tokens.shape[1] != cfg.group_size:
            raise ValueError(f"policy.sample returned tokens {tuple(tokens.shape)}, expected [B, {cfg.group_size}, T]")
        logp_old, mask = logp_old.detach(), mask.detach()

        rewards = self.reward_fn(prompts, tokens)
        rewards = torch.as_tensor(rewards, dtype=torch.float32)
        if rewards.shape != tokens.shape[:2]:
            raise ValueError(f"reward_fn returned shape {tuple(rewards.shape)}, expected [B, G] = {tuple(tokens.shape[:2])}")
        n_bad = int((~torch.isfinite(rewards)).sum())
        if n_bad:
            self._fail(good_state, f"step {step_idx}: reward_fn returned {n_bad} non-finite rewards of {rewards.numel()}")
        adv = group_advantages(rewards, eps=cfg.adv_eps, group_clip=cfg.group_clip, scale=cfg.adv_scale)
        with torch.no_grad():
            logp_ref = self.reference.log_probs(prompts, tokens).detach()

        for epoch in range(cfg.ppo_epochs):
            logp = self.policy.log_probs(prompts, tokens)
            loss, stats = policy_loss(cfg.algorithm, logp, logp_old, logp_ref, mask, adv, self.loss_config)
            if not torch.isfinite(loss):
                self._fail(good_state, f"step {step_idx} epoch {epoch}: non-finite {cfg.algorithm} loss {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)  # pre-clip norm
            if not torch.isfinite(grad_norm):
                self._fail(good_state, f"step {step_idx} epoch {epoch}: non-finite gradient norm {grad_norm.item()}")
            self.optimizer.step()

        with torch.no_grad():
            kl_after = masked_mean(k3_kl(self.policy.log_probs(prompts, tokens), logp_ref), mask).item()
        if not math.isfinite(kl_after):
            self._fail(good_state, f"step {step_idx}: non-finite KL after the update")
        rec = {
            "step": step_idx,
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std(unbiased=False).item(),
            "reward_max": rewards.max().item(),
            "adv_zero_frac": (adv == 0).float().mean().item(),
            **stats,
            "kl_after": kl_after,
            "entropy": -masked_mean(logp_old, mask).item(),
            "grad_norm": grad_norm.item(),
            **dict(getattr(self.reward_fn, "stats", None) or {}),  # e.g. MixedReward: learned part, group hit share
            "stopped_reason": None,
        }
        self.history.append(rec)
        return rec

    def fit(self, prompt_fn: PromptFn, on_step: Callable[[dict], None] | None = None) -> list[dict]:
        """Run up to config.steps steps; return the history (last record carries stopped_reason)."""
        cfg = self.config
        for _ in range(cfg.steps):
            rec = self.step(prompt_fn(len(self.history), self.generator))
            if on_step is not None:
                on_step(rec)
            if cfg.kl_stop is not None and rec["kl_after"] > cfg.kl_stop:
                rec["stopped_reason"] = "kl_stop"
                rec["stop_message"] = f"kl_after={rec['kl_after']:.4g} > kl_stop={cfg.kl_stop:.4g} at step {rec['step']}"
                return self.history
        if self.history:
            self.history[-1]["stopped_reason"] = "steps_done"
        return self.history


def train_policy(
    policy: Policy,
    reward_fn: RewardFn,
    prompt_fn: PromptFn,
    config: RLConfig,
    reference: Policy | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Convenience wrapper: GroupPolicyTrainer(policy, reward_fn, config, reference).fit(prompt_fn)."""
    return GroupPolicyTrainer(policy, reward_fn, config, reference).fit(prompt_fn, on_step)
