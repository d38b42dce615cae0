"""Make the README's `agile report` example: a real Label Studio run on the shared embeddings.

Starts Label Studio (its own venv), publishes "small dog breeds" (the user means 8 small breeds,
types "dog"), lets a scripted user rate the seed and two rounds of 100 through the API from the
ground truth (3 s of lead time per image), publishes the evaluation set, rates it, and runs
`agile report`. Not part of the tests (the integration tests cover the same path in small).

    AGILE_LABEL_STUDIO_VENV=$PWD/.venv-label-studio .venv/bin/python docs/report_example.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agile_cli.services import service_env  # noqa: E402
from agile_modeling.simulate import load_shared_data, load_suite  # noqa: E402
from agile_modeling.simulate.shared_pool import SHARED_ENCODER, import_shared_pool  # noqa: E402
from agile_modeling.workspace import Workspace  # noqa: E402
from label_config import parse_rating_config  # noqa: E402
from sync.evaluation import publish_evaluation  # noqa: E402
from sync.rounds import IMAGE_ID, ConceptSync  # noqa: E402
from sync.server import DEFAULT_VENV, LabelStudioServer  # noqa: E402
from sync.settings import Settings  # noqa: E402

LEAD_TIME_S = 3.0


def rate_open(sync: ConceptSync, project_id: int, truth) -> None:
    schema = parse_rating_config(sync.client.project_label_config(project_id))
    for task in sync.client.iter_tasks(project_id):
        if not task.annotations:
            sync.client.create_annotation(
                task.id, schema.rating(int(truth[task.data[IMAGE_ID]])), lead_time=LEAD_TIME_S
            )


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agile-report-"))
    data = load_shared_data()
    spec = next(s for s in load_suite() if s.title == "small dog breeds")
    ws = Workspace(tmp / "ws")
    import_shared_pool(ws.store(512, SHARED_ENCODER), data)
    ws.set_config(text_vocabulary=str(data.root / "text_vocabulary.npz"))
    ws.sessions.create(spec.concept())
    venv = DEFAULT_VENV if DEFAULT_VENV.is_absolute() else ROOT / DEFAULT_VENV
    server = LabelStudioServer(tmp / "label-studio", venv=venv).start()
    try:
        settings = Settings(
            label_studio_url=server.url, label_studio_api_key=server.credentials.token, workspace=ws.root
        )
        sync = ConceptSync(settings, ws)
        truth = spec.ground_truth(data.pool)
        project = sync.publish(spec.concept().name, seed_size=100, batch_size=100).project_id
        for _ in range(3):  # seed + 2 rounds: three model versions
            rate_open(sync, project, truth)
            print(sync.sync(spec.concept().name).summary())
        evaluation = publish_evaluation(sync, spec.concept().name)
        print(f"evaluation set: {evaluation.images} images")
        rate_open(sync, evaluation.project_id, truth)
        env = {**service_env(settings), **{k: v for k, v in os.environ.items() if k.startswith("PYTHON")}}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "agile_cli",
                "report",
                spec.concept().name,
                "--output",
                str(ROOT / "docs" / "report"),
            ],
            check=True,
            env=env,
            cwd=ROOT,
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
