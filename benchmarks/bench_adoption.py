"""Adopting a user's 50,000-task Label Studio project, and writing predictions back onto it.

On a real Label Studio (its own venv, SQLite, this machine):

1. **Adoption bookkeeping.** A project of ``--tasks`` image tasks whose images are already in the
   pool (the shared real embeddings, padded with synthetic rows, under the tasks' URLs): the time
   of ``adopt_project`` (list every task, map task id <-> pool id, create the concept, publish the
   companion project with its seed batch), then of a second adoption (resume: nothing new).
2. **Write back.** A model trained on the seed batch (rated from the ground truth) is applied to
   every task with ``import_predictions`` in chunks: tasks/s, and the peak of Python allocations
   and RSS growth while writing (memory must stay flat: chunks are streamed). Then the same
   version again (a no-op), then a second version (writes and removes the first one's predictions).
3. **Embedding rate.** ``--images`` JPEGs of 500x375: ``agile pool add`` from disk against adoption
   of a project holding the same files uploaded to Label Studio, read through the server and read
   from Label Studio's data folder mounted here (``LABEL_STUDIO_BASE_DATA_DIR``), same encoder
   (open_clip ViT-B-32, randomly initialised: the weights do not change the cost), alternated,
   twice each.

    .venv/bin/python benchmarks/bench_adoption.py --tasks 50000 --images 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_pool import RESULTS, synthetic_pool
from environment import describe_environment, environment_markdown

from agile_modeling.encoders import OpenClipSpec
from agile_modeling.loop import LoopConfig
from agile_modeling.simulate import load_shared_data, load_suite
from agile_modeling.simulate.shared_pool import SHARED_ENCODER
from agile_modeling.store import EmbeddingStore
from agile_modeling.workspace import Workspace
from sync.adoption import adopt_project
from sync.client import LabelStudioClient
from sync.rounds import ConceptSync
from sync.server import LabelStudioServer
from sync.settings import Settings
from sync.write_back import apply_predictions

CONCEPT = "sunflowers"
# a user's project: one image, one choice over it
SOURCE_CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>"""


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pool_workspace(root: Path, n: int, data) -> tuple[Workspace, list[str]]:
    """``n`` pool rows (real rows first) under web URLs that the project's tasks will carry."""
    ws = Workspace(root)
    store = ws.store(512, SHARED_ENCODER)
    real = data.pool.x
    synthetic = np.load(synthetic_pool(1_000_000), mmap_mode="r")
    vectors = np.concatenate([real, synthetic[: max(0, n - len(real))]])[:n]
    uris = [f"https://photos.example.org/harbour/{i:06d}.jpg" for i in range(n)]
    store.append(vectors, uris, [f"bench-adoption:{i}" for i in range(n)])
    ws.set_config(text_vocabulary=str(data.root / "text_vocabulary.npz"))
    return ws, uris


def import_project(client: LabelStudioClient, title: str, uris: list[str], chunk: int = 5000) -> tuple[int, float]:
    project_id = client.create_project(title, SOURCE_CONFIG)
    started = time.perf_counter()
    for start in range(0, len(uris), chunk):
        client.import_tasks(project_id, [{"data": {"image": u}} for u in uris[start : start + chunk]])
        print(f"  imported {min(start + chunk, len(uris)):,}/{len(uris):,} tasks", end="\r", flush=True)
    print()
    return project_id, time.perf_counter() - started


