"""Stage 1, concept scoping: the provider's decomposition, a few representative pool images per
candidate sub-concept, and the user's keep / flip / discard decisions -> the first definition d0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.deliberation.definition import Definition, SubConcept, UnitConcept
from agile_modeling.deliberation.history import ScopingItem
from agile_modeling.index.base import NeighbourIndex

REPRESENTATIVES = 4


def scoping_items(
    proposal: Definition,
    vectors: NDArray[np.floating[Any]],
    index: NeighbourIndex,
    per_sub_concept: int = REPRESENTATIVES,
) -> list[ScopingItem]:
    """One item per candidate sub-concept of ``proposal``, in order, with its ``per_sub_concept``
    nearest pool images; ``vectors`` ``(s, d)`` embeds the sub-concepts in the same order as
    ``proposal.sub_concepts()``. Images shown for an earlier candidate are not repeated."""
    subs = proposal.sub_concepts()
    if len(subs) != len(vectors):
        raise ValueError(f"{len(subs)} sub-concepts but {len(vectors)} query vectors")
    if not subs:
        return []
    _, ids = index.search(np.asarray(vectors, dtype=np.float32), per_sub_concept * 4)
    used: set[int] = set()
    items = []
    for pos, ((unit, side, sub), row) in enumerate(zip(subs, ids)):
        picked = [int(i) for i in row if i >= 0 and int(i) not in used][:per_sub_concept]
        used.update(picked)
        items.append(ScopingItem(pos, unit, side, sub.name, sub.description, tuple(picked), None))
    return items


def definition_from_scoping(proposal: Definition, items: Sequence[ScopingItem]) -> Definition:
    """d0: every candidate on its proposed side ("keep", or undecided), on the other side ("flip"),
    or left out ("discard"). Units keep their names and combination."""
    sides: dict[str, dict[str, list[SubConcept]]] = {u.name: {"in": [], "out": []} for u in proposal.units}
    for it in items:
        if it.decision == "discard":
            continue
        side = it.side if it.decision in (None, "keep") else ("out" if it.side == "in" else "in")
        sides[it.unit][side].append(SubConcept(it.name, it.description))
    units = tuple(UnitConcept(u.name, tuple(sides[u.name]["in"]), tuple(sides[u.name]["out"])) for u in proposal.units)
    return Definition(proposal.concept, units, proposal.combine, proposal.edge_cases)
