"""Shared evaluation protocol: leave-last-out split, id encoding and full-catalog ranking metrics."""

from models.eval.metrics import per_case_metrics, per_group_metrics, ranking_metrics, target_ranks, top_k
from models.eval.split import EvalCases, IdEncoder, LeaveLastOutSplit, encode_ids, leave_last_out

__all__ = [
    "EvalCases",
    "IdEncoder",
    "LeaveLastOutSplit",
    "encode_ids",
    "leave_last_out",
    "per_case_metrics",
    "per_group_metrics",
    "ranking_metrics",
    "target_ranks",
    "top_k",
]