def bookkeeping_and_write_back(server: LabelStudioServer, tmp: Path, n: int, data) -> dict:
    spec = next(s for s in load_suite() if s.title == CONCEPT)
    ws, uris = pool_workspace(tmp / "ws-50k", n, data)
    settings = Settings(label_studio_url=server.url, label_studio_api_key=server.credentials.token, workspace=ws.root)
    concepts = ConceptSync(settings, ws)
    project_id, import_s = import_project(concepts.client, f"{n} harbour photos", uris)
    print(f"  Label Studio imported {n:,} tasks in {import_s:.0f} s")
    row: dict = {"tasks": n, "import_tasks_s": import_s}

    started = time.perf_counter()
    report = adopt_project(concepts, spec.name, project_id, spec.positives, spec.negatives, seed_size=100)
    row["adopt_s"] = time.perf_counter() - started
    row["mapped"] = report.embedding.mapped
    row["embedded"] = report.embedding.embedded
    started = time.perf_counter()
    again = adopt_project(concepts, spec.name, project_id, spec.positives, spec.negatives, seed_size=100)
    row["adopt_again_s"] = time.perf_counter() - started
    row["mapped_again"] = again.embedding.mapped
    print(f"  adoption {row['adopt_s']:.1f} s (again {row['adopt_again_s']:.1f} s), {row['mapped']:,} mapped")

    # the seed batch rated from the ground truth (real rows carry it; synthetic ones are negatives)
    loop = ws.loop(spec.name, LoopConfig(seed_size=100))
    truth = spec.ground_truth(data.pool)
    seed = loop.session.batch(0)
    loop.session.record_labels([(i, int(i < len(truth) and truth[i])) for i in seed])
    loop.train()

    tracemalloc.start()
    rss_before = rss_mb()
    started = time.perf_counter()
    first = apply_predictions(concepts, spec.name)
    row["apply_s"] = time.perf_counter() - started
    row["apply_tasks_per_s"] = first.written / row["apply_s"]
    row["apply_python_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    row["apply_rss_growth_mb"] = rss_mb() - rss_before
    tracemalloc.stop()
    print(f"  apply {first.written:,} in {row['apply_s']:.1f} s ({row['apply_tasks_per_s']:.0f} tasks/s)")

    started = time.perf_counter()
    noop = apply_predictions(concepts, spec.name)
    row["apply_again_s"], row["apply_again_written"] = time.perf_counter() - started, noop.written

    loop.session.record_labels([(i, int(i < len(truth) and truth[i])) for i in range(100, 140)])
    loop.train()
    started = time.perf_counter()
    second = apply_predictions(concepts, spec.name)
    row["apply_v2_s"] = time.perf_counter() - started
    row["apply_v2_replaced"] = list(second.replaced)
    print(f"  apply v2 {second.written:,} in {row['apply_v2_s']:.1f} s, replaced {second.replaced}")
    return row


def jpegs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, 3)
        pixels = np.clip(base + rng.normal(0, 50, (375, 500, 3)), 0, 255).astype(np.uint8)
        path = folder / f"photo{i:04d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def upload(server: LabelStudioServer, project_id: int, paths: list[Path], chunk: int = 50) -> None:
    for start in range(0, len(paths), chunk):
        files = [(p.name, (p.name, p.read_bytes(), "image/jpeg")) for p in paths[start : start + chunk]]
        response = httpx.post(
            f"{server.url}/api/projects/{project_id}/import",
            headers={"Authorization": f"Token {server.credentials.token}"},
            files=files,
            timeout=300,
        )
        response.raise_for_status()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its waited-for children) used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def adoption_rate(
    server: LabelStudioServer, ws_root: Path, project_id: int, mounted: bool
) -> tuple[float, float, float]:
    """images/s of adopting the project's images, our CPU seconds per image, and Label Studio's CPU (cores)
    meanwhile; ``mounted``: Label Studio's data folder is given (``LABEL_STUDIO_BASE_DATA_DIR``), so uploads
    are read from the disk."""
    from sync.adoption import embed_tasks

    settings = Settings(
        label_studio_url=server.url,
        label_studio_api_key=server.credentials.token,
        workspace=ws_root,
        label_studio_data_dir=server.data_dir if mounted else None,
    )
    concepts = ConceptSync(settings, Workspace(ws_root))
    tasks = list(concepts.client.iter_tasks(project_id))
    assert server.process is not None
    cpu_before, started = cpu_seconds(server.process.pid), time.perf_counter()
    own_before = cpu_seconds(os.getpid())
    report = embed_tasks(concepts, project_id, tasks, "image")
    seconds = time.perf_counter() - started
    own = (cpu_seconds(os.getpid()) - own_before) / report.embedded
    assert report.embedded == len(tasks), report
    return report.embedded / seconds, own, (cpu_seconds(server.process.pid) - cpu_before) / seconds


def embedding_rates(server: LabelStudioServer, tmp: Path, count: int, repeats: int = 2) -> dict:
    """images/s of `pool add` from disk and of adopting the same images uploaded to Label Studio (read
    through the server, and from its data folder mounted here), in a rotating order, with the CPU Label Studio
    spent serving the files meanwhile (on a small machine, taken from the model)."""
    paths = jpegs(tmp / "jpegs", count)
    client = LabelStudioClient(server.url, server.credentials.token)
    spec = OpenClipSpec(model="ViT-B-32", pretrained=None)
    adoptions = {"adoption (uploads, through Label Studio)": False, "adoption (uploads, its folder mounted)": True}
    rates: dict[str, list[float]] = {"pool add (disk)": [], **{k: [] for k in adoptions}}
    cpu_per_image: dict[str, list[float]] = {k: [] for k in rates}  # this process's CPU seconds per image
    server_cpu: dict[str, list[float]] = {k: [] for k in adoptions}  # Label Studio's cores busy
    # every project uploaded first, so that no run overlaps Label Studio's work on an import
    projects = {}
    for r in range(repeats):
        for i, name in enumerate(adoptions):
            projects[r, name] = client.create_project(f"uploads {r} {i}", SOURCE_CONFIG)
            upload(server, projects[r, name], paths)

    def pool_add(r: int) -> None:
        ws = Workspace(tmp / f"ws-disk-{r}")
        encoder = ws.image_encoder(spec)
        store: EmbeddingStore = ws.store(encoder.dim, encoder.name)
        started, own_before = time.perf_counter(), cpu_seconds(os.getpid())
        added = store.add_images([str(p) for p in paths], encoder, progress=False)
        rates["pool add (disk)"].append(len(added.added_ids) / (time.perf_counter() - started))
        cpu_per_image["pool add (disk)"].append((cpu_seconds(os.getpid()) - own_before) / len(added.added_ids))

    def adoption(r: int, name: str) -> None:
        ws = Workspace(tmp / f"ws-adopt-{r}-{name}")
        ws.image_encoder(spec)
        rate, own, cores = adoption_rate(server, ws.root, projects[r, name], adoptions[name])
        rates[name].append(rate)
        cpu_per_image[name].append(own)
        server_cpu[name].append(cores)

    runs: list[Callable[[int], None]] = [pool_add, *(partial(lambda n, r: adoption(r, n), n) for n in adoptions)]
    for r in range(repeats):
        for k in range(len(runs)):  # the order rotates: no path always runs first or last
            runs[(r + k) % len(runs)](r)
        print(f"  round {r}: " + ", ".join(f"{k} {v[-1]:.1f} images/s" for k, v in rates.items()))
    return {
        "images": count,
        "rates": rates,
        "cpu_seconds_per_image": cpu_per_image,
        "label_studio_cores_busy": server_cpu,
    }


