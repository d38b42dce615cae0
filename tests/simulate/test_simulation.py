"""The simulated session on the shared real CLIP embeddings proves the engine end to end."""

import numpy as np
import pytest

from agile_modeling.simulate import SimulatedUser, SimulationContext, load_suite, simulate_session
from agile_modeling.simulate.report import results_table, write_report
from agile_modeling.simulate.runner import _random_draw


def test_simulated_user_answers_from_truth_with_its_error_rate():
    truth = np.arange(10000) % 3 == 0
    assert SimulatedUser(truth).rate([0, 1, 3]) == [1, 0, 1]
    noisy = np.array(SimulatedUser(truth, error_rate=0.1, seed=1).rate(np.arange(10000)))
    assert 0.08 < np.mean(noisy != truth) < 0.12


def test_suite_ground_truth_names_real_classes(shared_data):
    suite = load_suite()
    assert len(suite) >= 30 and sum(s.difficulty == "hard" for s in suite) >= 10
    assert len({s.title for s in suite}) == len(suite)
    for spec in suite:
        assert spec.ground_truth(shared_data.pool).sum() > 20, spec.title
        assert spec.ground_truth(shared_data.test).sum() >= 9, spec.title
        for phrase in spec.concept().phrases:
            assert phrase in shared_data.vocabulary, phrase
        crowd, user = spec.crowd_truth(shared_data.pool), spec.ground_truth(shared_data.pool)
        if spec.difficulty == "hard":  # the crowd's literal reading disagrees with the user somewhere
            assert (crowd != user).sum() > 10, spec.title
        else:
            assert (crowd == user).all(), spec.title
    demo = load_suite(demo=True)
    assert [s.title for s in demo][:2] == ["small dog breeds", "cats"] and len(demo) == 6


@pytest.mark.slow
def test_small_dog_breeds_goes_far_beyond_zero_shot(shared_data, tmp_path):
    spec = next(s for s in load_suite() if s.title == "small dog breeds")
    ctx = SimulationContext.build(shared_data)
    res = simulate_session(spec, ctx, tmp_path, rounds=5, batch_size=100)
    auc = [r.metrics["auc_pr"] for r in res.rounds]
    assert [r.num_labels for r in res.rounds] == [100, 200, 300, 400, 500, 600]
    assert res.zero_shot["auc_pr"] < 0.4
    assert auc[-1] >= 0.95 and auc[-1] > auc[0]
    paths = write_report([res], tmp_path / "report", {"rounds": 5})
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "small dog breeds" in results_table([res])


def test_a_simulated_crowd_takes_the_majority_of_independent_noisy_raters():
    from agile_modeling.simulate.users import SimulatedCrowd

    truth = np.arange(20000) % 4 == 0
    crowd = SimulatedCrowd(truth, raters=3, error_rate=0.2, seed=3)
    votes = crowd.votes(np.arange(20000))
    assert votes.shape == (3, 20000) and all(0.18 < np.mean(v != truth) < 0.22 for v in votes)
    majority = np.array(crowd.rate(np.arange(20000)))
    # the majority of 3 is wrong only when 2 or 3 raters are: 3 p^2 (1-p) + p^3 = 0.104 for p = 0.2
    assert 0.09 < np.mean(majority != truth) < 0.12
    with pytest.raises(ValueError, match="odd"):
        SimulatedCrowd(truth, raters=2)


@pytest.mark.slow
def test_on_a_hard_concept_the_users_model_beats_the_crowds(shared_data, tmp_path):
    """The paper's finding 4.3.2 in miniature: the crowd reads "small dog breeds" literally."""
    spec = next(s for s in load_suite() if s.title == "small dog breeds")
    ctx = SimulationContext.build(shared_data)
    user = simulate_session(spec, ctx, tmp_path / "user", rounds=2, batch_size=100)
    crowd = simulate_session(spec, ctx, tmp_path / "crowd", rounds=2, batch_size=100, rater="crowd")
    assert (
        crowd.rounds[-1].num_labels == 300
        and crowd.rounds[-1].metrics["auc_pr"] < user.rounds[-1].metrics["auc_pr"] - 0.05
    )


def test_passive_learning_draws_every_batch_at_random_and_has_no_model_before_a_positive(shared_data, tmp_path):
    # the rarest concept of the suite (0.1% of the pool), and a seed whose first random batch of 20 misses it
    suite = load_suite()
    spec = min(suite, key=lambda s: s.ground_truth(shared_data.pool).mean())
    truth = spec.ground_truth(shared_data.pool)
    nothing = np.zeros(0, np.int64)
    seed = next(k for k in range(50) if not truth[_random_draw(len(truth), 20, nothing, k)].any())
    ctx = SimulationContext.build(shared_data)
    res = simulate_session(
        spec, ctx, tmp_path / "a", rounds=3, batch_size=20, strategy="random", seed_batch="random", seed=seed
    )
    truth_test = spec.ground_truth(shared_data.test)
    assert [r.num_labels for r in res.rounds] == [20, 40, 60, 80]
    no_model = [r for r in res.rounds if r.num_positive == 0]
    assert no_model and no_model[0].round == 0
    for r in no_model:  # nothing to train on: a constant score, whose AUC-PR is the share of positives
        assert r.model_version == "-" and r.metrics["auc_pr"] == pytest.approx(truth_test.mean(), abs=1e-9)
    # the seed batch is a uniform draw, not the phrases' neighbours: few of it are positives
    phrase = simulate_session(spec, ctx, tmp_path / "b", rounds=0, batch_size=20)
    assert phrase.rounds[0].num_positive > res.rounds[0].num_positive
    with pytest.raises(ValueError, match="seed_batch must be one of phrases, random"):
        simulate_session(spec, ctx, tmp_path / "c", rounds=0, seed_batch="uniform")


def test_a_multi_mode_concept_names_disjoint_modes_that_make_its_truth(shared_data):
    from dataclasses import replace
    from pathlib import Path

    from agile_modeling.simulate.suite import SuiteError

    (spotted,) = load_suite(Path(__file__).parents[2] / "benchmarks" / "multimode_concepts.json")
    modes = spotted.mode_truth(shared_data.test)
    assert set(modes) == {"dalmatians", "leopards", "polka dots"}
    assert all(m.sum() >= 20 for m in modes.values())
    np.testing.assert_array_equal(np.any(list(modes.values()), axis=0), spotted.ground_truth(shared_data.test))
    overlapping = replace(spotted, modes={**spotted.modes, "big cats": {"caltech101": ["leopard"]}})
    with pytest.raises(SuiteError, match="disjoint"):
        overlapping.mode_truth(shared_data.test)
    incomplete = replace(spotted, modes={"dalmatians": spotted.modes["dalmatians"]})
    with pytest.raises(SuiteError, match="exactly its truth"):
        incomplete.mode_truth(shared_data.test)
    assert load_suite()[0].mode_truth(shared_data.test) == {}  # most concepts have no modes
