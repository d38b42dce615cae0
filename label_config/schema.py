"""Parse and validate a binary-rating labeling config; convert annotations and predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from agile_modeling.errors import AgileError

_HERE = Path(__file__).parent
CONFIG_KINDS = {"rating": "binary_rating.xml", "rating-note": "binary_rating_note.xml"}
POSITIVE, NEGATIVE = "Positive", "Negative"
#: the key of P(positive) in a prediction region's ``meta`` (:meth:`RatingSchema.prediction_record`)
PROBABILITY_KEY = "p_positive"


class LabelConfigError(AgileError):
    """A labeling config is not XML, or lacks the tags a binary rating needs."""


def load_config(kind: str = "rating") -> str:
    """The XML of one of our configs: ``rating`` (Positive/Negative) or ``rating-note`` (plus a note)."""
    try:
        return (_HERE / CONFIG_KINDS[kind]).read_text()
    except KeyError:
        raise LabelConfigError(f"unknown label config {kind!r}: choose one of {', '.join(CONFIG_KINDS)}") from None


@dataclass(frozen=True)
class RatingSchema:
    """Names of the tags a binary rating uses in one project's config.

    Attributes:
        image: name of the Image tag (its value is the task's image field, e.g. ``$image``).
        image_field: the task data key the Image reads (``image`` for ``$image``).
        choices: name of the Choices tag that holds the rating.
        positive, negative: the Choice values meaning 1 and 0.
        note: name of an optional TextArea for the rater's reasoning, or None.
    """

    image: str
    image_field: str
    choices: str
    positive: str = POSITIVE
    negative: str = NEGATIVE
    note: str | None = None

    def label_of(self, result: list) -> tuple[int | None, str | None]:
        """``(1 | 0 | None, note | None)`` from an annotation's ``result`` list.

        None means the annotation has no rating (a skipped or empty one); unknown regions are ignored.
        """
        value, note = None, None
        for region in result if isinstance(result, list) else []:
            if not isinstance(region, dict):
                continue
            raw = region.get("value")
            payload = raw if isinstance(raw, dict) else {}
            if region.get("from_name") == self.choices:
                chosen = payload.get("choices") or []
                if self.positive in chosen:
                    value = 1
                elif self.negative in chosen:
                    value = 0
            elif self.note and region.get("from_name") == self.note:
                texts = payload.get("text") or []
                note = "\n".join(str(t) for t in texts).strip() or None
        return value, note

    def prediction(self, probability: float) -> list[dict]:
        """The ``result`` list of a prediction: the more likely choice for this probability."""
        choice = self.positive if probability >= 0.5 else self.negative
        return [
            {
                "from_name": self.choices,
                "to_name": self.image,
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]

    def prediction_record(self, probability: float, model_version: str) -> dict:
        """One Label Studio prediction for ``probability`` = P(positive), as ``/predict`` answers it
        and ``import_predictions`` takes it (add ``"task"`` for the latter).

        ``score`` is the probability of the predicted choice, ``max(p, 1 - p)`` (Label Studio's own
        backends report a confidence, and its "prediction score" filters and sorts by it); the region
        carries it too, with the raw P(positive) in its ``meta`` (``{"p_positive": p}``). Label Studio
        1.23.2 stores a region's ``meta`` and ``score`` as sent, but drops unknown keys at the
        prediction's top level: read the probability back with :meth:`probability_of`.
        """
        p = min(1.0, max(0.0, float(probability)))
        score = max(p, 1.0 - p)
        result = self.prediction(p)
        result[0]["score"] = score
        result[0]["meta"] = {PROBABILITY_KEY: p}
        return {"result": result, "score": score, "model_version": model_version}

    def probability_of(self, prediction: dict | list) -> float | None:
        """P(positive) of a prediction (or its ``result`` list) written by :meth:`prediction_record`;
        None for one that carries no probability (written by something else)."""
        result = prediction.get("result") if isinstance(prediction, dict) else prediction
        for region in result if isinstance(result, list) else []:
            if not isinstance(region, dict) or region.get("from_name") != self.choices:
                continue
            meta = region.get("meta")
            p = meta.get(PROBABILITY_KEY) if isinstance(meta, dict) else None
            if isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0:
                return float(p)
        return None

    def rating(self, value: int, note: str | None = None) -> list[dict]:
        """The ``result`` list of an annotation that rates the image ``value`` (1 or 0)."""
        result = [
            {
                "from_name": self.choices,
                "to_name": self.image,
                "type": "choices",
                "value": {"choices": [self.positive if value else self.negative]},
            }
        ]
        if note and self.note:
            result.append(
                {"from_name": self.note, "to_name": self.image, "type": "textarea", "value": {"text": [note]}}
            )
        return result


def _parse_xml(xml: str) -> Element:
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("the label config is empty: paste one of agile-modeling's configs (label_config/*.xml)")
    try:
        return SafeET.fromstring(xml)
    except (SafeET.ParseError, DefusedXmlException, UnicodeError) as exc:
        raise LabelConfigError(
            f"the label config is not valid XML ({exc.__class__.__name__}: {str(exc)[:200]}); "
            "fix it in the project's Settings > Labeling Interface"
        ) from None


def parse_rating_config(xml: str) -> RatingSchema:
    """Check a labeling config for a binary rating and name its tags.

    Raises:
        LabelConfigError: naming each missing part (an Image tag, a Choices tag pointing at it,
        a Positive and a Negative choice).
    """
    root = _parse_xml(xml)
    images = {str(el.get("name")): el for el in root.iter("Image") if el.get("name")}
    if not images:
        raise LabelConfigError(
            'the label config has no <Image name=... value="$image"/> tag: agile-modeling rates one image per task'
        )
    choices = [el for el in root.iter("Choices") if el.get("toName") in images]
    if not choices:
        raise LabelConfigError(
            f"the label config has no <Choices toName=...> over its image ({', '.join(images)}): "
            f'add <Choices name="label" toName="{next(iter(images))}"> with Positive and Negative choices'
        )
    tag = choices[0]
    values = {el.get("value") for el in tag.iter("Choice")}
    missing = [v for v in (POSITIVE, NEGATIVE) if v not in values]
    if missing:
        raise LabelConfigError(
            f'the <Choices name="{tag.get("name")}"> tag lacks the choice(s) {", ".join(missing)}: '
            "agile-modeling needs exactly the values Positive and Negative"
        )
    image_name = str(tag.get("toName"))  # one of the images: choices were filtered on it
    value = images[image_name].get("value", "")
    field = value[1:] if value.startswith("$") else "image"
    notes = [el.get("name") for el in root.iter("TextArea") if el.get("toName") == image_name and el.get("name")]
    if not tag.get("name"):
        raise LabelConfigError('the <Choices> tag over the image has no name: give it one, e.g. name="label"')
    return RatingSchema(
        image=image_name, image_field=field, choices=str(tag.get("name")), note=str(notes[0]) if notes else None
    )
