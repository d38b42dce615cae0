"""The simulated deliberation study on one simulated user, two rounds."""

import json

import pytest

from agile_modeling.errors import DatasetNotFoundError


@pytest.mark.slow
def test_one_user_two_rounds(tmp_path):
    from agile_modeling.simulate.deliberation_study import (
        CaltechData,
        load_deliberation_suite,
        per_user_table,
        plot_deliberation,
        run_deliberation,
        summary_table,
    )

    try:
        data = CaltechData.load()
    except DatasetNotFoundError as e:
        pytest.skip(str(e))
    spec = next(s for s in load_deliberation_suite() if s.title == "flowers of the water")
    rows = []
    result = run_deliberation(spec, data, tmp_path / "w", rounds=2, on_round=rows.append)
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2] and rows == result["rounds"]
    assert result["rounds"][0]["labels"] == 0 and 0 < result["rounds"][2]["labels"] <= 10
    for key in ("zero_shot", "modeling_collaborator"):
        assert set(result["baselines"][key]) == {"f1", "precision", "recall"}
    last = result["rounds"][-1]
    assert {"definition", "agile", "combined", "combined_mode"} <= set(last)
    assert last["combined_mode"] in ("definition", "mlp", "prior")
    # the simulated user's scoping alone beats zero-shot on this concept (lotus and water lilies)
    assert result["rounds"][0]["definition"]["f1"] > result["baselines"]["zero_shot"]["f1"]
    json.dumps(result)
    assert "Agile Deliberation, round 2" in summary_table([result]) and "flowers of the water" in per_user_table(
        [result]
    )
    assert plot_deliberation([result], tmp_path / "d.png").stat().st_size > 10_000


def test_a_verdict_only_user_names_no_phrase(shared_data):
    from agile_modeling.simulate.deliberation_study import CaltechData, SimulatedDeliberator, load_deliberation_suite

    data = CaltechData.load()
    spec = next(s for s in load_deliberation_suite() if s.title == "flowers of the water")
    phrase, verdict = SimulatedDeliberator(spec, data, "phrase"), SimulatedDeliberator(spec, data, "verdict")
    inside = int(next(i for i in range(len(data.pool_y)) if phrase.label(i) == 1))
    assert phrase.comment(inside, shown=1) == verdict.comment(inside, shown=1) == ""  # agrees: no comment
    named = phrase.comment(inside, shown=0)
    words = set(spec.inside.values()) | {c.replace("_", " ") for c in spec.inside}
    assert any(w in named for w in words)
    assert verdict.comment(inside, shown=0) == "I count this as in scope"
    assert not any(w in verdict.comment(inside, shown=0) for w in words)
    with pytest.raises(ValueError, match="comments must be one of phrase, verdict"):
        SimulatedDeliberator(spec, data, "essay")
