"""Policy-gradient objectives for group-sampled sequences: GRPO, GSPO and SA-GCPO.

Shapes: ``logp``, ``logp_old``, ``logp_ref``, ``mask`` are [B, G, T] (B prompts, G samples per
prompt, T tokens per sample, e.g. the L+1 semantic-ID tokens of an item); ``adv`` is [B, G].
``logp`` carries the gradient (current policy), ``logp_old`` is the sampling policy (detached),
``logp_ref`` the frozen SFT reference (detached). N = sum(mask), and the masked token mean is

    mean_tok(x) = sum_{b,g,t} mask * x / N                  ("token-mean" aggregation, as in DAPO)

Log-ratios are clamped to [-C, C] with C = ``LOG_RATIO_CLAMP`` = 20 before ``exp`` so that extreme
ratios (1e-6, 1e6, or worse) give finite values and gradients (zero gradient beyond the clamp).

KL penalty (k3 estimator of KL(pi || pi_ref), Schulman 2020; unbiased, always >= 0), per token:

    d = clamp(logp_ref - logp, -C, C)
    KL = mean_tok( exp(d) - d - 1 )                          (= 0 iff logp == logp_ref)

GRPO (PPO hard clip at token level), r = exp(clamp(logp - logp_old)):

    L = -mean_tok( min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) ) + beta * KL
    clip_frac = share of valid tokens where the clipped branch is active and has zero gradient,
                i.e. (r > 1 + eps_high and A > 0) or (r < 1 - eps_low and A < 0).

GSPO (Zheng et al. 2025, sequence-level, length-normalised ratio):

    s_i = exp( clamp( sum_t mask * (logp - logp_old) / sum_t mask ) )
    L = -mean_seq( min(s_i * A_i, clip(s_i, 1 - eps_low, 1 + eps_high) * A_i) ) + beta * KL
    mean_seq runs over the sequences with at least one valid token; default eps = (3e-4, 4e-4).

SA-GCPO (soft adaptive gate from SAPO, Gao et al. 2025, used by OxygenREC): the hard clip is
replaced by a smooth sigmoid gate of the token ratio,

    f_tau(r) = sigmoid(tau * (r - 1)) * 4 / tau            f(1) = 2 / tau
    f'_tau(r) = 4 * sigmoid * (1 - sigmoid)               f'(1) = 1, decays smoothly away from r = 1
    tau = tau_pos where A > 0, tau_neg where A <= 0 (tau_neg >= tau_pos: negative samples, whose
          ratios can blow up, are damped faster; defaults 1.0 / 1.05 from SAPO)
    L = -mean_tok( f_tau(r) * A ) + beta * KL

so d L / d logp_t = -(4 sigma (1 - sigma)) * r * A * mask_t / N, which equals -A * mask_t / N on-policy
(r = 1), i.e. exactly the vanilla policy gradient there. The "group clip" part of SA-GCPO lives in
``advantages.group_advantages(group_clip=...)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

LOG_RATIO_CLAMP = 20.0


@dataclass(frozen=True)
class GRPOConfig:
    eps_low: float = 0.2
    eps_high: float = 0.2
    beta: float = 0.04  # KL weight (DeepSeekMath GRPO default)

    def __post_init__(self) -> None:
        _check_eps(self.eps_low, self.eps_high, self.beta)


@dataclass(frozen=True)
class GSPOConfig:
    eps_low: float = 3e-4  # GSPO paper: sequence ratios live very close to 1
    eps_high: float = 4e-4
    beta: float = 0.04

    def __post_init__(self) -> None:
        _check_eps(self.eps_low, self.eps_high, self.beta)


@dataclass(frozen=True)
class SAGCPOConfig:
    tau_pos: float = 1.0  # SAPO defaults
    tau_neg: float = 1.05
    beta: float = 0.04

    def __post_init__(self) -> None:
        if not (self.tau_pos > 0 and self.tau_neg > 0):
            raise ValueError(f"tau_pos and tau_neg must be > 0, got {self.tau_pos}, {self.tau_neg}")
        if self.tau_neg < self.tau_pos:
            raise ValueError(f"tau_neg ({self.tau_neg}) must be >= tau_pos ({self.tau_pos})")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


LossConfig = Union[GRPOConfig, GSPOConfig, SAGCPOConfig]
CONFIGS: dict[str, type] = {"grpo": GRPOConfig, "gspo": GSPOConfig, "sagcpo": SAGCPOConfig}


def _check_eps(eps_low: float, eps_high: float, beta: float) -> None:
    if not (0 < eps_low < 1) or eps_high <= 0:
        raise ValueError(f"need 0 < eps_low < 1 and eps_high > 0, got eps_low={eps_low}, eps_high={eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")


# ----------------------------------------------------------------------------- helpers


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(mask * x) / max(sum(mask), 1)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def safe_ratio(logp: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """exp(clamp(logp - logp_old, -C, C)): finite for any finite inputs."""
    return torch.exp((logp - logp_old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(d) - d - 1 with d = clamp(ref - logp)."""
    d = (logp_ref - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.exp(d) - d - 1.0


def sequence_ratio(logp: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO ratio s = exp(clamp(sum_t mask (logp - logp_old) / max(sum_t mask, 1))): [B, G]."""
    m = mask.to(logp.dtype)
    mean_log_ratio = ((logp - logp_old) * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    return torch.exp(mean_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def sigmoid_gate(ratio: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """SAPO soft gate f(r) = sigmoid(tau (r - 1)) * 4 / tau."""
    return torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)


def _check_inputs(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor | None,
    mask: torch.Tensor,
    adv: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    if logp.ndim != 3:
        raise ValueError(f"logp must have shape [B, G, T], got {tuple(logp.shape)}")
    named = {"logp_old": logp_old, "mask": mask} | ({} if logp_ref is None else {"logp_ref": logp_ref})
    for name, t in named.items():
        if t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logp.shape)} like logp")
    if adv.shape != logp.shape[:2]:
        raise ValueError(f"advantages have shape {tuple(adv.shape)}, expected [B, G] = {tuple(logp.shape[:2])}")
    if logp_ref is None and beta > 0:
        raise ValueError(f"logp_ref is None but beta={beta} > 0 needs the reference log-probs")
    return mask.to(logp.dtype)


def _kl_term(logp, logp_ref, mask, beta) -> tuple[torch.Tensor, torch.Tensor]:
    if logp_ref is None:
        zero = logp.new_zeros(())
        return zero, zero
    kl = masked_mean(k3_kl(logp, logp_ref.detach()), mask)
    return beta * kl, kl


# ----------------------------------------------------------------------------- objectives


def grpo_loss(logp, logp_old, logp_ref, mask, adv, cfg: GRPOConfig = GRPOConfig()):
    """Token-level PPO-clip objective + beta * k3 KL. Returns (loss, stats)."""
    m = _check_inputs(logp, logp_old, logp_ref, mask, adv, cfg.beta)
    a = adv.detach().to(logp.dtype).unsqueeze(-1)  # [B, G, 1]
    r = safe_ratio(logp, logp_old.detach())
    clipped = r.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    pg = -masked_mean(torch.minimum(r * a, clipped * a), m)
    kl_loss, kl = _kl_term(logp, logp_ref, m, cfg.beta)
    loss = pg + kl_loss
    with torch.no_grad():
        is_clipped = ((r > 1.0 + cfg.eps_high) & (a > 0)) | ((r < 1.0 - cfg.eps_low) & (a < 0))
        stats = {
            "loss": loss.item(),
            "pg_loss": pg.item(),
            "kl": kl.item(),
            "ratio_mean": masked_mean(r, m).item(),
            "clip_frac": masked_mean(is_clipped.to(r.dtype), m).item(),
        }
    return loss, stats


def gspo_loss(logp, logp_old, logp_ref, mask, adv, cfg: GSPOConfig = GSPOConfig()):
    """Sequence-level length-normalised ratio with PPO clip + beta * k3 KL. Returns (loss, stats)."""
    m = _check_inputs(logp, logp_old, logp_ref, mask, adv, cfg.beta)
    a = adv.detach().to(logp.dtype)  # [B, G]
    s = sequence_ratio(logp, logp_old.detach(), m)  # [B, G]
    clipped = s.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    valid_seq = (m.sum(-1) > 0).to(logp.dtype)
    pg = -masked_mean(torch.minimum(s * a, clipped * a), valid_seq)
    kl_loss, kl = _kl_term(logp, logp_ref, m, cfg.beta)
    loss = pg + kl_loss
    with torch.no_grad():
        is_clipped = ((s > 1.0 + cfg.eps_high) & (a > 0)) | ((s < 1.0 - cfg.eps_low) & (a < 0))
        stats = {
            "loss": loss.item(),
            "pg_loss": pg.item(),
            "kl": kl.item(),
            "ratio_mean": masked_mean(s, valid_seq).item(),
            "clip_frac": masked_mean(is_clipped.to(s.dtype), valid_seq).item(),
        }
    return loss, stats


def sagcpo_loss(logp, logp_old, logp_ref, mask, adv, cfg: SAGCPOConfig = SAGCPOConfig()):
    """Soft sigmoid-gated token objective with asymmetric temperatures + beta * k3 KL."""
    m = _check_inputs(logp, logp_old, logp_ref, mask, adv, cfg.beta)
    a = adv.detach().to(logp.dtype).unsqueeze(-1)  # [B, G, 1]
    tau = torch.where(a > 0, cfg.tau_pos, cfg.tau_neg).to(logp.dtype)  # [B, G, 1]
    r = safe_ratio(logp, logp_old.detach())
    pg = -masked_mean(sigmoid_gate(r, tau) * a, m)
    kl_loss, kl = _kl_term(logp, logp_ref, m, cfg.beta)
    loss = pg + kl_loss
    with torch.no_grad():
        sig = torch.sigmoid(tau * (r - 1.0))
        weight = 4.0 * sig * (1.0 - sig)  # f'(r): the soft gate on the policy gradient, 1 at r = 1
        big = torch.finfo(weight.dtype).max
        stats = {
            "loss": loss.item(),
            "pg_loss": pg.item(),
            "kl": kl.item(),
            "ratio_mean": masked_mean(r, m).item(),
            "gate_mean": masked_mean(weight, m).item(),
            "gate_min": torch.where(m > 0, weight, big).min().item() if m.any() else 1.0,
            # tokens whose gradient the gate has at least halved: the soft analogue of clip_frac
            "clip_frac": masked_mean((weight < 0.5).to(r.dtype), m).item(),
        }
    return loss, stats


_LOSSES = {"grpo": grpo_loss, "gspo": gspo_loss, "sagcpo": sagcpo_loss}


def make_loss_config(name: str, **overrides) -> LossConfig:
    """Config for algorithm `name` with keyword overrides (None values keep the defaults)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown policy loss {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name](**{k: v for k, v in overrides.items() if v is not None})


def policy_loss(
    name: str,
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor | None,
    mask: torch.Tensor,
    adv: torch.Tensor,
    config: LossConfig | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Dispatch to grpo_loss / gspo_loss / sagcpo_loss; returns (scalar loss, stats dict)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; expected one of {sorted(_LOSSES)}")
    cfg = CONFIGS[name]() if config is None else config
    if not isinstance(cfg, CONFIGS[name]):
        raise ValueError(f"policy loss {name!r} needs a {CONFIGS[name].__name__}, got {type(cfg).__name__}")
    return _LOSSES[name](logp, logp_old, logp_ref, mask, adv, cfg)
