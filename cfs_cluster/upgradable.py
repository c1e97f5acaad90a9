"""Pickled state that survives upgrades: fields added later get their defaults on load."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

__all__ = ["Upgradable"]


class Upgradable:
    """Fill fields added by a newer release when unpickling an older snapshot or journal entry.

    pysyncobj pickles the state and every command; pickle restores ``__dict__`` without calling
    ``__init__``, so a field added in an upgrade would be missing on objects written by the old
    release (a rolling upgrade reads the old snapshot). Defaults come from the dataclass fields.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            if f.name in state:
                continue
            if f.default is not MISSING:
                state[f.name] = f.default
            elif f.default_factory is not MISSING:
                state[f.name] = f.default_factory()
        self.__dict__.update(state)
