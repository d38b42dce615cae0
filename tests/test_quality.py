"""Per-version quality on evaluation ratings; metrics against scikit-learn; user minutes; plot."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from agile_modeling.quality import (
    plot_quality,
    quality_table,
    user_minutes_by_round,
    version_quality,
    zero_shot_quality,
)
from tests.test_loop import make_loop


def test_every_version_is_scored_on_the_evaluation_ratings(tmp_path, clustered_pool):
    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    for i in seed:
        loop.session.record_label(i, int(labels[i] == 0), lead_time=3.0)
    v1, clf1 = loop.train()
    batch = loop.next_batch(clf1)
    for i in batch:
        loop.session.record_label(i, int(labels[i] == 0), lead_time=1.5)
    v2, clf2 = loop.train()
    rng = np.random.default_rng(0)
    held_out = np.setdiff1d(np.arange(len(labels)), seed + batch)
    eval_ids = rng.choice(held_out, 400, replace=False)
    evaluation = {int(i): int(labels[i] == 0) for i in eval_ids}

    rows = version_quality(loop.session, loop.registry, loop.pool, evaluation)
    assert [r.name for r in rows] == ["alpha-v1", "alpha-v2"] and [r.num_labels for r in rows] == [60, 100]
    assert rows[0].user_minutes == pytest.approx(60 * 3.0 / 60) and rows[1].user_minutes == pytest.approx(3.0 + 1.0)
    ids = np.array(sorted(evaluation))
    y = np.array([evaluation[i] for i in ids])
    p = clf2.predict_proba(loop.pool.take(ids).astype(np.float32))
    m = rows[1].metrics
    assert m["auc_pr"] == pytest.approx(average_precision_score(y, p))
    assert m["auc_roc"] == pytest.approx(roc_auc_score(y, p))
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.5)) and m["accuracy"] == pytest.approx(
        accuracy_score(y, p >= 0.5)
    )

    text = loop.text_encoder.encode_texts(["alpha"])[0]
    zs = zero_shot_quality(loop.pool, text, evaluation)
    cos = loop.pool.take(ids).astype(np.float32) @ text
    assert zs["auc_pr"] == pytest.approx(average_precision_score(y, cos), rel=1e-5)
    assert zs["f1"] == pytest.approx(f1_score(y, cos >= 0.28))

    table = quality_table(rows, zs)
    assert table.count("\n") == 4 and "| alpha-v2 | 1 | 100 | 4.0 |" in table and "| zero-shot CLIP |" in table
    png = plot_quality(rows, zs, tmp_path / "q.png", "alpha")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def test_minutes_are_none_when_the_tool_gave_no_lead_time(tmp_path, clustered_pool):
    loop, labels = make_loop(tmp_path, clustered_pool)
    seed = loop.start()
    loop.session.record_labels((i, int(labels[i] == 0)) for i in seed)
    assert user_minutes_by_round(loop.session) == {0: None}


def test_an_evaluation_set_with_too_few_positives_says_so_and_what_to_do():
    from agile_modeling.quality import MIN_EVALUATION_CLASS, evaluation_warning

    no_cats = {i: 0 for i in range(49)}
    warning = evaluation_warning(no_cats, per_stratum=20)
    assert warning and "only 0 positive ratings" in warning and "--per-stratum 40" in warning
    few = {**no_cats, **{100 + i: 1 for i in range(MIN_EVALUATION_CLASS - 1)}}
    assert "only 9 positive ratings" in evaluation_warning(few, per_stratum=20)
    enough = {**no_cats, **{100 + i: 1 for i in range(MIN_EVALUATION_CLASS)}}
    assert evaluation_warning(enough, per_stratum=20) is None
    assert "only 3 negative ratings" in evaluation_warning({i: int(i >= 3) for i in range(40)}, per_stratum=20)
