"""The Gemini provider, driven through the real google-genai client against a local fake endpoint."""

import json

import numpy as np
import pytest

from agile_modeling.deliberation.definition import Definition, SubConcept, UnitConcept
from agile_modeling.deliberation.providers.base import Feedback, PoolImage
from agile_modeling.deliberation.providers.cache import CallCache
from agile_modeling.deliberation.providers.gemini import GeminiProvider, GeminiSettings
from agile_modeling.errors import ProviderError
from tests.deliberation.fake_gemini import FakeGemini, json_response, text_response

KEY = "test-key-do-not-log"
DEF = Definition(
    "healthy food", (UnitConcept("food", (SubConcept("salad", "fresh greens"),), (SubConcept("fried food"),)),)
)


def provider(fake, **kw) -> GeminiProvider:
    settings = GeminiSettings(api_key=KEY, base_url=fake.url, initial_delay=0.01, **kw)
    return GeminiProvider(settings, CallCache())


def image(i: int) -> PoolImage:
    return PoolImage(i, np.zeros(4, np.float32), lambda i=i: f"png-bytes-{i}".encode(), "image/png")


def test_decompose_sends_a_structured_request_and_parses_the_definition():
    answer = {
        "concept": "x",
        "combine": "and",
        "units": [
            {
                "name": "food",
                "in_scope": [{"name": "salad", "description": "greens"}],
                "out_of_scope": [{"name": "fries"}],
            }
        ],
    }
    with FakeGemini(lambda prompt, body: (200, json_response(answer))) as fake:
        p = provider(fake)
        d = p.decompose("healthy food", "what I'd eat on a diet")
        req = fake.generate_calls()[0]
    assert d.concept == "healthy food" and d.unit("food").side_of("fries") == "out"
    assert req["model"] == "gemini-2.5-pro" and req["key"] == KEY
    config = req["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"]["required"]
    assert "healthy food" in json.dumps(req["body"]["contents"])
    assert p.stats.calls == 1 and p.stats.input_tokens == 100 and p.stats.cost_usd > 0


def test_classify_thresholds_the_rating_at_3_and_caches_by_prompt_and_image():
    ratings = iter([4, 2])
    with FakeGemini(
        lambda prompt, body: (200, json_response({"rationale": "greens", "rating": next(ratings)}))
    ) as fake:
        p = provider(fake)
        first = p.classify(DEF, [image(1), image(2)])
        again = p.classify(DEF, [image(1), image(2)])  # re-scoring the same definition: no new call
        calls = len(fake.generate_calls())
        body = fake.generate_calls()[0]["body"]
    assert [d.in_scope for d in first] == [True, False] and first[0].score == 0.75
    assert [d.in_scope for d in again] == [True, False]
    assert calls == 2 and p.stats.cached == 2
    inline = body["contents"][0]["parts"][0].get("inlineData") or body["contents"][0]["parts"][0]["inline_data"]
    assert (inline.get("mimeType") or inline.get("mime_type")) == "image/png"


def test_server_errors_are_retried_with_backoff_then_succeed():
    answers = iter(
        [
            (503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}),
            (429, {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}),
            (200, json_response({"queries": ["salad with fries", "fried tofu"]})),
        ]
    )
    with FakeGemini(lambda prompt, body: next(answers)) as fake:
        p = provider(fake)
        queries = p.borderline_queries(DEF, 2)
        assert len(fake.generate_calls()) == 3
    assert [q.text for q in queries] == ["salad with fries", "fried tofu"] and queries[0].vector is None


def test_persistent_failure_is_a_clear_error_without_the_key():
    with FakeGemini(
        lambda prompt, body: (500, {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}})
    ) as fake:
        p = provider(fake, attempts=2)
        with pytest.raises(ProviderError, match="after 2 attempts: HTTP 500") as e:
            p.borderline_queries(DEF)
    assert KEY not in str(e.value) and KEY not in repr(p.settings)
    assert p.stats.failures == 1


