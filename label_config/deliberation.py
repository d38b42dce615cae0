"""Agile Deliberation's two labeling configs and how to read their annotations.

- ``scoping``: one task per candidate sub-concept with its representative images; the user keeps
  it on its proposed side, flips it, or discards it.
- ``deliberation`` (labels with reasons): each borderline image beside the definition's decision
  and rationale; the user agrees or disagrees, and a reason is required when they disagree (the
  TextArea is shown and required only then). The label is the decision, or its opposite.
"""

from __future__ import annotations

from label_config.schema import _HERE, LabelConfigError

DELIBERATION_KINDS = {"scoping": "scoping.xml", "deliberation": "deliberation.xml"}
SCOPING_ALIASES = {"keep", "flip", "discard"}


def load_deliberation_config(kind: str) -> str:
    try:
        return (_HERE / DELIBERATION_KINDS[kind]).read_text()
    except KeyError:
        raise LabelConfigError(f"unknown deliberation config {kind!r}: {', '.join(DELIBERATION_KINDS)}") from None


def _choices(result: list, name: str) -> list[str]:
    for r in result or []:
        if isinstance(r, dict) and r.get("from_name") == name and r.get("type") == "choices":
            value = r.get("value") or {}
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list):
                return [str(c) for c in choices]
    return []


def _text(result: list, name: str) -> str:
    for r in result or []:
        if isinstance(r, dict) and r.get("from_name") == name and r.get("type") == "textarea":
            text = (r.get("value") or {}).get("text") if isinstance(r.get("value"), dict) else None
            if isinstance(text, list):
                return " ".join(str(t) for t in text).strip()
            if isinstance(text, str):
                return text.strip()
    return ""


def scoping_decision(result: list) -> str | None:
    """``"keep"``, ``"flip"``, ``"discard"`` or None (no usable choice) from a scoping annotation."""
    for c in _choices(result, "decision"):
        alias = {"keep as proposed": "keep", "flip to the other side": "flip"}.get(c.lower(), c.lower())
        if alias in SCOPING_ALIASES:
            return alias
    return None


def deliberation_label(result: list, decision: int) -> tuple[int, str] | None:
    """``(label, comment)`` from a labels-with-reasons annotation on an image the definition decided
    ``decision`` (1 in scope, 0 out); None when the annotation holds no verdict. The comment joins
    the disagreement reason and the optional remark."""
    verdict = [c.lower() for c in _choices(result, "verdict")]
    if not verdict or verdict[0] not in ("agree", "disagree"):
        return None
    label = int(decision) if verdict[0] == "agree" else 1 - int(decision)
    comment = " ".join(t for t in (_text(result, "reason"), _text(result, "comment")) if t)
    return label, comment
