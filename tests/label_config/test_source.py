"""A user's own labeling config: the image it shows, and its choices when they can be read as ratings."""

import re

import pytest

from label_config import LabelConfigError
from label_config.source import parse_source_config

TUNA = """<View><Image name="photo" value="$photo"/><Text name="t" value="$caption"/>
<Choices name="verdict" toName="photo"><Choice value="Tuna"/><Choice value="Not tuna"/></Choices></View>"""


def test_the_image_field_and_the_named_choices_are_found():
    schema = parse_source_config(TUNA, "Tuna", "Not tuna")
    assert schema.image_field == "photo" and schema.why_no_ratings is None
    assert schema.ratings is not None
    result = [{"from_name": "verdict", "to_name": "photo", "type": "choices", "value": {"choices": ["Not tuna"]}}]
    assert schema.ratings.label_of(result) == (0, None)
    assert schema.ratings.prediction(0.9)[0]["value"]["choices"] == ["Tuna"]


def test_choices_that_are_not_named_are_not_read_and_the_reason_is_given():
    schema = parse_source_config(TUNA)
    assert schema.image_field == "photo" and schema.ratings is None
    assert "--positive-choice" in str(schema.why_no_ratings)
    bare = parse_source_config('<View><Image name="i" value="$url"/></View>')
    assert bare.image_field == "url" and bare.ratings is None and "no <Choices>" in str(bare.why_no_ratings)


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        ('<View><Text name="t" value="$text"/></View>', "no <Image"),
        ('<View><Image name="i" value="http://x/y.jpg"/></View>', 'value="$<field>"'),
        ("<View><Image", "not valid XML"),
    ],
)
def test_configs_without_a_task_image_are_refused_with_what_to_do(xml, words):
    with pytest.raises(LabelConfigError, match=re.escape(words)):
        parse_source_config(xml)


def test_choices_named_but_absent_are_an_error_listing_the_real_ones():
    with pytest.raises(LabelConfigError, match="its choices: Not tuna, Tuna"):
        parse_source_config(TUNA, "Yes", "No")


def test_with_several_images_the_rated_image_is_the_one_the_positive_negative_choices_are_about():
    xml = """<View><Image name="a" value="$left"/><Image name="b" value="$right"/>
    <Choices name="blur" toName="a"><Choice value="Blurry"/><Choice value="Sharp"/></Choices>
    <Choices name="verdict" toName="b"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>"""
    schema = parse_source_config(xml)
    assert schema.ratings is not None and schema.image_field == "right" and schema.ratings.image == "b"
    assert schema.prediction_record(0.9, "v1")["result"][0]["to_name"] == "b"
