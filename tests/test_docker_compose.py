"""docker-compose.yml wires the same parts as `agile up` (no Docker engine here: checked as data)."""

from pathlib import Path


import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_has_label_studio_redis_backend_workers_and_one_beat():
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert set(services) == {"label-studio", "redis", "backend", "worker", "beat"}
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    for name in ("backend", "worker", "beat"):
        env = services[name]["environment"]
        assert env["CELERY_BROKER_URL"].startswith("redis://redis") and env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert "workspace:/workspace" in services[name]["volumes"]
        assert env["AGILE_SHARDED_SCORING"].endswith(":-1}")  # pool scoring spreads over the scaled workers
    assert services["worker"]["command"][-1] == "--no-beat"  # scaling workers never multiplies the periodic sync
    assert services["backend"]["command"][:2] == ["agile", "backend"]
