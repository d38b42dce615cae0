"""A task's image bytes wherever Label Studio keeps them (sync/label_studio_images.py), read from a
real Label Studio server: uploaded files, a local-files storage, and an S3 storage on moto's server,
through Label Studio's presign endpoint and directly with s3fs."""

from __future__ import annotations

import base64
import importlib.util
import io
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from agile_modeling.errors import ImageReadError
from sync.client import LabelStudioClient
from sync.label_studio_images import LabelStudioFolders, LabelStudioImages
from sync.safe_fetch import FetchPolicy

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


# --- without a server ------------------------------------------------------------------------------
def test_pool_uri_makes_label_studio_paths_absolute_and_keeps_the_rest():
    images = LabelStudioImages("http://ls.example:8080/", "token", 3)
    assert images.pool_uri("/data/upload/3/a.jpg") == "http://ls.example:8080/data/upload/3/a.jpg"
    assert images.pool_uri("/data/local-files/?d=x/a.png") == "http://ls.example:8080/data/local-files/?d=x/a.png"
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


def test_files_in_label_studio_folders_mounted_here_are_read_from_the_disk(tmp_path):
    root, data = tmp_path / "local-files", tmp_path / "ls-data"
    (root / "photos").mkdir(parents=True)
    (data / "media" / "upload" / "7").mkdir(parents=True)
    (root / "photos" / "a b.png").write_bytes(png := image("red", "PNG"))
    (data / "media" / "upload" / "7" / "1a2b-c d.jpg").write_bytes(jpg := image("blue"))
    (tmp_path / "secret.jpg").write_bytes(b"not Label Studio's")
    (root / "photos" / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    folders = LabelStudioFolders(local_files_root=root, data_dir=data)

    # no server at this address: every read below comes from the disk, or fails on the connection
    images = LabelStudioImages("http://127.0.0.1:9", "t", 7, folders=folders)
    assert images.read(images.pool_uri("/data/local-files/?d=photos/a%20b.png")) == png
    assert images.read(images.pool_uri("/data/local-files/?d=/photos/a b.png")) == png
    assert images.read(images.pool_uri("/data/upload/7/1a2b-c%20d.jpg")) == jpg
    small = LabelStudioImages("http://127.0.0.1:9", "t", 7, policy=FetchPolicy(max_bytes=10), folders=folders)
    with pytest.raises(ImageReadError, match="larger than 10 bytes"):
        small.read(small.pool_uri("/data/upload/7/1a2b-c%20d.jpg"))

    # outside the folders, missing there, or not a file: left to the server (and its rules), never read here
    for path, query in [
        ("/data/local-files/", "d=../secret.jpg"),
        ("/data/local-files/", "d=photos/../../secret.jpg"),
        ("/data/local-files/", "d=photos/out.jpg"),  # a link out of the root
        ("/data/local-files/", "d=photos"),
        ("/data/local-files/", "d="),
        ("/data/local-files/", ""),
        ("/data/local-files/", "d=photos/missing.png"),
        ("/data/upload/", ""),
        ("/data/upload/7/../../../../secret.jpg", ""),
        ("/data/upload/7/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.jpg", ""),
    ]:
        assert folders.file_of(path, query) is None, (path, query)
    with pytest.raises(ImageReadError, match="cannot reach Label Studio"):
        images.read(images.pool_uri("/data/local-files/?d=../secret.jpg"))
    assert LabelStudioFolders().file_of("/data/upload/7/1a2b-c%20d.jpg", "") is None  # nothing mounted


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

    folders = LabelStudioFolders(label_studio.local_files_root, label_studio.data_dir)
    on_disk = LabelStudioImages(label_studio.url, "0" * 40, pid, folders=folders)  # a key the server refuses
    for value in values:
        assert on_disk.read(on_disk.pool_uri(value)) == files[value.rsplit("/", 1)[1].split("-", 1)[1]]

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
    # Label Studio's folders mounted here: read from the disk (a key the server refuses cannot matter)
    folders = LabelStudioFolders(label_studio.local_files_root, label_studio.data_dir)
    on_disk = LabelStudioImages(label_studio.url, "0" * 40, pid, folders=folders)
    for value in values:
        assert on_disk.read(on_disk.pool_uri(value)) == files[value.rsplit("/", 1)[1]]
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
