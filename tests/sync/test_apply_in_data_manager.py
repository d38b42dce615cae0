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

pytestmark = pytest.mark.slow

IMAGES = 12
SHOWN = ["id", "data.photo", "predictions_score", "predictions_results", "predictions_model_versions"]
WIDTHS = {"tasks:id": 80, "tasks:predictions_model_versions": 200, "tasks:predictions_results": 480}
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
                "columnsWidth": WIDTHS,
                "filters": {"conjunction": "and", "items": []},
            },
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


# the header's titles and each row on screen (the table is virtualised: top to bottom), cell texts by title,
# once every row's photo has loaded
SHOWN_TABLE = """
    const heads = [...document.querySelectorAll('.lsf-table-head .lsf-th')].map(e => e.innerText.trim().split('\\n')[0]);
    const rows = [...document.querySelectorAll('[data-testid=table-row]')]
        .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
        .map(r => [...r.querySelectorAll(':scope > .lsf-table__cell')].map(c => c.innerText.trim()));
    const photos = [...document.querySelectorAll('[data-testid=table-row] img')];
    const loaded = photos.length === rows.length && photos.every(i => i.complete && i.naturalWidth > 0);
    return rows.length && loaded ? [heads, rows] : null;
"""
ORDER_SHOWN = """
    const order = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Prediction score');
    const toggle = order && order.nextElementSibling;
    return order ? [order.innerText.trim(), toggle && toggle.getAttribute('aria-label')] : null;
"""


def shown_table(driver) -> tuple[list[str], list[dict[str, str]]] | None:
    shown = driver.execute_script(SHOWN_TABLE)
    if not shown:
        return None
    heads, rows = shown
    return heads, [dict(zip(heads, cells)) for cells in rows if len(cells) == len(heads)]


def test_apply_shows_the_scores_in_the_data_manager_sorted(tmp_path, label_studio, chromium):
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
    table = wait_for(lambda: shown_table(chromium), 60, "the Data Manager's rows with their photos")
    shot = tmp_path / "label-studio-apply.png"
    chromium.save_screenshot(str(shot))

    heads, rows = table
    # a data column's header may carry its type under the name ("photo\nimg"): the first line is the title
    assert ["ID", "Prediction score", "Prediction model versions", "Prediction results", "photo"] == [
        h.split("\n")[0] for h in heads if h
    ], heads
    best_first = sorted(written, key=lambda t: -written[t][0])
    assert 8 <= len(rows) <= IMAGES  # the rows on screen, the best scores first
    assert [(int(r["ID"]), r["Prediction score"]) for r in rows] == [
        (t, f"{written[t][0]:.3f}") for t in best_first[: len(rows)]
    ], rows
    for row in rows:
        _, choice = written[int(row["ID"])]
        assert row["Prediction model versions"] == "gourmet-tuna-v1", row
        assert f"choices: [{choice}]" in row["Prediction results"], row
    # the sort is the tab's own, and the toolbar shows it: descending by prediction score
    assert chromium.execute_script(ORDER_SHOWN) == ["Prediction score", "Sort ascending"]

    if os.environ.get("AGILE_TEST_SCREENSHOTS"):  # docs/: the README's screenshot, taken on request
        Path(os.environ["AGILE_TEST_SCREENSHOTS"], shot.name).write_bytes(shot.read_bytes())
