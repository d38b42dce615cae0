"""The simulated study's runner and summaries, on one concept with one round (the full study is a benchmark)."""

import json
from dataclasses import replace

import pytest

from agile_modeling.simulate import SimulationContext, load_suite
from agile_modeling.simulate.study import (
    CONDITIONS,
    StudyConfig,
    StudyError,
    per_concept_table,
    plot_study,
    run_study,
    summary_table,
)

pytestmark = pytest.mark.slow


def test_one_concept_through_every_condition_and_a_resumed_run(shared_data, tmp_path):
    spec = [s for s in load_suite() if s.title == "wild cats (not house cats)"]
    ctx = SimulationContext.build(shared_data)
    config = StudyConfig(rounds=1)
    baselines = ("user-100-seed-random", "user-100-random")
    first = run_study(
        spec, ctx, tmp_path, replace(config, conditions=tuple(c for c in CONDITIONS if c not in baselines))
    )
    assert not set(baselines) & set(first[0]["runs"])
    # the same study with more conditions runs only those, and keeps what it had
    lines: list[str] = []
    results = run_study(spec, ctx, tmp_path, config, log=lines.append)
    ran = [line.split(":")[0].strip() for line in lines if line.startswith("  ") and "oracle" not in line]
    assert ran == list(baselines), lines
    (r,) = results
    assert r["runs"]["user-100"] == first[0]["runs"]["user-100"] and r["oracle"] == first[0]["oracle"]
    assert set(r["runs"]) == set(CONDITIONS) | {"user-100+crowd-500"}
    assert [p["ratings"] for p in r["runs"]["user-100"]] == [100, 200]
    assert [p["ratings"] for p in r["runs"]["crowd-500"]] == [500, 1000]
    assert r["runs"]["user-100+crowd-500"][-1]["ratings"] == 700
    assert r["runs"]["user-100"][-1]["auc_pr"] > r["zero_shot"]["auc_pr"]  # agile beats zero-shot
    assert r["oracle"]["auc_pr"] >= 0.95
    assert [p["ratings"] for p in r["runs"]["user-100-random"]] == [100, 200]
    assert "| User-100, random, 600 ratings |" in summary_table(results)
    assert r["stratified"]["images"] > 50 and r["stratified"]["model"] == "tiger-v2"
    assert "| wild cats (not house cats) | hard |" in per_concept_table(results)
    assert "| oracle (every pool label) |" in summary_table(results)
    assert plot_study(results, tmp_path / "study.png").stat().st_size > 20_000
    # a second run finds the concept done and computes nothing
    again = run_study(spec, ctx, tmp_path, config, log=lambda line: pytest.fail(line))
    assert again == json.loads(json.dumps(results))
    with pytest.raises(StudyError, match="another configuration"):
        run_study(spec, ctx, tmp_path, StudyConfig(rounds=2))


def test_the_recipe_is_part_of_the_configuration_and_an_older_study_used_the_default(tmp_path):
    from dataclasses import asdict
    from types import SimpleNamespace

    big_pool = SimpleNamespace(pool=range(1_000_000), data=SimpleNamespace(pool=SimpleNamespace(dataset=[])))
    with pytest.raises(StudyError, match="no recipe named 'fast'"):
        run_study([], big_pool, tmp_path, StudyConfig(recipe="fast"))
    older = {k: v for k, v in asdict(StudyConfig()).items() if k != "recipe"}
    (tmp_path / "study.json").write_text(json.dumps({"config": json.loads(json.dumps(older)), "concepts": []}))
    assert run_study([], big_pool, tmp_path, StudyConfig()) == []  # resumes: it was the default recipe
    with pytest.raises(StudyError, match="another configuration"):
        run_study([], big_pool, tmp_path, StudyConfig(recipe="paper"))
