"""docker-compose.yml wires the same parts as `agile up` (no Docker engine here: checked as data).

``docker compose config`` is reproduced by :func:`interpolate`, which applies compose's
interpolation rules (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
``${VAR?error}``, ``$$``) to the parsed YAML, so the tests see what compose would run with a given
``.env``, and which variables it refuses to run without.
"""

import re
from pathlib import Path

import pytest
import yaml

from sync.label_studio_images import LabelStudioFolders
from sync.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
_VAR = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(Exception):
    pass


def _expand(text: str, env: dict) -> str:
    def one(m):
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return _expand(arg, env) if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise ComposeError(f"required variable {name} is missing a value: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text)


def interpolate(node, env: dict):
    if isinstance(node, str):
        return _expand(node, env)
    if isinstance(node, list):
        return [interpolate(n, env) for n in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    return node


def compose_config(env: dict) -> dict:
    """What ``docker compose config`` prints for this environment (``.env``), as data."""
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), env)


DOTENV = {
    "LABEL_STUDIO_API_KEY": "a" * 40,
    "LABEL_STUDIO_PASSWORD": "pw",
    "BASIC_AUTH_USER": "label-studio",
    "BASIC_AUTH_PASS": "basic-secret",
    "AGILE_WEBHOOK_SECRET": "hook-secret",
}


def test_compose_has_label_studio_redis_backend_workers_and_one_beat():
    spec = compose_config(DOTENV)
    services = spec["services"]
    assert set(services) == {"label-studio", "redis", "backend", "worker", "beat"}
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    # import_predictions recounts only the imported tasks (50,000 tasks: 4.5 s -> 29 s a chunk without it)
    flag = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
    assert services["label-studio"]["environment"][flag] == "true"
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("backend", "worker", "beat"):
        env = services[name]["environment"]
        assert (
            env["CELERY_BROKER_URL"].startswith("redis://redis")
            and env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        )
        assert "workspace:/workspace" in services[name]["volumes"]
        assert raw[name]["environment"]["AGILE_SHARDED_SCORING"].endswith(
            ":-1}"
        )  # pool scoring spreads over the workers
        assert env["AGILE_SHARDED_SCORING"] == "1"
    assert services["worker"]["command"][-1] == "--no-beat"  # scaling workers never multiplies the periodic sync
    assert services["backend"]["command"][:2] == ["agile", "backend"]


def test_the_readers_of_task_images_mount_label_studio_s_volume_read_only():
    services = compose_config(DOTENV)["services"]
    volume, target = services["label-studio"]["volumes"][0].split(":")[:2]
    for name in ("backend", "worker"):  # /predict and the adoption read uploads from the disk
        env = services[name]["environment"]
        assert f"{volume}:{target}:ro" in services[name]["volumes"]
        settings = Settings.from_env(env)
        assert settings.label_studio_data_dir == Path(target)
        assert LabelStudioFolders.from_settings(settings).data_dir == Path(target)


@pytest.mark.parametrize(
    "missing", ["BASIC_AUTH_USER", "BASIC_AUTH_PASS", "AGILE_WEBHOOK_SECRET", "LABEL_STUDIO_API_KEY"]
)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_compose_refuses_to_run_without_each_secret(missing, how):
    env = {k: v for k, v in DOTENV.items() if k != missing}
    if how == "empty":
        env[missing] = ""
    with pytest.raises(ComposeError, match=f"required variable {missing} is missing a value: set {missing} in .env"):
        compose_config(env)


def test_the_published_backend_gets_its_secrets_and_a_signing_key_source():
    services = compose_config(DOTENV)["services"]
    backend = services["backend"]
    assert backend["ports"] == ["9090:9090"] and "0.0.0.0:9090" in backend["command"]  # reachable: secrets needed
    for name in ("backend", "worker", "beat"):  # the same secrets for the backend and the sync (signed image URLs)
        env = services[name]["environment"]
        assert env["BASIC_AUTH_USER"] == "label-studio" and env["BASIC_AUTH_PASS"] == "basic-secret"
        assert env["AGILE_WEBHOOK_SECRET"] == "hook-secret" and env["LABEL_STUDIO_API_KEY"] == "a" * 40
        assert env["AGILE_IMAGE_SIGNING_KEY"] == ""  # empty: derived from LABEL_STUDIO_API_KEY, the same everywhere
        assert env["AGILE_LABEL_STUDIO_ORIGIN"] == "http://localhost:8080"  # the browser's origin, for CORS
    assert "AGILE_IMAGES_UNSIGNED" not in services["backend"]["environment"]
    # and the backend's own start-up check agrees: with these values it starts, without them it refuses
    from ml_backend.exposure import UnsafeBindError, check_bind
    from sync.settings import Settings

    def settings(env):
        return Settings(
            basic_auth_user=env["BASIC_AUTH_USER"] or None,
            basic_auth_pass=env["BASIC_AUTH_PASS"] or None,
            webhook_secret=env["AGILE_WEBHOOK_SECRET"] or None,
        )

    check_bind(settings(backend["environment"]), backend["command"][backend["command"].index("--bind") + 1])
    with pytest.raises(UnsafeBindError):
        check_bind(settings({**backend["environment"], "AGILE_WEBHOOK_SECRET": ""}), "0.0.0.0:9090")


def test_the_interpolation_rules_are_compose_s():
    assert _expand("a$$b ${X:-d} ${Y-d} ${Z:-${X}}", {"X": "", "Y": ""}) == "a$b d  "
    assert _expand("${X:-d}|${X-d}", {"X": "v"}) == "v|v"
    with pytest.raises(ComposeError, match="need it"):
        _expand("${X:?need it}", {"X": ""})
    assert _expand("${X?need it}", {"X": ""}) == ""
