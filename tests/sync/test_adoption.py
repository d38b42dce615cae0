"""A user's own Label Studio project, adopted through the CLI in a subprocess against the real server:
images uploaded as files, existing annotations with the user's own choice names, a broken task;
rated in the companion project, predictions written back and read from the server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from agile_cli.services import service_env
from agile_modeling.encoders import OpenClipSpec
from agile_modeling.workspace import Workspace
from sync.client import LabelStudioClient
from sync.rounds import IMAGE_ID
from sync.settings import Settings
from sync.state import SOURCE, SyncState
from tests.sync.conftest import run_agile, wait_for

pytestmark = pytest.mark.slow

SOURCE_CONFIG = """<View>
  <Image name="photo" value="$photo"/>
  <Choices name="verdict" toName="photo">
    <Choice value="Tuna"/><Choice value="Not tuna"/><Choice value="Unsure"/>
  </Choices>
</View>"""


def jpeg(seed: int) -> bytes:
    """A small distinct photo-like image (random blocks, one dominant hue per seed)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    pixels = np.clip(base + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def upload_images(label_studio, project_id: int, images: dict[str, bytes]) -> list[int]:
    """Create one task per file through Label Studio's file import (tasks get /data/upload/... URLs)."""
    response = httpx.post(
        f"{label_studio.url}/api/projects/{project_id}/import",
        headers={"Authorization": f"Token {label_studio.credentials.token}"},
        files=[(name, (name, data, "image/jpeg")) for name, data in images.items()],  # one field per file
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return list(response.json().get("task_ids") or [])


@pytest.fixture
def source_project(label_studio):
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Harbour photos", SOURCE_CONFIG)
    upload_images(label_studio, project_id, {f"photo{i:02d}.jpg": jpeg(i) for i in range(24)})
    return client, project_id


def test_adopt_rate_and_write_back_an_uploaded_project(tmp_path, label_studio, source_project):
    client, project_id = source_project
    tasks = sorted(client.iter_tasks(project_id), key=lambda t: t.id)
    assert len(tasks) == 24 and all(t.data["photo"].startswith("/data/upload/") for t in tasks)
    # the user's own annotations, in their own words; one task whose file is gone
    client.create_annotation(tasks[0].id, _verdict("Tuna"))
    client.create_annotation(tasks[1].id, _verdict("Not tuna"))
    client.create_annotation(tasks[2].id, _verdict("Unsure"))
    client.import_tasks(project_id, [{"data": {"photo": f"/data/upload/{project_id}/gone.jpg"}}])

    ws = Workspace(tmp_path / "ws")
    ws.image_encoder(OpenClipSpec(model="ViT-S-32", pretrained=None))  # offline: a randomly initialised model
    env = service_env(
        Settings(
            label_studio_url=label_studio.url,
            label_studio_api_key=label_studio.credentials.token,
            workspace=ws.root,
            prefetch=0.0,
        )
    )
    adopt = [
        "concept", "new", "tuna", "--from-project", str(project_id), "--positive", "tuna on a plate",
        "--positive-choice", "Tuna", "--negative-choice", "Not tuna", "--size", "6", "--batch-size", "4",
    ]  # fmt: skip
    done = run_agile(*adopt, env=env)
    assert done.returncode == 0, done.stderr
    assert "25 tasks, 24 newly mapped (24 images embedded" in done.stdout
    assert "1 skipped" in done.stdout and "gone.jpg" in done.stdout and "deleted" in done.stdout, done.stdout
    assert "2 existing annotations imported as ratings" in done.stdout

    state = SyncState(ws.root / "label_studio.sqlite")
    mapped = state.source_tasks(project_id)
    assert sorted(mapped) == [t.id for t in tasks] and len(set(mapped.values())) == 24
    assert ws.store().uris([mapped[tasks[0].id]])[0] == f"{label_studio.url}{tasks[0].data['photo']}"
    labels = ws.sessions.open("tuna").labels()
    assert labels == {mapped[tasks[0].id]: 1, mapped[tasks[1].id]: 0}

    status = run_agile("concept", "status", "tuna", env=env)
    assert f"adopted Label Studio project {project_id}" in status.stdout and "24 tasks in the pool, 1 unreadable" in (
        status.stdout
    )
    assert "gone.jpg" in status.stdout

    # an adoption again maps nothing new and imports nothing twice
    again = run_agile(*adopt, env=env)
    assert again.returncode == 0, again.stderr
    assert "0 newly mapped" in again.stdout and "0 existing annotations imported" in again.stdout

    # the rounds go to the companion project; the source project is left as it was
    rating_id = state.for_concept("tuna").project_id
    assert rating_id != project_id and "Harbour photos" in client.project_title(rating_id)
    seed = list(client.iter_tasks(rating_id))
    assert len(seed) == 6
    photo_of = {image: task.data["photo"] for task in tasks for t_id, image in mapped.items() if t_id == task.id}
    assert all(t.data["image"] == f"{label_studio.url}{photo_of[t.data[IMAGE_ID]]}" for t in seed)
    for n, task in enumerate(seed):
        client.create_annotation(task.id, _rating("Positive" if n % 2 else "Negative"))
    synced = run_agile("concept", "sync", "tuna", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "trained tuna-v1" in synced.stdout, synced.stdout
    source_annotations = [len(t.annotations) for t in sorted(client.iter_tasks(project_id), key=lambda t: t.id)]
    assert source_annotations[:3] == [1, 1, 1] and sum(source_annotations) == 3

    # write back, killed (SIGKILL) once Label Studio took its second chunk of 10 and before it was recorded:
    # the next apply asks Label Studio about that chunk and writes the 4 left, nothing twice
    killed = run_agile(
        "concept", "apply", "tuna", "--chunk", "10", env={**env, "AGILE_FAULT_POINT": "predictions-imported:2"}
    )
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    applied = run_agile("concept", "apply", "tuna", "--chunk", "10", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "tuna-v1 written onto 4 tasks" in applied.stdout and "20 had it already" in applied.stdout, applied.stdout
    # one prediction of tuna-v1 on every mapped task, score = probability of the chosen choice
    by_task = {t.id: t for t in client.iter_tasks(project_id)}
    version = ws.registry("tuna").latest()
    assert version is not None
    probs = version.load().predict_proba(
        ws.store().vectors().take(np.asarray([mapped[t.id] for t in tasks])).astype(np.float32)
    )
    for task, p in zip(tasks, probs):
        predictions = _predictions(label_studio, task.id)
        assert [pr["model_version"] for pr in predictions] == ["tuna-v1"]
        choice = predictions[0]["result"][0]["value"]["choices"]
        assert choice == (["Tuna"] if p >= 0.5 else ["Not tuna"])
        assert predictions[0]["score"] == pytest.approx(max(p, 1 - p), abs=1e-5)
    assert by_task  # the listing still works with predictions on every task

    # the same version again writes nothing
    repeat = run_agile("concept", "apply", "tuna", env=env)
    assert repeat.returncode == 0 and "written onto 0 tasks" in repeat.stdout and "24 had it already" in repeat.stdout

    # tasks imported later are embedded by the next sync
    client.import_tasks(project_id, [{"data": {"photo": tasks[3].data["photo"]}}])
    upload_images(label_studio, project_id, {"late.jpg": jpeg(99)})
    synced = run_agile("concept", "sync", "tuna", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "source project" in synced.stdout and "2 answers recorded" in synced.stdout, synced.stdout
    assert len(state.source_tasks(project_id)) == 26
    assert state.for_concept("tuna", SOURCE) is not None


def test_adoption_refuses_a_project_without_an_image(tmp_path, label_studio):
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Texts", '<View><Text name="t" value="$text"/></View>')
    ws = Workspace(tmp_path / "ws")
    env = service_env(
        Settings(
            label_studio_url=label_studio.url, label_studio_api_key=label_studio.credentials.token, workspace=ws.root
        )
    )
    done = run_agile("concept", "new", "x", "--from-project", str(project_id), "--positive", "x", env=env)
    assert done.returncode != 0
    assert "no <Image" in done.stderr and "Traceback" not in done.stderr
    assert SyncState(ws.root / "label_studio.sqlite").for_concept("x", SOURCE) is None


def _verdict(choice: str) -> list[dict]:
    return [{"from_name": "verdict", "to_name": "photo", "type": "choices", "value": {"choices": [choice]}}]


def _rating(choice: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]


def _predictions(label_studio, task_id: int) -> list[dict]:
    response = httpx.get(
        f"{label_studio.url}/api/predictions/",
        params={"task": task_id},
        headers={"Authorization": f"Token {label_studio.credentials.token}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def _adopting_sync(tmp_path, label_studio):
    from sync.rounds import ConceptSync

    ws = Workspace(tmp_path / "ws")
    ws.image_encoder(OpenClipSpec(model="ViT-S-32", pretrained=None))
    settings = Settings(
        label_studio_url=label_studio.url, label_studio_api_key=label_studio.credentials.token, workspace=ws.root
    )
    return ConceptSync(settings, ws)


def test_projects_on_local_files_and_s3_storage_are_adopted_and_shown_in_the_rating_project(
    tmp_path, label_studio, s3_server
):
    """Images Label Studio keeps in a local-files storage and in an S3 bucket (a real S3-compatible server):
    embedded through Label Studio, and the companion project's tasks show them through Label Studio."""
    import uuid

    from sync.adoption import adopt_project

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    token = {"Authorization": f"Token {label_studio.credentials.token}"}
    files = {f"p{i}.jpg": jpeg(100 + i) for i in range(8)}

    folder = label_studio.local_files_root / f"harbour-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    local_id = client.create_project("Local harbour", SOURCE_CONFIG)
    storage = client.sdk.import_storage.local.create(project=local_id, path=str(folder), use_blob_urls=True)
    client.sdk.import_storage.local.sync(id=storage.id)

    bucket = f"harbour-{uuid.uuid4().hex[:8]}"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"pics/{name}", Body=data)
    s3_id = client.create_project("S3 harbour", SOURCE_CONFIG)
    s3_storage = client.sdk.import_storage.s3.create(
        project=s3_id, bucket=bucket, prefix="pics", s3endpoint=s3_server.endpoint, region_name=s3_server.region,
        aws_access_key_id=s3_server.key, aws_secret_access_key=s3_server.secret, use_blob_urls=True, presign=True,
    )  # fmt: skip
    client.sdk.import_storage.s3.sync(id=s3_storage.id)

    concepts = _adopting_sync(tmp_path, label_studio)
    tuna = {"positive_choice": "Tuna", "negative_choice": "Not tuna"}
    local = adopt_project(concepts, "local tuna", local_id, ["tuna"], seed_size=4, **tuna)
    assert (local.embedding.mapped, local.embedding.embedded, local.embedding.skipped) == (8, 8, {})
    # the same bytes in the bucket: mapped onto the images already embedded, nothing read twice into the pool
    remote = adopt_project(concepts, "s3 tuna", s3_id, ["tuna"], seed_size=4, **tuna)
    assert (remote.embedding.mapped, remote.embedding.skipped) == (8, {})
    store = concepts.workspace.store()
    assert len(store) == 8
    assert set(concepts.state.source_tasks(local_id).values()) == set(concepts.state.source_tasks(s3_id).values())

    for project_id in (local.rating_project_id, remote.rating_project_id):
        assert project_id is not None
        for task in client.iter_tasks(project_id):
            url = task.data["image"]
            assert url.startswith(label_studio.url)
            assert httpx.get(url, headers=token, follow_redirects=True, timeout=30).content in files.values()

    # rated in the companion projects (through Label Studio, recorded by a sync), then written back to both
    from sync.write_back import apply_predictions

    for name, report, source_id in (("local tuna", local, local_id), ("s3 tuna", remote, s3_id)):
        assert report.rating_project_id is not None
        for n, task in enumerate(client.iter_tasks(report.rating_project_id)):
            client.create_annotation(task.id, _rating("Positive" if n % 2 else "Negative"))
        assert concepts.sync(name).trained is not None
        assert apply_predictions(concepts, name).written == 8
        version = concepts.workspace.registry(name).latest()
        assert version is not None
        for task_id in concepts.state.source_tasks(source_id):
            (prediction,) = _predictions(label_studio, task_id)
            assert prediction["model_version"] == version.name and 0.5 <= prediction["score"] <= 1.0
            assert prediction["result"][0]["value"]["choices"][0] in ("Tuna", "Not tuna")


def test_tasks_whose_image_cannot_be_read_are_listed_with_the_reason(tmp_path, label_studio):
    from sync.adoption import adopt_project

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Links", SOURCE_CONFIG)
    client.import_tasks(
        project_id,
        [{"data": {"photo": "ftp://example.org/a.jpg"}}, {"data": {"photo": "http://10.0.0.1/inside.jpg"}}],
    )
    upload_images(label_studio, project_id, {"ok.jpg": jpeg(7)})
    concepts = _adopting_sync(tmp_path, label_studio)
    report = adopt_project(concepts, "links", project_id, ["tuna"], seed_size=2)
    assert report.embedding.mapped == 1 and len(report.embedding.skipped) == 2
    assert all(f"skipped task {t}" in report.summary() for t in report.embedding.skipped)
    reasons = " ".join(report.embedding.skipped.values())
    assert "ftp://example.org/a.jpg" in reasons and "10.0.0.1" in reasons
    assert set(concepts.state.skipped_source_tasks(project_id)) == set(report.embedding.skipped)


def test_tasks_deleted_in_the_source_project_are_forgotten_and_apply_goes_on(tmp_path, label_studio):
    from agile_modeling.loop import LoopConfig
    from sync.adoption import adopt_project
    from sync.write_back import apply_predictions

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Deletions", SOURCE_CONFIG)
    upload_images(label_studio, project_id, {f"d{i}.jpg": jpeg(200 + i) for i in range(6)})
    concepts = _adopting_sync(tmp_path, label_studio)
    adopt_project(concepts, "deleted", project_id, ["tuna"], seed_size=6)
    loop = concepts.workspace.loop("deleted", LoopConfig(seed_size=6))
    loop.session.record_labels([(i, n % 2) for n, i in enumerate(loop.session.batch(0))])
    loop.train()
    doomed = sorted(concepts.state.source_tasks(project_id))[:2]
    for task_id in doomed:
        client.sdk.tasks.delete(id=task_id)
    report = apply_predictions(concepts, "deleted", chunk=2)
    assert report.written == 4 and set(concepts.state.source_tasks(project_id)).isdisjoint(doomed)


def test_a_failed_adoption_links_nothing_and_a_taken_project_is_named(tmp_path, label_studio):
    from agile_modeling.simulate.shared_pool import SHARED_ENCODER
    from sync.adoption import AdoptionError, adopt_project
    from sync.state import UnknownProjectError

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Mismatch", SOURCE_CONFIG)
    upload_images(label_studio, project_id, {"m.jpg": jpeg(300)})
    concepts = _adopting_sync(tmp_path, label_studio)
    concepts.workspace.store(512, SHARED_ENCODER)  # a pool of another encoder's space: embedding is refused
    with pytest.raises(Exception, match="holds 512-d embeddings"):
        adopt_project(concepts, "mismatch", project_id, ["tuna"])
    with pytest.raises(UnknownProjectError):
        concepts.state.for_project(project_id)  # nothing half-adopted for the worker to keep syncing

    ok = _adopting_sync(tmp_path / "second", label_studio)
    adopt_project(ok, "first", project_id, ["tuna"], seed_size=1)
    with pytest.raises(AdoptionError, match=f"project {project_id} is already adopted by concept 'first'"):
        adopt_project(ok, "second", project_id, ["tuna"])


def _adopted_with_seed_rated(tmp_path, label_studio, concept: str, images: int, first_seed: int):
    """A project of ``images`` uploads adopted as ``concept`` (seed batch of 4, its ratings recorded):
    ``(client, project id, ConceptSync, the concept's loop)``."""
    from agile_modeling.loop import LoopConfig
    from sync.adoption import adopt_project

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project(f"{concept} photos", SOURCE_CONFIG)
    upload_images(label_studio, project_id, {f"p{i}.jpg": jpeg(first_seed + i) for i in range(images)})
    concepts = _adopting_sync(tmp_path, label_studio)
    adopt_project(
        concepts, concept, project_id, ["tuna"], seed_size=4, positive_choice="Tuna", negative_choice="Not tuna"
    )
    loop = concepts.workspace.loop(concept, LoopConfig(seed_size=4))
    loop.session.record_labels([(i, n % 2) for n, i in enumerate(loop.session.batch(0))])
    return client, project_id, concepts, loop


def test_predict_reads_a_new_task_of_an_adopted_project_through_label_studio(tmp_path, label_studio):
    """A task imported after the last sync is not in the pool yet: /predict reads its image where Label
    Studio keeps it (an upload, with the backend's API key) instead of answering nothing."""
    from ml_backend.app import create_app

    client, project_id, concepts, loop = _adopted_with_seed_rated(tmp_path, label_studio, "late", 4, 500)
    loop.train()
    upload_images(label_studio, project_id, {"late.jpg": jpeg(599)})
    (late,) = client.task_ids(project_id) - set(concepts.state.source_tasks(project_id))
    photo = next(t.data["photo"] for t in client.iter_tasks(project_id) if t.id == late)

    backend = create_app(concepts.settings, enqueue=lambda *a, **k: None).test_client()
    task = {"id": late, "data": {"photo": photo}}
    answer = backend.post(
        "/predict", json={"project": f"{project_id}.1", "label_config": SOURCE_CONFIG, "tasks": [task]}
    )
    assert answer.status_code == 200 and not answer.json.get("errors"), answer.json
    ((prediction,),) = answer.json["results"]
    assert prediction["result"][0]["value"]["choices"][0] in ("Tuna", "Not tuna")


def test_with_apply_each_round_the_worker_writes_each_new_model_onto_the_source_project(
    tmp_path, label_studio, services
):
    """AGILE_APPLY_EACH_ROUND=1: the real worker trains on the companion project's ratings, then writes the new
    model onto every task of the user's project; the next round's model replaces it."""
    from sync.adoption import adopt_project

    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    project_id = client.create_project("Applied every round", SOURCE_CONFIG)
    upload_images(label_studio, project_id, {f"r{i}.jpg": jpeg(700 + i) for i in range(6)})
    source_tasks = sorted(client.task_ids(project_id))
    concepts = _adopting_sync(tmp_path, label_studio)
    report = adopt_project(concepts, "applied", project_id, ["tuna"], seed_size=4, batch_size=2)
    rating = report.rating_project_id
    assert rating is not None
    services(concepts.workspace.root, sync_seconds=2, apply_each_round=True)

    def versions_on_source() -> set[str]:
        return {p["model_version"] for t in source_tasks for p in _predictions(label_studio, t)}

    def rate_open_tasks() -> None:
        for n, task in enumerate(t for t in client.iter_tasks(rating) if not t.annotations):
            client.create_annotation(task.id, _rating("Positive" if n % 2 else "Negative"))

    rate_open_tasks()  # the seed batch
    wait_for(lambda: versions_on_source() == {"applied-v1"}, 240, "the worker to write applied-v1 onto every task")
    assert all(len(_predictions(label_studio, t)) == 1 for t in source_tasks)
    wait_for(lambda: len(list(client.iter_tasks(rating))) == 6, 120, "round 1's batch in the rating project")
    rate_open_tasks()
    wait_for(lambda: versions_on_source() == {"applied-v2"}, 240, "applied-v2 to replace applied-v1")
    assert all(len(_predictions(label_studio, t)) == 1 for t in source_tasks)


def test_a_chunk_in_flight_when_an_apply_died_is_settled_by_the_next_apply_of_any_version(tmp_path, label_studio):
    """The state a write-back killed after Label Studio took its chunk leaves behind (the chunk sent, not
    recorded), one of its tasks then deleted by the user, and the next apply being of a newer version (as
    with AGILE_APPLY_EACH_ROUND): the old version's predictions are found and removed, nothing fails."""
    from sync.adoption import source_config
    from sync.write_back import apply_predictions

    client, project_id, concepts, loop = _adopted_with_seed_rated(tmp_path, label_studio, "resumed", 6, 800)
    v1, _ = loop.train()
    state, schema = concepts.state, source_config(concepts, project_id)
    chunk = sorted(state.source_tasks(project_id))[:3]
    state.record_writing(project_id, chunk, v1.name)
    client.import_predictions(project_id, [{"task": t, **schema.prediction_record(0.7, v1.name)} for t in chunk])
    client.sdk.tasks.delete(id=chunk[0])  # deleted while in flight: Label Studio answers 400 about it
    v2, _ = loop.train()

    report = apply_predictions(concepts, "resumed")
    assert report.model_version == v2.name and report.written == 5 and report.replaced == (v1.name,)
    for task in sorted(client.task_ids(project_id)):
        assert [p["model_version"] for p in _predictions(label_studio, task)] == [v2.name]
    assert state.writing_versions(project_id) == set()
