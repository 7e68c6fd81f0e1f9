"""Decoding: trie-constrained beam search over semantic IDs and brute-force catalog scoring."""

from .beam_search import constrained_beam_search, score_all_items

__all__ = ["constrained_beam_search", "score_all_items"]
