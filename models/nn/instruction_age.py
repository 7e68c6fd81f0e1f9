"""Age of the reasoning instruction -> log-spaced bucket (the generator's ``instruction_age`` input).

The batch carries ``instruction_age`` Float[B]: days between the instruction's ``generated_at`` and the example's
time (training: ``target_timestamp``; serving: the request time). ``NO_AGE`` (-1, or any negative / NaN value)
means "no instruction or unknown age". Buckets (edges in days; the spacing is roughly logarithmic because what
matters is "minutes old, same session" vs "hours" vs "days", not the exact day count):

    0   no instruction / unknown age
    1   [0, 1 min)     2   [1 min, 10 min)   3   [10 min, 1 h)   4   [1 h, 6 h)   5   [6 h, 1 d)
    6   [1 d, 3 d)     7   [3 d, 7 d)        8   [7 d, 14 d)     9   [14 d, 30 d) 10   >= 30 d

Instructions older than ``features.instruction_max_age_days`` (30) are normally dropped upstream, so bucket 10
only sees ages from stores with a longer limit. Comparisons only (no bucketize): the function is traced into
the exported ONNX encoder.
"""

from __future__ import annotations

import torch

__all__ = ["AGE_EDGES_DAYS", "N_AGE_BUCKETS", "NO_AGE", "age_bucket"]

AGE_EDGES_DAYS = (1 / 1440, 10 / 1440, 1 / 24, 6 / 24, 1.0, 3.0, 7.0, 14.0, 30.0)
N_AGE_BUCKETS = len(AGE_EDGES_DAYS) + 2  # + "no instruction" + the bucket below the first edge
NO_AGE = -1.0


def age_bucket(age_days: torch.Tensor, has_instruction: torch.Tensor | None = None) -> torch.Tensor:
    """Long[...] bucket of ``age_days`` Float[...] (module docstring); 0 where the age is negative / NaN or
    ``has_instruction`` (Bool[...], optional) is False."""
    age = age_days.float()
    edges = torch.tensor(AGE_EDGES_DAYS, dtype=age.dtype, device=age.device)
    bucket = 1 + (age[..., None] >= edges).long().sum(-1)
    valid = age >= 0  # False for NaN too
    if has_instruction is not None:
        valid = valid & has_instruction.bool()
    return torch.where(valid, bucket, torch.zeros_like(bucket))
