"""A task's image bytes wherever Label Studio keeps them (sync/label_studio_images.py), read from a
real Label Studio server: uploaded files, a local-files storage, and an S3 storage on moto's server,
through Label Studio's presign endpoint and directly with s3fs."""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from agile_modeling.errors import ImageReadError
from sync.client import LabelStudioClient
from sync.label_studio_images import LabelStudioFolders, LabelStudioImages, read_regular_file
from sync.safe_fetch import FetchPolicy
from sync.settings import Settings
from tests.sync.conftest import wait_for

CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
    '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)


def image(color: str, fmt: str = "JPEG", size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, fmt)
    return out.getvalue()


def project(label_studio, title: str) -> tuple[LabelStudioClient, int]:
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    return client, client.create_project(f"{title} {uuid.uuid4().hex[:6]}", CONFIG)


def task_images(client: LabelStudioClient, project_id: int) -> list[str]:
    return [t.data["image"] for t in client.iter_tasks(project_id)]


def served_since(label_studio, start: int, marker: str) -> str:
    """Label Studio's request log from byte ``start`` on, once a request naming ``marker`` is in it: the
    server logs requests in order, so every request before that one is there too."""

    def logged() -> str | None:
        log = label_studio.log_path.read_text()[start:]
        return log if marker in log else None

    served: str = wait_for(logged, 30, f"Label Studio's log of the request for {marker}")
    return served


# --- without a server ------------------------------------------------------------------------------
def test_pool_uri_makes_label_studio_paths_absolute_and_keeps_the_rest():
    images = LabelStudioImages("http://ls.example:8080/", "token", 3)
    assert images.pool_uri("/data/upload/3/a.jpg") == "http://ls.example:8080/data/upload/3/a.jpg"
    assert images.pool_uri("/data/local-files/?d=x/a.png") == "http://ls.example:8080/data/local-files/?d=x/a.png"
    # scheme and host are case-blind: Label Studio's own URL in capitals is still its own (read with the key)
    assert images.pool_uri("HTTP://LS.Example:8080/data/upload/3/A.jpg") == "http://ls.example:8080/data/upload/3/A.jpg"
    assert images.pool_uri("http://other.example:8080/data/upload/3/a.jpg").startswith("http://other.example")
    for kept in ("s3://b/k.jpg", "gs://b/k.jpg", "azure-blob://c/k.jpg", "https://img.example/a.jpg", "data:,x"):
        assert images.pool_uri(kept) == kept
    # the task API hands cloud URIs out resolved: the pool keeps the cloud URI, not the task's proxy URL
    fileuri = base64.urlsafe_b64encode(b"s3://bucket/dir/a.jpg").decode()
    assert images.pool_uri(f"/tasks/17/resolve/?fileuri={fileuri}") == "s3://bucket/dir/a.jpg"
    for bad in ("", "   ", None, 5, ["/data/upload/3/a.jpg"], "ftp://x/a.jpg", "a.jpg"):
        with pytest.raises(ImageReadError, match="image"):
            images.pool_uri(bad)  # type: ignore[arg-type]


def test_data_urls_are_decoded_within_the_size_limit():
    png = image("red", "PNG")
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert LabelStudioImages("http://ls:8080", "t", 1).read(url) == png
    small = LabelStudioImages("http://ls:8080", "t", 1, policy=FetchPolicy(max_bytes=10))
    with pytest.raises(ImageReadError, match="larger than 10 bytes"):
        small.read(url)


def test_web_images_keep_the_safe_fetch_policy():
    images = LabelStudioImages("http://127.0.0.1:8080", "t", 1)
    with pytest.raises(ImageReadError, match="AGILE_IMAGE_HOSTS"):
        images.read("http://127.0.0.1:6379/a.jpg")


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_missing_fsspec_backend_names_the_extra_to_install():
    images = LabelStudioImages("http://127.0.0.1:8080", "t", 1, cloud="direct")
    with pytest.raises(ImageReadError, match=r"gcsfs: pip install 'agile-modeling\[cloud\]'"):
        images.read("gs://bucket/a.jpg")


