"""RL post-training (pure torch): group advantages, GRPO/GSPO/SA-GCPO objectives, the unified
ranking reward model, the per-scenario reward mapping and a group-sampling policy trainer."""
from .advantages import group_advantages
from .objectives import (
    GRPOConfig,
    GSPOConfig,
    SAGCPOConfig,
    grpo_loss,
    gspo_loss,
    k3_kl,
    make_loss_config,
    masked_mean,
    policy_loss,
    safe_ratio,
    sagcpo_loss,
    sequence_ratio,
    sigmoid_gate,
)
from .reward_mapping import DEFAULT_SCENARIO_WEIGHTS, RewardMappingConfig, UnifiedReward, diversity_share, map_rewards
from .reward_model import (
    ACTIONS,
    RewardData,
    RewardModel,
    RewardModelConfig,
    build_reward_data,
    calibrate,
    evaluate,
    load_reward_model,
    log_loss,
    roc_auc,
    save_reward_model,
    train_reward_model,
)
from .trainer import GroupPolicyTrainer, Policy, RLConfig, RLTrainingError, train_policy

__all__ = [
    "group_advantages",
    "GRPOConfig", "GSPOConfig", "SAGCPOConfig", "grpo_loss", "gspo_loss", "sagcpo_loss", "policy_loss",
    "make_loss_config", "k3_kl", "masked_mean", "safe_ratio", "sequence_ratio", "sigmoid_gate",
    "DEFAULT_SCENARIO_WEIGHTS", "RewardMappingConfig", "UnifiedReward", "diversity_share", "map_rewards",
    "ACTIONS", "RewardData", "RewardModel", "RewardModelConfig", "build_reward_data", "calibrate", "evaluate",
    "load_reward_model", "log_loss", "roc_auc", "save_reward_model", "train_reward_model",
    "GroupPolicyTrainer", "Policy", "RLConfig", "RLTrainingError", "train_policy",
]
