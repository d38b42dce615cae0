"""A user adopts their own project from Label Studio's UI, end to end with real parts: the real server,
our backend under gunicorn and a Celery worker, and headless Chromium driving Settings -> Model ->
Connect Model with the concept in the dialog's extra params.

Label Studio 1.23.2's Connect dialog (checked here): Name, Backend URL, an authentication dropdown
(a button over a hidden ``<select name=auth_method>``; "Basic Authentication" adds ``basic_auth_user`` and
``basic_auth_pass``), a ``<textarea name=extra_params>`` ("Any extra params to pass during model
connection", saved and sent to ``/setup`` as the JSON *string* typed), "Interactive preannotations",
and "Validate and Save". A refused ``/setup`` shows "Runtime error / Validation error" with our reason,
both in a modal and inside the dialog, and nothing is saved.

``AGILE_TEST_SCREENSHOTS=docs`` writes the README's ``label-studio-connect.png`` (the filled dialog) and
``label-studio-rate-adopted.png`` (a seed task of the companion project, showing the source's upload).

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them) and selenium.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from agile_modeling.encoders import OpenClipSpec
from agile_modeling.workspace import Workspace
from sync.client import LabelStudioClient
from sync.rounds import BACKEND_TITLE
from sync.state import SOURCE, SyncState
from tests.sync.conftest import wait_for
from tests.sync.test_adoption import jpeg, upload_images
from tests.sync.test_browser_rating import log_in, shown_task

pytestmark = pytest.mark.slow

IMAGES = 12
# the user's own project, in their own words: its config is not a rating config, and the connection must
# stay "Connected" after the adoption all the same (/setup of an adopted project reads it as theirs)
SOURCE_CONFIG = """<View>
  <Image name="photo" value="$photo"/>
  <Choices name="verdict" toName="photo">
    <Choice value="Tuna"/><Choice value="Not tuna"/><Choice value="Unsure"/>
  </Choices>
</View>"""
PARAMS = {"concept": "gourmet tuna", "positive": ["seared tuna", "tuna sushi"], "negative": ["canned tuna"]}


def fill_connect_dialog(driver, label_studio, project_id: int, backend_url: str, extra_params: str | None) -> None:
    """Open the project's Settings -> Model, click Connect Model and fill the dialog (not saved)."""
    from selenium.webdriver.common.by import By

    driver.get(f"{label_studio.url}/projects/{project_id}/settings/ml")
    connect = wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Add machine learning model']"),
        60,
        "the Connect Model button",
    )[0]
    connect.click()
    wait_for(lambda: driver.find_elements(By.NAME, "extra_params"), 30, "the Connect Model dialog")
    driver.find_element(By.NAME, "title").send_keys(BACKEND_TITLE)
    driver.find_element(By.NAME, "url").send_keys(backend_url)
    # the backend runs with basic auth (the `services` fixture): pick it in the dropdown
    driver.find_element(By.XPATH, "//button[normalize-space()='No Authentication']").click()
    wait_for(
        lambda: driver.find_elements(By.XPATH, "//*[@role='option' and normalize-space()='Basic Authentication']"),
        10,
        "the authentication options",
    )[0].click()
    wait_for(lambda: driver.find_elements(By.NAME, "basic_auth_user"), 10, "the basic auth fields")
    driver.find_element(By.NAME, "basic_auth_user").send_keys("label-studio")
    driver.find_element(By.NAME, "basic_auth_pass").send_keys("backend-secret")
    if extra_params is not None:
        driver.find_element(By.NAME, "extra_params").send_keys(extra_params)


