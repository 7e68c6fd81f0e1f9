"""Slow thinking: near-line Contextual Reasoning Instructions.

- :mod:`.context`: point-in-time :class:`UserContext` per user (vectorized) and :func:`to_prompt`.
- :mod:`.rules`: :class:`RuleBasedReasoner`, the deterministic offline reasoner (embedded default and fallback).
- :mod:`.openai_compat`: :class:`OpenAICompatibleReasoner`, an LLM behind an OpenAI-compatible endpoint.
- :mod:`.embed`: :func:`embed_instructions`, the dense instruction vectors the fast model reads.
"""

from .context import (
    GENERIC_CALENDAR,
    HIDDEN_USER_COLUMNS,
    CalendarEntry,
    ContextConfig,
    ContextEvent,
    UserContext,
    build_user_contexts,
    calendar_at,
    to_prompt,
)
from .embed import embed_instructions
from .openai_compat import LLMResult, LLMStats, OpenAICompatibleReasoner
from .rules import DEFAULT_INSTRUCTION, LIFE_EVENT_LABELS, Instruction, Intent, RuleBasedReasoner, RulesConfig

def make_reasoner(kind: str = "rules", llm_base_url: str | None = None, llm_model: str | None = None,
                  cache_dir: str | None = None):
    """The configured reasoner: ``rules`` (offline, deterministic) or ``openai`` (an OpenAI-compatible endpoint,
    falling back to the rules for any user the endpoint cannot answer)."""
    if kind == "rules":
        return RuleBasedReasoner()
    if kind == "openai":
        return OpenAICompatibleReasoner(base_url=llm_base_url, model=llm_model, cache_dir=cache_dir,
                                        fallback=RuleBasedReasoner())
    raise ValueError(f"reasoner must be 'rules' or 'openai', got {kind!r}")


__all__ = [
    "make_reasoner",
    "GENERIC_CALENDAR",
    "HIDDEN_USER_COLUMNS",
    "CalendarEntry",
    "ContextConfig",
    "ContextEvent",
    "UserContext",
    "build_user_contexts",
    "calendar_at",
    "to_prompt",
    "embed_instructions",
    "LLMResult",
    "LLMStats",
    "OpenAICompatibleReasoner",
    "DEFAULT_INSTRUCTION",
    "LIFE_EVENT_LABELS",
    "Instruction",
    "Intent",
    "RuleBasedReasoner",
    "RulesConfig",
]
