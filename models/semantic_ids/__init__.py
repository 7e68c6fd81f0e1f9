"""Semantic-ID item tokenizer: RQ-KMeans codebook, item <-> SID table, quality metrics.

(The prefix trie used for constrained decoding lives in `models.semantic_ids.trie` and is
imported from there directly.)
"""

from .codebook import (
    SemanticIdCodebook,
    SemanticIdTable,
    StalenessConfig,
    assign_semantic_ids,
    extend_semantic_ids,
    fit_codebook,
    fit_encode,
)
from .metrics import gini, normalized_entropy, semantic_id_quality
from .rq_kmeans import RQKMeansConfig, RQKMeansFit, fit_kmeans, fit_rq_kmeans, rq_encode

__all__ = [
    "RQKMeansConfig",
    "RQKMeansFit",
    "fit_kmeans",
    "fit_rq_kmeans",
    "rq_encode",
    "SemanticIdCodebook",
    "SemanticIdTable",
    "StalenessConfig",
    "assign_semantic_ids",
    "extend_semantic_ids",
    "fit_codebook",
    "fit_encode",
    "semantic_id_quality",
    "normalized_entropy",
    "gini",
]