def test_an_upload_is_taken_from_the_disk_only_in_the_project_s_own_folder(tmp_path):
    data = tmp_path / "ls-data"
    uploads = data / "media" / "upload"
    (uploads / "7").mkdir(parents=True)
    (uploads / "8").mkdir()
    (uploads / "7" / "1a2b-c d.jpg").write_bytes(jpg := image("blue"))
    (uploads / "8" / "other.jpg").write_bytes(image("red"))
    (tmp_path / "secret.jpg").write_bytes(b"not Label Studio's")
    (uploads / "7" / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    (uploads / "7" / "loop.jpg").symlink_to(uploads / "7" / "loop.jpg")
    os.mkfifo(uploads / "7" / "pipe.jpg")
    (uploads / "7" / "folder.jpg").mkdir()
    folders = LabelStudioFolders(data_dir=data)

    found = folders.upload_of(7, "/data/upload/7/1a2b-c%20d.jpg")
    assert found == (uploads / "7" / "1a2b-c d.jpg", uploads / "7")
    assert read_regular_file(*found, 10**6) == jpg
    assert read_regular_file(*found, 10) == jpg[:11]  # the caller sees it is over its limit
    # another project's upload, outside the folder, not there, not a name: nothing read here
    for value in [
        "/data/upload/8/other.jpg",
        "/data/upload/7/../8/other.jpg",
        "/data/upload/7/../../../../secret.jpg",
        "/data/upload/7/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.jpg",
        "/data/upload/7/out.jpg",  # a link out of the folder
        "/data/upload/7/loop.jpg",  # a link loop
        "/data/upload/7/missing.jpg",
        "/data/upload/7/x%00.jpg",  # a NUL byte
        "/data/upload/7/" + "x" * 300 + ".jpg",  # longer than a file name may be
        "/data/upload/7/",
        "/data/upload/07/1a2b-c%20d.jpg",
    ]:
        where = folders.upload_of(7, value)
        assert where is None or read_regular_file(*where, 10**6) is None, value
    # a FIFO or a folder: an error, never opened to block (here or on the server)
    for special in ("pipe.jpg", "folder.jpg"):
        with pytest.raises(ImageReadError, match="not a regular file|is a folder"):
            read_regular_file(*folders.upload_of(7, f"/data/upload/7/{special}"), 10**6)  # type: ignore[misc]

    # only while the key opens the project (its storages listed) is anything read from the disk
    offline = LabelStudioImages("http://127.0.0.1:9", "t", 7, folders=folders)
    with pytest.raises(ImageReadError, match="cannot reach Label Studio"):
        offline.read(offline.pool_uri("/data/upload/7/1a2b-c%20d.jpg"))
    with pytest.raises(ValueError, match="absolute"):
        LabelStudioFolders(data_dir=Path("relative/data"))


def test_a_local_file_is_read_from_the_disk_only_inside_one_of_the_project_s_storages(tmp_path):
    root = tmp_path / "local-files"
    (root / "photos").mkdir(parents=True)
    (root / "photos-private").mkdir()
    (root / "photos" / "a b.png").write_bytes(image("red", "PNG"))
    (root / "photos-private" / "p.png").write_bytes(image("red", "PNG"))
    (tmp_path / "secret.jpg").write_bytes(b"not Label Studio's")
    (root / "photos" / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    folders = LabelStudioFolders(local_files_root=root)
    storages = [(root / "photos").resolve()]
    assert folders.local_file_of("d=photos/a%20b.png", storages) == ((root / "photos" / "a b.png"), storages[0])
    assert folders.local_file_of("d=/photos/a b.png", storages) is not None  # relative to the root, as Django
    # ".." is text before links are followed, as Label Studio reads it: photos/link/../a b.png is photos/a b.png
    (root / "other" / "sub").mkdir(parents=True)
    (root / "other" / "a b.png").write_bytes(b"another file")
    (root / "photos" / "link").symlink_to(root / "other" / "sub")
    assert folders.local_file_of("d=photos/link/../a%20b.png", storages) == (
        (root / "photos" / "a b.png"),
        storages[0],
    )
    for query in [
        "d=photos-private/p.png",  # under the root, in no storage of the project (a prefix is not a folder)
        "d=../secret.jpg",
        "d=photos/../../secret.jpg",
        "d=photos/out.jpg",  # a link out of the root
        "d=photos/x%00.png",
        "d=",
        "",
    ]:
        assert folders.local_file_of(query, storages) is None, query
    assert folders.local_file_of("d=photos/a%20b.png", []) is None  # the project has no local storage
    assert LabelStudioFolders().local_file_of("d=photos/a%20b.png", storages) is None  # nothing mounted


# --- a real Label Studio ---------------------------------------------------------------------------
@pytest.mark.slow
def test_uploaded_files_are_read_with_a_legacy_token_and_a_personal_access_token(label_studio):
    client, pid = project(label_studio, "uploads")
    files = {"red.jpg": image("red"), "blue.png": image("blue", "PNG")}
    answer = httpx.post(
        f"{label_studio.url}/api/projects/{pid}/import",
        headers={"Authorization": f"Token {label_studio.credentials.token}"},
        files=[(f"file{i}", (name, data)) for i, (name, data) in enumerate(files.items())],
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    values = task_images(client, pid)
    assert len(values) == 2 and all(v.startswith(f"/data/upload/{pid}/") for v in values)

    pat = client.sdk.tokens.create().token  # a JWT: exchanged for a Bearer access token
    for key in (label_studio.credentials.token, pat):
        with LabelStudioImages(label_studio.url, key, pid) as images:
            for value in values:
                uri = images.pool_uri(value)
                assert uri == label_studio.url + value
                assert images.read(uri) == files[value.rsplit("/", 1)[1].split("-", 1)[1]]  # "<uuid8>-<name>"

    images = LabelStudioImages(label_studio.url, label_studio.credentials.token, pid, policy=FetchPolicy(max_bytes=100))
    with pytest.raises(ImageReadError, match="larger than 100 bytes"):
        images.read(images.pool_uri(values[0]))

    # Label Studio's data folder mounted here: the project's uploads are read from the disk, and Label Studio
    # serves none of them (its request log)
    settings = Settings(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.credentials.token,
        label_studio_data_dir=label_studio.data_dir,
    )
    start, marker = label_studio.log_path.stat().st_size, f"never-{uuid.uuid4().hex[:8]}.jpg"
    with LabelStudioImages.for_project(settings, pid) as on_disk:
        for value in values:
            assert on_disk.read(on_disk.pool_uri(value)) == files[value.rsplit("/", 1)[1].split("-", 1)[1]]
        with pytest.raises(ImageReadError, match="the file is gone from Label Studio"):  # not on disk: the server
            on_disk.read(on_disk.pool_uri(f"/data/upload/{pid}/{marker}"))
    served = served_since(label_studio, start, marker)
    assert "/api/storages/localfiles" in served and not any(value in served for value in values), served
    # a key that does not open the project reads nothing from the disk either
    refused = LabelStudioImages(label_studio.url, "0" * 40, pid, folders=LabelStudioFolders.from_settings(settings))
    with pytest.raises(ImageReadError, match="check LABEL_STUDIO_API_KEY"):
        refused.read(refused.pool_uri(values[0]))

    # bad inputs: a wrong key, an upload Label Studio never had, one whose file was deleted
    wrong = LabelStudioImages(label_studio.url, "0" * 40, pid)
    with pytest.raises(ImageReadError, match=f"cannot read project {pid}'s files: check LABEL_STUDIO_API_KEY"):
        wrong.read(wrong.pool_uri(values[0]))
    images = LabelStudioImages(label_studio.url, label_studio.credentials.token, pid)
    with pytest.raises(ImageReadError, match="the file is gone from Label Studio"):
        images.read(images.pool_uri(f"/data/upload/{pid}/never-uploaded.jpg"))
    (label_studio.data_dir / "media" / values[0].removeprefix("/data/")).unlink()
    with pytest.raises(ImageReadError, match="the file is gone from Label Studio"):  # 500 as well
        images.read(images.pool_uri(values[0]))


@pytest.mark.slow
def test_local_files_storage_images_are_read(label_studio):
    folder: Path = label_studio.local_files_root / f"images-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    files = {"a.png": image("green", "PNG"), "b.jpg": image("yellow")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    client, pid = project(label_studio, "local files")
    storage = client.sdk.import_storage.local.create(
        project=pid, path=str(folder), use_blob_urls=True, regex_filter=r".*\.(png|jpg)"
    )
    client.sdk.import_storage.local.sync(id=storage.id)
    values = task_images(client, pid)
    assert sorted(values) == [f"/data/local-files/?d={folder.name}/{name}" for name in sorted(files)]
    images = LabelStudioImages(label_studio.url, label_studio.credentials.token, pid)
    for value in values:
        assert images.read(images.pool_uri(value)) == files[value.rsplit("/", 1)[1]]
    # Label Studio's folders mounted here (the settings of `agile up`): the project's local files are read from
    # the disk, Label Studio is asked only for the project's storages; a file under the root in none of them
    # is left to Label Studio, which refuses it
    unshared = label_studio.local_files_root / f"unshared-{uuid.uuid4().hex[:8]}"
    unshared.mkdir()
    (unshared / "private.png").write_bytes(image("red", "PNG"))
    settings = Settings(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.credentials.token,
        local_files_root=label_studio.local_files_root,
        label_studio_data_dir=label_studio.data_dir,
    )
    log_start = label_studio.log_path.stat().st_size
    with LabelStudioImages.for_project(settings, pid) as on_disk:
        for value in values:
            assert on_disk.read(on_disk.pool_uri(value)) == files[value.rsplit("/", 1)[1]]
        with pytest.raises(ImageReadError, match="the file is gone from Label Studio"):
            on_disk.read(on_disk.pool_uri(f"/data/local-files/?d={unshared.name}/private.png"))
    served = served_since(label_studio, log_start, unshared.name)
    assert "/api/storages/localfiles" in served and folder.name not in served, served
    (folder / "a.png").unlink()
    with pytest.raises(ImageReadError, match="the file is gone from Label Studio"):
        images.read(images.pool_uri(f"/data/local-files/?d={folder.name}/a.png"))


def s3_storage(client: LabelStudioClient, pid: int, s3_server, bucket: str, presign: bool, key: str, secret: str):
    storage = client.sdk.import_storage.s3.create(
        project=pid,
        bucket=bucket,
        prefix="pics",  # without one, 1.23.2 lists only the bucket's top level
        s3endpoint=s3_server.endpoint,
        region_name=s3_server.region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        use_blob_urls=True,
        presign=presign,
        regex_filter=r".*\.(png|jpg)",
    )
    client.sdk.import_storage.s3.sync(id=storage.id)


@pytest.mark.slow
def test_s3_images_are_read_through_label_studio_and_directly(label_studio, s3_server):
    bucket = f"images-{uuid.uuid4().hex[:8]}"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    files = {"one.jpg": image("purple"), "two.png": image("orange", "PNG")}
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"pics/{name}", Body=data)
    for presign in (True, False):  # a redirect to a presigned URL, or bytes proxied by Label Studio
        client, pid = project(label_studio, f"s3 presign {presign}")
        s3_storage(client, pid, s3_server, bucket, presign, s3_server.key, s3_server.secret)
        images = LabelStudioImages(label_studio.url, label_studio.credentials.token, pid)
        uris = sorted(images.pool_uri(v) for v in task_images(client, pid))
        assert uris == [f"s3://{bucket}/pics/{name}" for name in sorted(files)]
        for uri in uris:
            assert images.read(uri) == files[uri.rsplit("/", 1)[1]]
        with pytest.raises(ImageReadError, match=f"project {pid} has no source storage for this bucket"):
            images.read("s3://another-bucket/pics/one.jpg")

    options = {"endpoint_url": s3_server.endpoint, "key": s3_server.key, "secret": s3_server.secret}
    direct = LabelStudioImages(
        label_studio.url, label_studio.credentials.token, pid, cloud="direct", storage_options=options
    )
    for uri in uris:
        assert direct.read(uri) == files[uri.rsplit("/", 1)[1]]
    with pytest.raises(ImageReadError, match="the file is gone from the bucket"):
        direct.read(f"s3://{bucket}/pics/none.jpg")


@pytest.mark.slow
def test_an_s3_storage_with_wrong_credentials_says_which_setting_to_fix(label_studio, s3_server):
    bucket = f"images-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.client().put_object(Bucket=bucket, Key="pics/a.jpg", Body=image("red"))
    projects = []
    for presign in (True, False):
        client, pid = project(label_studio, f"s3 wrong keys {presign}")
        s3_storage(client, pid, s3_server, bucket, presign, "AKIAWRONGWRONGWRONG1", "wrong")  # moto still open
        projects.append(pid)
    s3_server.require_auth()
    try:
        for pid in projects:
            images = LabelStudioImages(label_studio.url, label_studio.credentials.token, pid)
            with pytest.raises(ImageReadError) as error:
                images.read(f"s3://{bucket}/pics/a.jpg")
            message = str(error.value)
            assert f"project {pid}'s" in message and "Cloud Storage" in message and "credentials" in message
            assert "X-Amz-Signature" not in message  # a presigned URL's signature is never shown
        direct = LabelStudioImages(
            label_studio.url,
            label_studio.credentials.token,
            projects[0],
            cloud="direct",
            storage_options={"endpoint_url": s3_server.endpoint, "key": "AKIAWRONGWRONGWRONG1", "secret": "wrong"},
        )
        with pytest.raises(ImageReadError, match="AWS_ACCESS_KEY_ID"):
            direct.read(f"s3://{bucket}/pics/a.jpg")
    finally:
        s3_server.require_auth(False)
