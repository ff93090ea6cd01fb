"""Name lookup in the trainer's tables (LOSSES, ADVANTAGES, ALLOCATION_RULES, ...): an unknown
name is a ValueError that lists the table, never a fall-through to another entry."""

from __future__ import annotations

from collections.abc import Mapping


def choose(table, name, what: str):
    """``table[name]`` (``name`` itself for a tuple of names), or ValueError naming ``what`` and
    the valid names."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{what} must be one of {', '.join(table)}; got {name!r}")
    return table[name] if isinstance(table, Mapping) else name
