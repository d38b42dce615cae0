"""A person rating in Label Studio's own UI, in headless Chromium (issue 14): hotkeys only, the
images served by our backend, and the label stream going on into the next batch by itself.

Label Studio 1.23's choice hotkeys *toggle* (``Choice.toggleSelected``, whatever ``choice=`` says):
the key of a choice already selected clears it, which is how a pre-selected model guess turned
into 'Checkbox "label" is required' on 8-12 of 20 tasks. So tasks open with nothing selected
(the default; ``AGILE_PREFILL_PREDICTIONS=1`` pre-selects, and then agreeing is Ctrl+Enter alone),
and every key here sets its choice, on tasks where it agrees with the model's guess and where not.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them) and selenium.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from agile_cli.services import import_demo_pool
from agile_modeling.concepts import Concept
from agile_modeling.workspace import Workspace
from label_config import parse_rating_config
from sync.client import LabelStudioClient
from sync.rounds import ROUND, ConceptSync, latest_annotation
from tests.browser import headless_chromium
from tests.sync.conftest import wait_for
from tests.sync.test_label_studio_loop import rate

pytestmark = pytest.mark.slow

SEED, BATCH = 10, 10


@pytest.fixture
def browser():
    with headless_chromium(1400, 900) as driver:
        yield driver


def log_in(driver, label_studio) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{label_studio.url}/user/login/")
    driver.find_element(By.NAME, "email").send_keys(label_studio.credentials.username)
    driver.find_element(By.NAME, "password").send_keys(label_studio.credentials.password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    wait_for(lambda: "/user/login" not in driver.current_url, 60, "the login")


def shown_task(driver) -> tuple[int, str | None, bool] | None:
    """``(task id, the checked choice or None, whether its image has loaded)`` of the task on screen."""
    return driver.execute_script("""
        const id = document.querySelector('.lsf-current-task__task-id');
        const radios = [...document.querySelectorAll('input.ant-radio-input')];
        const loaded = [...document.images].some(  // Label Studio fetches the task's image into a blob: URL
            i => i.complete && i.naturalWidth > 0 && (i.src.startsWith('blob:') || i.src.includes('/images/')));
        if (!id || radios.length < 2) return null;
        const checked = radios.find(r => r.checked);
        return [parseInt(id.firstChild.textContent), checked ? checked.name : null,
                loaded];
    """)


def model_guess(client: LabelStudioClient, task_id: int) -> str:
    """The choice of the task's newest prediction (the model's guess, not shown to the rater)."""
    predictions = client.sdk.tasks.get(id=task_id).predictions or []
    newest = max(predictions, key=lambda p: p["id"] if isinstance(p, dict) else p.id)
    result = newest["result"] if isinstance(newest, dict) else newest.result
    return result[0]["value"]["choices"][0]


def test_hotkeys_set_the_choice_agreeing_or_not_and_the_stream_goes_on_into_the_next_batch(
    tmp_path, label_studio, services, browser
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ws = Workspace(tmp_path / "ws")
    import_demo_pool(ws)  # the CIFAR-10 photos with their pixels, served by our backend as `agile up` does
    store = ws.store()
    truth = np.array([uri.endswith("-cat.png") for uri in store.uris(range(len(store)))])
    name = "cat"
    ws.sessions.create(Concept(name, ("cat",), ("dog",), "a cat, any breed, any pose"))
    settings, _, _ = services(ws.root, sync_seconds=600, prefetch=0.5)  # the product's defaults otherwise
    project = ConceptSync(settings, ws).publish(name, seed_size=SEED, batch_size=BATCH).project_id
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    schema = parse_rating_config(client.project_label_config(project))
    rate(client, project, list(client.iter_tasks(project)), truth)  # the seed, through the API
    wait_for(
        lambda: (
            sum(t.data[ROUND] == 1 and t.prediction_version is not None for t in client.iter_tasks(project)) == BATCH
        ),
        180,
        "round 1 with predictions",
    )
    round_of = {t.id: t.data[ROUND] for t in client.iter_tasks(project)}

    log_in(browser, label_studio)
    browser.get(f"{label_studio.url}/projects/{project}/data?labeling=1")
    wait_for(lambda: "Labeling Instructions" in browser.page_source, 60, "the instructions")
    time.sleep(1)
    assert "Round 1: 0 of 10 rated." in browser.page_source  # the loop's state opens the stream
    browser.save_screenshot(str(tmp_path / "label-studio-instructions.png"))
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    pressed: list[tuple[int, str, str | None]] = []  # (task, choice pressed, the model's guess)
    for n in range(BATCH + 2):  # all of round 1, then into round 2
        try:
            state = wait_for(
                lambda: (s := shown_task(browser)) and s[0] not in {p[0] for p in pressed} and s[2] and s,
                120,
                f"task {n + 1} of the stream with its image loaded",
            )
        except AssertionError as exc:
            browser.save_screenshot(str(tmp_path / "timeout.png"))
            images = browser.execute_script(
                "return [...document.images].map(i => [i.src.slice(0, 120), i.naturalWidth])"
            )
            raise AssertionError(
                f"{exc}; on screen: {shown_task(browser)}, images {images}, screenshot "
                f"{tmp_path / 'timeout.png'}, logs {browser.get_log('browser')[-5:]}"
            ) from None
        task_id, shown, _ = state
        if n == BATCH // 2:  # half a batch open: round 2 is on its way; the stream must never run dry
            round_of.update({t.id: t.data[ROUND] for t in client.iter_tasks(project)})
        assert shown is None, f"task {task_id} opened with {shown} selected"  # the rater's own judgement
        # the key of the model's guess on even tasks, the other key on odd ones
        guess = model_guess(client, task_id)
        choice = guess if n % 2 == 0 else ({schema.positive, schema.negative} - {guess}).pop()
        ActionChains(browser).send_keys("1" if choice == schema.positive else "2").perform()
        time.sleep(0.3)
        if shown_task(browser)[1] != choice:
            browser.save_screenshot(str(tmp_path / "key.png"))
        assert shown_task(browser)[1] == choice, (
            f"the key un-ticked or missed {choice} on task {task_id} (shown {shown})"
        )
        if n == 0:
            browser.save_screenshot(str(tmp_path / "label-studio-stream.png"))
        ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        pressed.append((task_id, choice, guess))
        wait_for(
            lambda task_id=task_id: any(t.id == task_id and latest_annotation(t) for t in client.iter_tasks(project)),
            30,
            f"task {task_id}'s annotation",
        )
        assert "is required" not in browser.page_source

    annotations = {t.id: latest_annotation(t) for t in client.iter_tasks(project)}
    for task_id, choice, _ in pressed:
        assert schema.label_of(annotations[task_id].result)[0] == (choice == schema.positive)
    assert sum(guess == choice for _, choice, guess in pressed) >= BATCH // 2  # keys agreeing with the model
    round_of.update({t.id: t.data[ROUND] for t in client.iter_tasks(project)})
    assert [round_of[t] for t, _, _ in pressed] == [1] * BATCH + [2, 2]  # the stream went on by itself
    if os.environ.get("AGILE_TEST_SCREENSHOTS"):  # docs/: the README's screenshots, taken on request
        for shot in ("label-studio-stream.png", "label-studio-instructions.png"):
            Path(os.environ["AGILE_TEST_SCREENSHOTS"], shot).write_bytes((tmp_path / shot).read_bytes())
