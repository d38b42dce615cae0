"""Edits of a structured definition, as data: what refinement proposes, what the history replays.

Every version in the history stores the edits that made it from its parent, so the whole history can
be replayed from the first definition and checked (:func:`apply_edits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agile_modeling.deliberation.definition import Definition, SubConcept
from agile_modeling.errors import DefinitionError

OPS = ("add", "remove", "note", "replace")


@dataclass(frozen=True)
class Edit:
    """One change.

    ``add``: put sub-concept ``name`` on ``side`` of ``unit`` (moving it if it is on the other side);
    ``remove``: drop sub-concept ``name`` from ``unit``; ``note``: append edge-case ``text``;
    ``replace``: the whole ``definition`` (a hand edit, or a candidate written by an LLM).
    """

    op: str
    unit: str = ""
    side: str = ""
    name: str = ""
    description: str = ""
    text: str = ""
    definition: dict[str, Any] = field(default_factory=dict)  # Definition.as_dict's layout

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise DefinitionError(f"unknown edit {self.op!r} (known: {', '.join(OPS)})")

    def apply(self, d: Definition) -> Definition:
        if self.op == "add":
            return d.with_sub_concept(self.unit, self.side, SubConcept(self.name, self.description))
        if self.op == "remove":
            return d.without_sub_concept(self.unit, self.name)
        if self.op == "note":
            return d.with_edge_case(self.text)
        return Definition.from_dict(self.definition)

    def describe(self, before: Definition) -> str:
        """A one-line account for people: ``moved 'pug' to in-scope of 'dog'``."""
        if self.op == "add":
            was = before.unit(self.unit).side_of(self.name)
            where = f"{'in' if self.side == 'in' else 'out of'} scope of {self.unit!r}"
            return f"moved {self.name!r} to {where}" if was and was != self.side else f"added {self.name!r} {where}"
        if self.op == "remove":
            return f"removed {self.name!r} from {self.unit!r}"
        if self.op == "note":
            return f"noted edge case: {self.text}"
        return "rewrote the definition"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", {}, None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Edit:
        return cls(**data)


def apply_edits(d: Definition, edits: Sequence[Edit]) -> Definition:
    """``d`` after every edit in order."""
    for e in edits:
        d = e.apply(d)
    return d


def describe_edits(d: Definition, edits: Sequence[Edit]) -> str:
    """``"added 'pug' in scope of 'dog'; removed 'terrier' from 'dog'"`` (each step read against the
    definition it applies to)."""
    parts = []
    for e in edits:
        parts.append(e.describe(d))
        d = e.apply(d)
    return "; ".join(parts) or "no change"
