"""Our labeling configs and the validation of a project's config."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from label_config import CONFIG_KINDS, LabelConfigError, load_config, parse_rating_config


@pytest.mark.parametrize("kind", list(CONFIG_KINDS))
def test_our_configs_parse_and_round_trip_a_rating(kind):
    schema = parse_rating_config(load_config(kind))
    assert (schema.image, schema.image_field, schema.choices) == ("image", "image", "label")
    assert (schema.note is not None) == (kind == "rating-note")
    assert schema.label_of(schema.rating(1, "sear marks")) == (1, "sear marks" if schema.note else None)
    assert schema.label_of(schema.rating(0)) == (0, None)
    assert schema.prediction(0.7)[0]["value"]["choices"] == ["Positive"]
    assert schema.prediction(0.2)[0]["value"]["choices"] == ["Negative"]


def test_our_config_shows_the_concept_and_its_description():
    xml = load_config("rating")
    assert "$concept" in xml and "$description" in xml and 'hotkey="1"' in xml


@pytest.mark.parametrize(
    "xml, missing",
    [
        ("", "empty"),
        ("<View><Image name='img' value='$image'", "not valid XML"),
        ("<View><Choices name='c' toName='x'><Choice value='Positive'/></Choices></View>", "no <Image"),
        ("<View><Image name='img' value='$image'/></View>", "no <Choices toName=...> over its image (img)"),
        (
            "<View><Image name='img' value='$image'/><Choices name='c' toName='other'><Choice value='Positive'/>"
            "<Choice value='Negative'/></Choices></View>",
            "no <Choices",
        ),
        (
            "<View><Image name='img' value='$image'/><Choices name='c' toName='img'><Choice value='Yes'/>"
            "<Choice value='Negative'/></Choices></View>",
            "lacks the choice(s) Positive",
        ),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><View>&a;</View>', "not valid XML"),
    ],
)
def test_a_config_without_what_a_rating_needs_names_what_is_missing(xml, missing):
    with pytest.raises(LabelConfigError, match=None) as err:
        parse_rating_config(xml)
    assert missing in str(err.value)


def test_a_custom_config_with_other_tag_names_is_understood():
    xml = (
        "<View><Image name='photo' value='$img_url'/><TextArea name='why' toName='photo'/>"
        "<Choices name='verdict' toName='photo'><Choice value='Positive'/><Choice value='Negative'/></Choices></View>"
    )
    schema = parse_rating_config(xml)
    assert (schema.image, schema.image_field, schema.choices, schema.note) == ("photo", "img_url", "verdict", "why")


def test_unknown_config_kind_lists_the_known_ones():
    with pytest.raises(LabelConfigError, match="rating, rating-note"):
        load_config("nope")


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.integers(),
            st.text(),
            st.dictionaries(st.text(), st.one_of(st.text(), st.none(), st.lists(st.text()))),
        )
    )
)
def test_label_of_never_crashes_on_odd_results(result):
    schema = parse_rating_config(load_config("rating-note"))
    value, note = schema.label_of(result)
    assert value in (None, 0, 1)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.93, 1.0])
def test_a_prediction_record_scores_the_chosen_choice_and_keeps_p_positive(p):
    schema = parse_rating_config(load_config("rating"))
    record = schema.prediction_record(p, "tuna-v2")
    assert set(record) == {"result", "score", "model_version"} and record["model_version"] == "tuna-v2"
    assert record["score"] == pytest.approx(max(p, 1 - p))
    assert record["result"][0]["value"]["choices"] == ["Positive" if p >= 0.5 else "Negative"]
    assert schema.label_of(record["result"]) == (1 if p >= 0.5 else 0, None)
    assert schema.probability_of(record) == pytest.approx(p) == schema.probability_of(record["result"])


def test_probability_of_a_prediction_without_one_is_none():
    schema = parse_rating_config(load_config("rating"))
    assert schema.probability_of({"result": schema.prediction(0.7)}) is None
    assert schema.probability_of({"result": "x"}) is None
    odd = schema.prediction_record(0.4, "v")
    odd["result"][0]["meta"]["p_positive"] = 7
    assert schema.probability_of(odd) is None