def markdown(record: dict) -> str:
    b, e = record["bookkeeping"], record["embedding"]
    lines = [
        "# Adopting a Label Studio project and writing predictions back",
        "",
        f"`{record['command']}`",
        "",
        environment_markdown(record["environment"]),
        "",
    ]
    if b is not None:
        lines += bookkeeping_lines(b)
    lines += [
        f"## Embedding rate, {e['images']} JPEGs of 500x375 (open_clip ViT-B-32), each run",
        "",
        "| path | images/s, each run | median | this process's CPU s per image, each run | median |",
        "|---|---|---|---|---|",
    ]
    cpu = e.get("cpu_seconds_per_image", {})
    for k, vs in e["rates"].items():
        own = cpu.get(k, [])
        lines.append(
            f"| {k} | {', '.join(f'{v:.1f}' for v in vs)} | {statistics.median(vs):.1f} | "
            f"{', '.join(f'{v:.3f}' for v in own)} | {statistics.median(own) if own else float('nan'):.3f} |"
        )
    busy = e.get("label_studio_cores_busy") or {}
    if isinstance(busy, list):  # records before the mounted folder: one adoption path
        busy = {"adoption (Label Studio uploads)": busy}
    lines += ["", "Label Studio's own CPU while the adoption read the files (cores):", ""]
    lines += [f"- {k}: {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in busy.items()]
    return "\n".join(lines) + "\n"


def bookkeeping_lines(b: dict) -> list[str]:
    return [
        f"## {b['tasks']:,} tasks whose images are in the pool already",
        "",
        "| step | seconds | |",
        "|---|---|---|",
        f"| Label Studio imports the tasks (setting up, not ours) | {b['import_tasks_s']:.0f} | |",
        f"| adoption: list, map, concept, companion project + seed | {b['adopt_s']:.1f} | {b['mapped']:,} mapped, "
        f"{b['embedded']} embedded |",
        f"| adoption again (resume) | {b['adopt_again_s']:.1f} | {b['mapped_again']} newly mapped |",
        f"| write back v1 onto every task | {b['apply_s']:.1f} | {b['apply_tasks_per_s']:.0f} tasks/s |",
        f"| write back v1 again | {b['apply_again_s']:.1f} | {b['apply_again_written']} written |",
        f"| write back v2 (replaces v1) | {b['apply_v2_s']:.1f} | removed {', '.join(b['apply_v2_replaced'])} |",
        "",
        f"Memory while writing back: peak Python allocations {b['apply_python_peak_mb']:.1f} MB, "
        f"growth of the process's peak RSS {b['apply_rss_growth_mb']:.1f} MB.",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--venv", default=str(Path(__file__).resolve().parents[1] / ".venv-label-studio"))
    parser.add_argument("--out", default=str(RESULTS / "adoption"))
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs of each embedding path")
    parser.add_argument("--embedding-only", action="store_true", help="only the embedding-rate comparison")
    args = parser.parse_args()
    env = describe_environment()
    data = load_shared_data()
    tmp = Path(tempfile.mkdtemp(prefix="bench-adoption-"))
    server = LabelStudioServer(tmp / "ls", venv=Path(args.venv)).start()
    try:
        record = {
            "command": " ".join(["benchmarks/bench_adoption.py", *sys.argv[1:]]),
            "environment": env,
            "bookkeeping": None if args.embedding_only else bookkeeping_and_write_back(server, tmp, args.tasks, data),
            "embedding": embedding_rates(server, tmp, args.images, args.repeats),
        }
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    out.with_suffix(".md").write_text(markdown(record))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
