"""What agile-modeling reads from a user's own labeling config: the image to classify and, when the
config has one, the choice that already says positive or negative (to import existing annotations).

A user's project is not ours: its config may label many things. It needs an ``<Image>`` tag; a
``<Choices>`` over that image is optional and is used only when its positive and negative choices
can be named (given, or the values ``Positive`` and ``Negative``).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from label_config.schema import NEGATIVE, POSITIVE, LabelConfigError, RatingSchema, _parse_xml


@dataclass(frozen=True)
class SourceSchema:
    """The parts of a source project's config agile-modeling uses.

    Attributes:
        image_field: the task data key of the image (``image`` for ``value="$image"``).
        ratings: how to read an existing annotation as a rating, or None when the config has no
            Choices over the image with the named positive and negative choices.
        why_no_ratings: why ``ratings`` is None (shown to the user), else None.
    """

    image_field: str
    ratings: RatingSchema | None
    why_no_ratings: str | None = None

    def prediction_record(self, probability: float, model_version: str) -> dict:
        """A prediction for the project's own config: its choice with
        :meth:`RatingSchema.prediction_record`'s score; without a positive/negative Choices, an empty
        result carrying P(positive) as the score (the Data Manager still sorts and filters by it)."""
        if self.ratings is not None:
            return self.ratings.prediction_record(probability, model_version)
        return {"result": [], "score": min(1.0, max(0.0, float(probability))), "model_version": model_version}


def parse_source_config(
    xml: str, positive_choice: str | None = None, negative_choice: str | None = None
) -> SourceSchema:
    """Find the image of a user's labeling config and, if possible, its positive/negative Choices.

    Raises:
        LabelConfigError: the config is not XML, has no ``<Image>`` tag, or names choices it lacks.
    """
    root = _parse_xml(xml)
    images = [el for el in root.iter("Image") if el.get("name")]
    if not images:
        raise LabelConfigError(
            'the project\'s label config has no <Image name=... value="$..."/> tag: agile-modeling classifies '
            "one image per task; pick a project of image tasks"
        )
    by_name = {str(el.get("name")): el for el in images}
    choices = [el for el in root.iter("Choices") if el.get("toName") in by_name and el.get("name")]
    positive, negative = positive_choice or POSITIVE, negative_choice or NEGATIVE
    for tag in choices:
        values = {el.get("value") for el in tag.iter("Choice")}
        if positive in values and negative in values:
            image = by_name[str(tag.get("toName"))]  # the image these ratings are about
            schema = RatingSchema(
                image=str(image.get("name")),
                image_field=_field_of(image),
                choices=str(tag.get("name")),
                positive=positive,
                negative=negative,
            )
            return SourceSchema(schema.image_field, schema)
    field = _field_of(by_name[str(choices[0].get("toName"))] if choices else images[0])
    if positive_choice or negative_choice:
        offered = sorted({str(el.get("value")) for tag in choices for el in tag.iter("Choice")})
        raise LabelConfigError(
            f"no <Choices> over the image offers both {positive!r} and {negative!r} "
            f"(its choices: {', '.join(offered) or 'none'}): check --positive-choice / --negative-choice"
        )
    why = (
        "its config has no <Choices> over the image"
        if not choices
        else f"no <Choices> over the image has the values {POSITIVE!r} and {NEGATIVE!r} "
        "(name yours with --positive-choice and --negative-choice)"
    )
    return SourceSchema(field, None, why)


def _field_of(image: Element) -> str:
    """The task data key an ``<Image>`` reads (``value="$photo"`` -> ``photo``)."""
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(
            f'the <Image name="{image.get("name")}"> tag reads no task field (value="{value}"): '
            'it needs value="$<field>", e.g. value="$image"'
        )
    return value[1:]
