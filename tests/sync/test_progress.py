"""The loop's state as the rating project shows it (sync/progress.py)."""

from agile_modeling.concepts import Concept
from agile_modeling.session import SessionStore
from sync.progress import progress_lines, project_texts


def test_progress_is_told_in_sentences_and_the_users_words_are_escaped(tmp_path):
    session = SessionStore(tmp_path / "s.sqlite").create(Concept("<img src=x onerror=alert(1)>", ("cats",)))
    assert progress_lines(session) == ["0 ratings so far, 0 positive."]
    session.start_round(0, "seed", [1, 2, 3, 4])
    session.record_labels([(1, 1), (2, 0)])
    session.withdraw_image(3, "unsure")
    session.record_model("c-v1", 0, 2, {})
    lines = progress_lines(session)
    assert lines[:2] == ["Round 0: 2 of 3 rated.", "2 ratings so far, 1 positive."]
    assert "no estimate yet" in lines[2]
    session.update_model_metrics("c-v1", {"cv_auc_pr": 0.8123, "cv_folds": 3, "cv_labels": 2, "cv_positives": 1})
    assert "estimated AUC-PR 0.81 (3-fold cross-validation on your 2 ratings, 1 positive)" in progress_lines(session)[2]
    texts = project_texts(session, "positive: <b>cats</b>")
    assert "<img" not in texts["expert_instruction"] and "&lt;img src=x" in texts["expert_instruction"]
    assert "&lt;b&gt;cats" in texts["expert_instruction"]