def save_dialog(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Save machine learning form']").click()


def ml_backends(label_studio, project_id: int) -> list[dict]:
    """The project's ML connections as the API lists them (which makes Label Studio call /setup)."""
    response = httpx.get(
        f"{label_studio.url}/api/ml",
        params={"project": project_id},
        headers={"Authorization": f"Token {label_studio.credentials.token}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def project_titled(client: LabelStudioClient, title: str) -> int | None:
    return next((int(p.id) for p in client.sdk.projects.list(page_size=100) if p.title == title), None)


def test_connect_model_in_the_ui_adopts_the_project_through_the_worker(tmp_path, label_studio, services, chromium):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    source = client.create_project("Fish market photos", SOURCE_CONFIG)
    upload_images(label_studio, source, {f"market{i:02d}.jpg": jpeg(100 + i) for i in range(IMAGES)})
    task_ids = [t.id for t in client.iter_tasks(source)]
    assert len(task_ids) == IMAGES
    ws = Workspace(tmp_path / "ws")
    ws.image_encoder(OpenClipSpec(model="ViT-S-32", pretrained=None))  # offline: a randomly initialised model
    settings, _, _ = services(ws.root, sync_seconds=600)
    backend_url = str(settings.backend_url)

    log_in(chromium, label_studio)
    fill_connect_dialog(chromium, label_studio, source, backend_url, json.dumps(PARAMS))
    shot = tmp_path / "label-studio-connect.png"
    chromium.save_screenshot(str(shot))
    save_dialog(chromium)

    # Label Studio shows the connection as connected
    wait_for(
        lambda: not chromium.find_elements(By.NAME, "extra_params") and "Connected" in chromium.page_source,
        60,
        "the model card saying Connected",
    )
    body = chromium.find_element(By.TAG_NAME, "body").text
    assert "Connected" in body and BACKEND_TITLE in body and backend_url in body, body
    [saved] = ml_backends(label_studio, source)
    assert saved["state"] == "CO" and saved["auth_method"] == "BASIC_AUTH"
    assert json.loads(saved["extra_params"]) == PARAMS  # the textarea's text, saved as a string

    # the worker adopts the project: every task mapped to a pool image, the companion project seeded
    state_path = ws.root / "label_studio.sqlite"
    wait_for(
        lambda: state_path.exists() and len(SyncState(state_path).source_tasks(source)) == IMAGES,
        600,
        f"the worker to map the {IMAGES} tasks (see {tmp_path}/worker.log)",
        interval=2,
    )
    mapped = SyncState(state_path).source_tasks(source)
    assert sorted(mapped) == sorted(task_ids) and len(set(mapped.values())) == IMAGES
    title = f"{PARAMS['concept']} · rating (Fish market photos)"
    rating = wait_for(
        lambda: (pid := project_titled(client, title)) and len(list(client.iter_tasks(pid))) == IMAGES and pid,
        300,
        f"the rating project {title!r} with its seed batch",
        interval=2,
    )
    state = SyncState(state_path)
    assert state.for_concept("gourmet-tuna").project_id == rating
    assert state.for_concept("gourmet-tuna", SOURCE).project_id == source
    assert ws.sessions.names() == [PARAMS["concept"]]
    # the user rates in the companion project: its tasks show the source project's uploads, loaded by the
    # signed-in browser from Label Studio itself
    chromium.get(f"{label_studio.url}/projects/{rating}/data?labeling=1")
    wait_for(lambda: "Labeling Instructions" in chromium.page_source, 60, "the rating project's instructions")
    ActionChains(chromium).send_keys(Keys.ESCAPE).perform()
    wait_for(lambda: (t := shown_task(chromium)) and t[2], 120, "a seed task with its image loaded")
    loaded = chromium.execute_script(
        "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).map(i => i.naturalWidth)"
    )
    assert 64 in loaded, loaded  # the 64x48 upload of the source project, not a placeholder
    rate_shot = tmp_path / "label-studio-rate-adopted.png"
    chromium.save_screenshot(str(rate_shot))

    # the connection made in the UI is the one the adoption uses, and it stays connected for the concept
    [still] = ml_backends(label_studio, source)
    assert still["id"] == saved["id"] and still["state"] == "CO", still

    # another project connected without extra params: our reason, in the dialog, and nothing saved
    other = client.create_project("Quay photos", SOURCE_CONFIG)
    fill_connect_dialog(chromium, label_studio, other, backend_url, None)
    save_dialog(chromium)
    wait_for(lambda: "belongs to no concept" in chromium.page_source, 60, "the refusal in the dialog")
    shown = chromium.execute_script(
        "return [...document.querySelectorAll('.lsf-modal-ls__body')].map(e => e.innerText).join('\\n')"
    )
    assert f"Label Studio project {other} belongs to no concept of this backend's workspace" in shown, shown
    assert f"agile concept new NAME --from-project {other}" in shown and "extra params" in shown, shown
    assert chromium.find_elements(By.NAME, "extra_params")  # the dialog stays open
    assert ml_backends(label_studio, other) == []

    if os.environ.get("AGILE_TEST_SCREENSHOTS"):  # docs/: the README's screenshot, taken on request
        for taken in (shot, rate_shot):
            Path(os.environ["AGILE_TEST_SCREENSHOTS"], taken.name).write_bytes(taken.read_bytes())
