"""The structured definition of Agile Deliberation (section 3, eq. 7): a concept as at most 3 unit
concepts combined by "and" or "or", each with in-scope and out-of-scope sub-concepts, plus
edge-case notes. Immutable; every edit returns a new definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from agile_modeling.errors import DefinitionError

MAX_UNITS = 3
COMBINATIONS = ("and", "or")


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


@dataclass(frozen=True)
class SubConcept:
    """A visual category inside or outside a unit concept ("fresh fruit", "fried fast food")."""

    name: str
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise DefinitionError("a sub-concept needs a name")

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description}


@dataclass(frozen=True)
class UnitConcept:
    """One visual dimension of the concept, with what is in and what is out of its scope."""

    name: str
    in_scope: tuple[SubConcept, ...] = ()
    out_of_scope: tuple[SubConcept, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise DefinitionError("a unit concept needs a name")
        both = {_key(s.name) for s in self.in_scope} & {_key(s.name) for s in self.out_of_scope}
        if both:
            raise DefinitionError(f"unit {self.name!r} has {sorted(both)} both in and out of scope; choose one side")
        for side in (self.in_scope, self.out_of_scope):
            keys = [_key(s.name) for s in side]
            if len(keys) != len(set(keys)):
                raise DefinitionError(f"unit {self.name!r} lists a sub-concept twice on one side")

    def side_of(self, name: str) -> str | None:
        """``"in"``, ``"out"`` or None: where the sub-concept called ``name`` sits."""
        k = _key(name)
        if any(_key(s.name) == k for s in self.in_scope):
            return "in"
        if any(_key(s.name) == k for s in self.out_of_scope):
            return "out"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in_scope": [s.as_dict() for s in self.in_scope],
            "out_of_scope": [s.as_dict() for s in self.out_of_scope],
        }


@dataclass(frozen=True)
class Definition:
    """What the user means by ``concept``: ``combine`` over ``units``, with ``edge_cases`` notes."""

    concept: str
    units: tuple[UnitConcept, ...]
    combine: str = "and"
    edge_cases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.concept.strip():
            raise DefinitionError("a definition needs the concept's name")
        if not 1 <= len(self.units) <= MAX_UNITS:
            raise DefinitionError(f"a definition has 1 to {MAX_UNITS} unit concepts, not {len(self.units)}")
        if self.combine not in COMBINATIONS:
            raise DefinitionError(f"units combine by 'and' or 'or', not {self.combine!r}")
        names = [_key(u.name) for u in self.units]
        if len(names) != len(set(names)):
            raise DefinitionError("two unit concepts have the same name")

    # --- reading -------------------------------------------------------------------------------
    def unit(self, name: str) -> UnitConcept:
        for u in self.units:
            if _key(u.name) == _key(name):
                return u
        raise DefinitionError(
            f"no unit concept {name!r} in the definition of {self.concept!r} "
            f"(units: {', '.join(u.name for u in self.units)})"
        )

    def sub_concepts(self) -> list[tuple[str, str, SubConcept]]:
        """Every ``(unit name, "in" | "out", sub-concept)``, in order."""
        return [
            (u.name, side, s)
            for u in self.units
            for side, subs in (("in", u.in_scope), ("out", u.out_of_scope))
            for s in subs
        ]

    def render(self) -> str:
        """The readable text form (as in the paper's appendix D), shown to users and sent to LLMs."""
        joiner = f" {self.combine.upper()} "
        lines = [
            f"Concept: {self.concept}",
            f"An image is in scope when it shows {joiner.join(repr(u.name) for u in self.units)}.",
        ]
        for i, u in enumerate(self.units, 1):
            lines.append(f"\nUnit {i}: {u.name}")
            for title, subs in (("In scope", u.in_scope), ("Out of scope", u.out_of_scope)):
                lines.append(f"  {title}:")
                lines += [f"    - {s.name}" + (f": {s.description}" if s.description else "") for s in subs] or [
                    "    (none)"
                ]
        if self.edge_cases:
            lines.append("\nEdge cases:")
            lines += [f"  - {note}" for note in self.edge_cases]
        return "\n".join(lines)

    # --- serialisation -----------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "combine": self.combine,
            "units": [u.as_dict() for u in self.units],
            "edge_cases": list(self.edge_cases),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Definition:
        """Parse the :meth:`as_dict` layout (also what LLMs are asked to answer); errors name the field."""
        if not isinstance(data, dict):
            raise DefinitionError(f"a definition is a JSON object, not {type(data).__name__}")
        try:
            units = tuple(
                UnitConcept(
                    str(u["name"]),
                    tuple(SubConcept(str(s["name"]), str(s.get("description", ""))) for s in u.get("in_scope", [])),
                    tuple(SubConcept(str(s["name"]), str(s.get("description", ""))) for s in u.get("out_of_scope", [])),
                )
                for u in data["units"]
            )
            return cls(
                str(data["concept"]),
                units,
                str(data.get("combine", "and")),
                tuple(str(n) for n in data.get("edge_cases", [])),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise DefinitionError(
                f"malformed definition: missing or wrong field {e}; expected "
                "{concept, combine, units: [{name, in_scope: [{name, description}], out_of_scope}], edge_cases}"
            ) from None

    # --- edits ---------------------------------------------------------------------------------
    def with_sub_concept(self, unit: str, side: str, sub: SubConcept) -> Definition:
        """Add ``sub`` to ``side`` ("in" or "out") of ``unit``, moving it across the boundary if it is on the other side."""
        if side not in ("in", "out"):
            raise DefinitionError(f"a side is 'in' or 'out', not {side!r}")
        target = self.unit(unit)
        if target.side_of(sub.name) == side:
            return self
        cleared = self.without_sub_concept(unit, sub.name).unit(unit) if target.side_of(sub.name) else target
        if side == "in":
            new = replace(cleared, in_scope=cleared.in_scope + (sub,))
        else:
            new = replace(cleared, out_of_scope=cleared.out_of_scope + (sub,))
        return self._replace_unit(new)

    def without_sub_concept(self, unit: str, name: str) -> Definition:
        u = self.unit(unit)
        k = _key(name)
        new = replace(
            u,
            in_scope=tuple(s for s in u.in_scope if _key(s.name) != k),
            out_of_scope=tuple(s for s in u.out_of_scope if _key(s.name) != k),
        )
        return self._replace_unit(new)

    def with_edge_case(self, note: str) -> Definition:
        return replace(self, edge_cases=self.edge_cases + (note.strip(),)) if note.strip() else self

    def _replace_unit(self, new: UnitConcept) -> Definition:
        return replace(self, units=tuple(new if _key(u.name) == _key(new.name) else u for u in self.units))
