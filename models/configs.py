"""One config vocabulary: a settings section uses the field names of the library config it feeds, and the config is
built from it in one step (no hand-written mapper that renames or forgets a field)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["from_section"]

C = TypeVar("C")


def from_section(cls: type[C], section: Mapping[str, Any], **fixed: Any) -> C:
    """``cls`` (a dataclass) from the entries of ``section`` named like its fields, plus ``fixed`` (fields whose
    value lives in another section, e.g. the top-level seed; they win over the section's). Entries ``cls`` does not declare are ignored: one
    section may feed two configs (the sft section feeds GeneratorConfig and SFTConfig)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fixed) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    return cls(**{**{k: v for k, v in section.items() if k in names}, **fixed})