def test_malformed_json_is_refused_and_not_cached():
    answers = iter([text_response("Sure! Here are queries: salad, fries"), json_response({"queries": ["salad"]})])
    with FakeGemini(lambda prompt, body: (200, next(answers))) as fake:
        p = provider(fake)
        with pytest.raises(ProviderError, match="malformed JSON"):
            p.borderline_queries(DEF)
        assert [q.text for q in p.borderline_queries(DEF)] == ["salad"]  # asked again, not served from cache


def test_missing_fields_are_refused():
    with FakeGemini(lambda prompt, body: (200, json_response({"rating": 3}))) as fake:
        with pytest.raises(ProviderError, match="lacks \\['rationale'\\]"):
            provider(fake).classify(DEF, [image(1)])


def test_a_blocked_prompt_and_a_safety_stop_are_refusals():
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "candidates": []}
    with FakeGemini(lambda prompt, body: (200, blocked)) as fake:
        with pytest.raises(ProviderError, match="refused"):
            provider(fake).decompose("paid to play")
    with FakeGemini(lambda prompt, body: (200, text_response("", finish="SAFETY"))) as fake:
        with pytest.raises(ProviderError, match="stopped .* early \\(SAFETY\\)"):
            provider(fake).classify(DEF, [image(1)])


def test_an_invalid_definition_from_the_model_is_a_provider_error():
    four_units = {
        "concept": "x",
        "combine": "and",
        "units": [{"name": f"u{i}", "in_scope": [], "out_of_scope": []} for i in range(4)],
    }
    with FakeGemini(lambda prompt, body: (200, json_response(four_units))) as fake:
        with pytest.raises(ProviderError, match="1 to 3 unit concepts"):
            provider(fake).decompose("x")


def test_ambiguity_summaries_are_embedded_and_refinements_become_replace_edits():
    def respond(prompt, body):
        if "ambiguous" in prompt:
            return 200, json_response({"summary": "salad drowned in creamy dressing"})
        if "revisions" in prompt:
            revised = {**DEF.as_dict(), "edge_cases": ["heavy creamy dressing is out of scope"]}
            return 200, json_response({"candidates": [{"change": "creamy dressing out", "definition": revised}]})
        return 200, json_response({"explanation": "how much dressing is too much?", "rationale": "r"})

    with FakeGemini(respond) as fake:
        p = provider(fake)
        amb = p.summarise_ambiguities(DEF, [image(1), image(2)])
        explanation = p.explain_batch(DEF, amb)
        fb = Feedback(1, 0, 1, "too creamy")
        candidates = p.propose_refinements(DEF, [fb], {1: image(1)})
        embed_calls = [r for r in fake.requests if r["action"] == "batchEmbedContents"]
    assert amb[0].summary == "salad drowned in creamy dressing"
    assert np.allclose(np.linalg.norm(amb[0].vector), 1) and np.allclose(amb[0].vector, amb[1].vector)
    assert len(embed_calls) == 1  # both summaries are the same text: embedded once, then cached
    assert explanation == "how much dressing is too much?"
    assert candidates[0].definition.edge_cases == ("heavy creamy dressing is out of scope",)
    assert candidates[0].edits[0].op == "replace" and candidates[0].change == "creamy dressing out"


def test_settings_from_env_need_a_key():
    from sync.settings import Settings

    with pytest.raises(ProviderError, match="GEMINI_API_KEY"):
        Settings.from_env({}).gemini()
    s = Settings.from_env(
        {"GOOGLE_API_KEY": "k", "AGILE_GEMINI_MODEL": "gemini-x", "GEMINI_BASE_URL": "http://h"}
    ).gemini()
    assert (s.model, s.base_url, s.api_key) == ("gemini-x", "http://h", "k")
    assert s.decompose_model == GeminiSettings.decompose_model  # unset: the provider's default


def test_images_without_pixels_are_a_clear_error():
    with FakeGemini(lambda prompt, body: (200, json_response({}))) as fake:
        with pytest.raises(ProviderError, match="needs the image files"):
            provider(fake).classify(DEF, [PoolImage(3, np.zeros(4))])
