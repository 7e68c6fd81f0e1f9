"""Group-relative advantages (GRPO / GSPO / SA-GCPO).

For every prompt b the policy draws a group of G samples with rewards R[b, 0..G-1]. The
advantage of sample i is its reward standardised within its own group:

    A[b, i] = (R[b, i] - mean_g R[b, :]) / (std_g R[b, :] + eps)

``std_g`` is the population standard deviation (``unbiased=False``): for G = 2 the two
advantages are then exactly +-R_diff / (|R_diff| + 2 eps) ~ +-1. A group whose rewards are
all equal carries no learning signal and gets A = 0 everywhere.

Group clip (``group_clip``), as one public re-implementation of SA-GCPO reads it:
a sample that beats its group but whose reward is still below an absolute target is not
reinforced, i.e.

    A[b, i] = 0   if A[b, i] > 0 and R[b, i] < group_clip

so a group of uniformly poor samples cannot push the policy towards "the least bad" one.
Negative advantages are left untouched (they still push probability away from bad samples).
"""
from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,
    eps: float = 1e-6,
    group_clip: float | None = None,
    scale: str = "std",
) -> torch.Tensor:
    """Centre (and with ``scale="std"`` standardise) rewards [B, G] within each group (row); return [B, G].

    Raises ValueError for a wrong shape, an unknown ``scale`` or NaN/inf rewards (naming how many).
    """
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape [B, G], got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group size must be >= 2 for group-relative advantages, got G={rewards.shape[1]}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    rewards = rewards.float()
    bad = ~torch.isfinite(rewards)
    if bad.any():
        n_nan = int(torch.isnan(rewards).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"rewards contain {int(bad.sum())} non-finite values ({n_nan} NaN, {n_inf} inf) "
            f"out of {rewards.numel()} in a [B, G] = {list(rewards.shape)} tensor"
        )
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    adv = (rewards - mean) / (std + eps) if scale == "std" else rewards - mean
    # Equal rewards: force exact zeros (float rounding of the mean would leave ~1e-3 noise / eps).
    flat = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)
    adv = torch.where(flat, torch.zeros_like(adv), adv)
    if group_clip is not None:
        adv = torch.where((adv > 0) & (rewards < group_clip), torch.zeros_like(adv), adv)
    return adv
