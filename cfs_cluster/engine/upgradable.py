"""Pickled state that survives upgrades: fields added later get their defaults on load."""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

__all__ = ["Upgradable"]


class Upgradable:
    """Fill fields added by a newer release when unpickling an older snapshot or journal entry.

    pysyncobj pickles the state and every command; pickle restores ``__dict__`` without calling
    ``__init__``, so a field added in an upgrade would be missing on objects written by the old
    release (a rolling upgrade reads the old snapshot). Defaults come from the dataclass fields.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Hot on followers (every replicated checkpoint unpickles thousands of records), so
        # the common case is one C-level set comparison against a per-class cache.
        known = _fields_of(type(self))
        if not state.keys() >= known.names:
            for f in known.fields:
                if f.name in state:
                    continue
                if f.default is not MISSING:
                    state[f.name] = f.default
                elif f.default_factory is not MISSING:
                    state[f.name] = f.default_factory()
        self.__dict__.update(state)


@dataclass(frozen=True)
class _Known:
    fields: tuple[Field[Any], ...]
    names: frozenset[str]


_KNOWN: dict[type, _Known] = {}


def _fields_of(cls: type) -> _Known:
    known = _KNOWN.get(cls)
    if known is None:
        found = fields(cls)
        known = _KNOWN[cls] = _Known(found, frozenset(f.name for f in found))
    return known
