"""What a user sees in their own project after ``agile concept apply``: Label Studio's Data Manager, in
headless Chromium, with the classifier's predictions on every task, sorted by prediction score.

Label Studio 1.23.2 hides "Prediction score", "Prediction results" and "Prediction model versions" in
a new project's Data Manager; a tab saved through ``/api/dm/views`` with its own ``hiddenColumns`` and
``ordering`` shows them, as the Columns menu and a click on the header would.

``AGILE_TEST_SCREENSHOTS=docs`` writes the README's ``label-studio-apply.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them) and selenium.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from agile_modeling.loop import LoopConfig
from sync.adoption import adopt_project
from sync.client import LabelStudioClient
from sync.write_back import apply_predictions
from tests.sync.conftest import wait_for
from tests.sync.test_adoption import SOURCE_CONFIG, _adopting_sync, _predictions, jpeg, upload_images
from tests.sync.test_browser_rating import log_in
from tests.sync.test_connect_flow import chromium  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

IMAGES = 12
SHOWN = ["id", "data.photo", "total_annotations", "predictions_score", "predictions_results", "predictions_model_versions"]
ALL_COLUMNS = [
    "id", "inner_id", "completed_at", "total_annotations", "cancelled_annotations", "total_predictions", "annotators",
    "annotations_results", "annotations_ids", "predictions_score", "predictions_model_versions",
    "predictions_results", "file_upload", "storage_filename", "created_at", "updated_at", "updated_by",
    "avg_lead_time", "draft_exists", "data.photo",
]  # fmt: skip


def data_manager_tab(label_studio, project_id: int) -> int:
    """A Data Manager tab showing the predictions, best scores first (what the Columns menu and a click on
    the "Prediction score" header would save)."""
    hidden = [f"tasks:{c}" for c in ALL_COLUMNS if c not in SHOWN]
    response = httpx.post(
        f"{label_studio.url}/api/dm/views/",
        headers={"Authorization": f"Token {label_studio.credentials.token}"},
        json={
            "project": project_id,
            "data": {
                "title": "Predictions",
                "hiddenColumns": {"explore": hidden, "labeling": hidden},
                "ordering": ["-tasks:predictions_score"],
                "filters": {"conjunction": "and", "items": []},
            },
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_apply_shows_the_scores_in_the_data_manager_sorted(tmp_path, label_studio, chromium):  # noqa: F811
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Harbour photos", SOURCE_CONFIG)
    upload_images(label_studio, project_id, {f"harbour{i:02d}.jpg": jpeg(400 + i) for i in range(IMAGES)})
    concepts = _adopting_sync(tmp_path, label_studio)
    adopt_project(
        concepts, "gourmet tuna", project_id, ["seared tuna", "tuna sushi"], ["canned tuna"],
        positive_choice="Tuna", negative_choice="Not tuna", seed_size=6,
    )  # fmt: skip
    loop = concepts.workspace.loop("gourmet tuna", LoopConfig(seed_size=6))
    loop.session.record_labels([(i, n % 2) for n, i in enumerate(loop.session.batch(0))])
    loop.train()
    report = apply_predictions(concepts, "gourmet tuna")
    assert report.written == IMAGES
    written = {}
    for task_id in concepts.state.source_tasks(project_id):
        [prediction] = _predictions(label_studio, task_id)
        written[task_id] = (prediction["score"], prediction["result"][0]["value"]["choices"][0])
    assert len({round(score, 3) for score, _ in written.values()}) > 1, written  # the scores differ

    tab = data_manager_tab(label_studio, project_id)
    log_in(chromium, label_studio)
    chromium.get(f"{label_studio.url}/projects/{project_id}/data?tab={tab}")
    wait_for(lambda: "Prediction score" in chromium.page_source, 60, "the Data Manager")
    import time

    time.sleep(5)
    shot = tmp_path / "label-studio-apply.png"
    chromium.save_screenshot(str(shot))
    (tmp_path / "page.html").write_text(chromium.page_source)
    print(chromium.find_element("tag name", "body").text)
    print(written)
    print(tmp_path)

    if os.environ.get("AGILE_TEST_SCREENSHOTS"):  # docs/: the README's screenshot, taken on request
        Path(os.environ["AGILE_TEST_SCREENSHOTS"], shot.name).write_bytes(shot.read_bytes())
