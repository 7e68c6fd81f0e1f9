"""Unified ranking model used as the RL reward: P(click), P(add-to-cart), P(order) for
(user context features, scenario, item features).

Architecture (one model for every scenario, as in OxygenREC's unified reward):

    pu = W_u x_user + b_u,  pv = W_i x_item + b_i          (both projected to d = hidden_dim)
    es = E[scenario]                                       (scenario embedding, scenario_dim)
    h  = MLP([pu, es, pv, pu * pv])                         (ReLU MLP, ``mlp_layers`` hidden layers)
    z  = W_o h + b_o  in R^3                                (logits of click / cart / order)
    p_k = sigmoid(a_k z_k + c_k)                            (a, c: calibration, identity until fitted)

Training: mean over rows and heads of BCE(z, y) with y in {0, 1}^3, AdamW, mini-batches shuffled by a
seeded generator. Rows come from logged impressions plus sampled negatives (random items for the
same user and scenario, labels (0, 0, 0); items the user interacted with are avoided).

Calibration on a held-out split, per head, by minimising BCE with L-BFGS:
    "temperature":  a_k = 1 / T_k (T_k = exp(t_k) > 0), c_k = 0
    "platt":        a_k, c_k free
A head whose held-out labels are all equal keeps the identity.

Metrics: ROC-AUC by ranks with ties averaged,
    AUC = (sum of positive ranks - P (P + 1) / 2) / (P * Q)   (P positives, Q negatives; NaN if P or Q = 0)
and log-loss = -mean(y log p + (1 - y) log(1 - p)) with p clipped to [1e-7, 1 - 1e-7].
Checkpoints hold {"config": dict, "state_dict": ...} and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.artifacts import atomic_write

ACTIONS = ("click", "cart", "order")


@dataclass(frozen=True)
class RewardModelConfig:
    user_dim: int
    item_dim: int
    num_scenarios: int
    hidden_dim: int = 64
    scenario_dim: int = 8
    mlp_layers: int = 2
    dropout: float = 0.0
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    epochs: int = 5
    seed: int = 0
    calibration: str = "temperature"  # "temperature" | "platt"

    def __post_init__(self) -> None:
        for name in ("user_dim", "item_dim", "num_scenarios", "hidden_dim", "scenario_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RewardModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.mlp_layers < 0 or self.epochs < 0:
            raise ValueError(f"mlp_layers and epochs must be >= 0, got {self.mlp_layers}, {self.epochs}")
        if self.calibration not in ("temperature", "platt"):
            raise ValueError(f"calibration must be 'temperature' or 'platt', got {self.calibration!r}")


# ----------------------------------------------------------------------------- data


@dataclass
class RewardData:
    """Row-aligned training rows: user_x [N, du], item_x [N, di], scenario [N] long, labels [N, 3]."""

    user_x: torch.Tensor
    item_x: torch.Tensor
    scenario: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, idx: torch.Tensor) -> "RewardData":
        return RewardData(self.user_x[idx], self.item_x[idx], self.scenario[idx], self.labels[idx])

    def split(self, fractions: tuple[float, ...], seed: int = 0) -> tuple["RewardData", ...]:
        """Random disjoint splits with the given fractions (the last one takes the remainder)."""
        if any(f <= 0 for f in fractions) or sum(fractions) > 1.0 + 1e-9:
            raise ValueError(f"split fractions must be > 0 and sum to <= 1, got {fractions}")
        n = len(self)
        sizes = [int(round(f * n)) for f in fractions]
        if abs(sum(fractions) - 1.0) < 1e-9:
            sizes[-1] = n - sum(sizes[:-1])
        bounds = np.cumsum([0] + sizes)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return tuple(self.subset(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))


def _as_array(x, name: str, ndim: int, dtype) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if np.issubdtype(dtype, np.floating):
        arr = arr.astype(dtype)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} non-finite values")
    else:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
        arr = arr.astype(dtype)
    return arr


def build_reward_data(
    user_features,
    item_features,
    user_ids,
    item_ids,
    scenario_ids,
    labels,
    num_negatives: int = 4,
    seed: int = 0,
    num_scenarios: int | None = None,
) -> RewardData:
    """Logged interactions + sampled negatives -> RewardData.

    user_features [U, du] and item_features [I, di] are feature tables; the log has one row per
    impression: user_ids [N], item_ids [N], scenario_ids [N] and labels [N, 3] (click, cart, order in
    {0, 1}). For every logged row, ``num_negatives`` random items are drawn for the same user and
    scenario with labels (0, 0, 0); draws that hit an item this user interacted with (any positive
    label) are redrawn a few times and dropped if they still collide.
    """
    uf = _as_array(user_features, "user_features", 2, np.float32)
    itf = _as_array(item_features, "item_features", 2, np.float32)
    u = _as_array(user_ids, "user_ids", 1, np.int64)
    it = _as_array(item_ids, "item_ids", 1, np.int64)
    s = _as_array(scenario_ids, "scenario_ids", 1, np.int64)
    y = _as_array(labels, "labels", 2, np.float32)
    n = len(u)
    if not (len(it) == len(s) == len(y) == n):
        raise ValueError(f"log arrays differ in length: user_ids {n}, item_ids {len(it)}, scenario_ids {len(s)}, labels {len(y)}")
    if y.shape[1] != len(ACTIONS):
        raise ValueError(f"labels must have {len(ACTIONS)} columns {ACTIONS}, got shape {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    for name, ids, size in (("user_ids", u, len(uf)), ("item_ids", it, len(itf))):
        if n and (ids.min() < 0 or ids.max() >= size):
            raise ValueError(f"{name} out of range [0, {size}): min {ids.min()}, max {ids.max()}")
    if n and (s.min() < 0 or (num_scenarios is not None and s.max() >= num_scenarios)):
        raise ValueError(f"scenario_ids out of range [0, {num_scenarios}): min {s.min()}, max {s.max()}")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")

    rng = np.random.default_rng(seed)
    n_items = len(itf)
    pos_keys = np.unique(u[y.max(axis=1) > 0] * n_items + it[y.max(axis=1) > 0])
    neg_u = np.repeat(u, num_negatives)
    neg_s = np.repeat(s, num_negatives)
    neg_i = rng.integers(0, n_items, size=len(neg_u))
    for _ in range(5):  # redraw collisions with positives (vectorized)
        hit = np.isin(neg_u * n_items + neg_i, pos_keys)
        if not hit.any():
            break
        neg_i[hit] = rng.integers(0, n_items, size=int(hit.sum()))
    keep = ~np.isin(neg_u * n_items + neg_i, pos_keys)
    neg_u, neg_i, neg_s = neg_u[keep], neg_i[keep], neg_s[keep]

    all_u = np.concatenate([u, neg_u])
    all_i = np.concatenate([it, neg_i])
    return RewardData(
        user_x=torch.from_numpy(uf[all_u]),
        item_x=torch.from_numpy(itf[all_i]),
        scenario=torch.from_numpy(np.concatenate([s, neg_s])),
        labels=torch.from_numpy(np.concatenate([y, np.zeros((len(neg_u), len(ACTIONS)), np.float32)])),
    )


# ----------------------------------------------------------------------------- model


class RewardModel(nn.Module):
    def __init__(self, config: RewardModelConfig):
        super().__init__()
        self.config = config
        d = config.hidden_dim
        self.user_proj = nn.Linear(config.user_dim, d)
        self.item_proj = nn.Linear(config.item_dim, d)
        self.scenario_emb = nn.Embedding(config.num_scenarios, config.scenario_dim)
        layers: list[nn.Module] = []
        width = 3 * d + config.scenario_dim
        for _ in range(config.mlp_layers):
            layers += [nn.Linear(width, d), nn.ReLU(), nn.Dropout(config.dropout)]
            width = d
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, len(ACTIONS))
        # calibration p = sigmoid(scale * z + bias); identity until `calibrate` is run
        self.register_buffer("cal_scale", torch.ones(len(ACTIONS)))
        self.register_buffer("cal_bias", torch.zeros(len(ACTIONS)))

    def forward(self, user_x: torch.Tensor, scenario: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """Raw (uncalibrated) logits [..., 3]. Leading dims broadcast, e.g. user [B, 1, du] with items [B, G, di]."""
        if user_x.shape[-1] != self.config.user_dim or item_x.shape[-1] != self.config.item_dim:
            raise ValueError(
                f"feature dims: got user {user_x.shape[-1]}, item {item_x.shape[-1]}; "
                f"expected {self.config.user_dim}, {self.config.item_dim}"
            )
        pu, pv, es = self.user_proj(user_x), self.item_proj(item_x), self.scenario_emb(scenario)
        lead = torch.broadcast_shapes(pu.shape[:-1], pv.shape[:-1], es.shape[:-1])
        pu, pv, es = (t.expand(*lead, t.shape[-1]) for t in (pu, pv, es))
        h = self.mlp(torch.cat([pu, es, pv, pu * pv], dim=-1))
        return self.head(h)

    def calibrated_logits(self, user_x, scenario, item_x) -> torch.Tensor:
        return self(user_x, scenario, item_x) * self.cal_scale + self.cal_bias

    @torch.no_grad()
    def predict_proba(self, user_x, scenario, item_x) -> torch.Tensor:
        """Calibrated P(click), P(cart), P(order): [..., 3]."""
        return torch.sigmoid(self.calibrated_logits(user_x, scenario, item_x))


def _new_model(config: RewardModelConfig) -> RewardModel:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(config.seed)
        return RewardModel(config)


@torch.no_grad()
def _logits(model: RewardModel, data: RewardData, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    out = [model(data.user_x[i : i + batch_size], data.scenario[i : i + batch_size], data.item_x[i : i + batch_size])
           for i in range(0, len(data), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, len(ACTIONS))


def train_reward_model(
    train: RewardData, config: RewardModelConfig, val: RewardData | None = None
) -> tuple[RewardModel, list[dict]]:
    """Fit with BCE; returns the model and per-epoch history (train loss, val AUC/log-loss if given)."""
    if len(train) == 0:
        raise ValueError("train data is empty")
    if int(train.scenario.max()) >= config.num_scenarios:
        raise ValueError(f"scenario id {int(train.scenario.max())} >= num_scenarios={config.num_scenarios}")
    model = _new_model(config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(train), config.batch_size):
            b = train.subset(perm[i : i + config.batch_size])
            loss = F.binary_cross_entropy_with_logits(model(b.user_x, b.scenario, b.item_x), b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(b), count + len(b)
        rec = {"epoch": epoch, "train_loss": total / count}
        if val is not None:
            rec |= {f"val_{k}": v for k, v in evaluate(model, val).items()}
        history.append(rec)
    model.eval()
    return model, history


def calibrate(model: RewardModel, held_out: RewardData, method: str | None = None, max_iter: int = 100) -> dict:
    """Fit per-head calibration (temperature or Platt) on held-out data in place; return the fitted values."""
    method = method or model.config.calibration
    if method not in ("temperature", "platt"):
        raise ValueError(f"calibration method must be 'temperature' or 'platt', got {method!r}")
    z = _logits(model, held_out)
    y = held_out.labels
    scale, bias = torch.ones(len(ACTIONS)), torch.zeros(len(ACTIONS))
    for k in range(len(ACTIONS)):
        yk = y[:, k]
        if yk.numel() == 0 or yk.min() == yk.max():  # nothing to fit against
            continue
        log_t = torch.zeros((), requires_grad=True)
        c = torch.zeros((), requires_grad=method == "platt")
        params = [log_t] + ([c] if method == "platt" else [])
        opt = torch.optim.LBFGS(params, lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(z[:, k] * torch.exp(-log_t) + c, yk)
            loss.backward()
            return loss

        opt.step(closure)
        scale[k], bias[k] = torch.exp(-log_t.detach()), c.detach()
    model.cal_scale.copy_(scale)
    model.cal_bias.copy_(bias)
    return {"method": method, "scale": scale.tolist(), "bias": bias.tolist()}


# ----------------------------------------------------------------------------- metrics


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Rank-based ROC-AUC with tied scores given their average rank; NaN if one class is absent."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels).flatten().bool()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.numel()} vs {labels.numel()}")
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = torch.sort(scores)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)  # 1-based rank of the last member of each tie block
    avg_rank = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = avg_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> float:
    p = torch.as_tensor(probs, dtype=torch.float64).clamp(eps, 1 - eps)
    y = torch.as_tensor(labels, dtype=torch.float64)
    if p.shape != y.shape:
        raise ValueError(f"probs and labels differ in shape: {tuple(p.shape)} vs {tuple(y.shape)}")
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


@torch.no_grad()
def evaluate(model: RewardModel, data: RewardData) -> dict[str, float]:
    """Per-head AUC and log-loss of the calibrated probabilities: {"auc_click": ..., "logloss_click": ...}."""
    p = torch.sigmoid(_logits(model, data) * model.cal_scale + model.cal_bias)
    out = {}
    for k, name in enumerate(ACTIONS):
        out[f"auc_{name}"] = roc_auc(p[:, k], data.labels[:, k])
        out[f"logloss_{name}"] = log_loss(p[:, k], data.labels[:, k])
    return out


# ----------------------------------------------------------------------------- checkpoints


def save_reward_model(model: RewardModel, path: str | Path) -> Path:
    """{config, state_dict}, written atomically (models/artifacts.py)."""
    payload = {"config": asdict(model.config), "state_dict": model.state_dict()}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_reward_model(path: str | Path) -> RewardModel:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a reward-model checkpoint (need 'config' and 'state_dict')")
    model = RewardModel(RewardModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model
