"""One settings object: every variable is read in sync/settings.py, checked once, documented from
the same fields, and handed to child processes unchanged."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from agile_modeling.errors import ConfigurationError, ProviderError
from sync.settings import Settings, configuration_markdown

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("agile_modeling", "agile_cli", "sync", "ml_backend", "label_config")


def reads_environment(tree: ast.AST) -> list[int]:
    """Lines that read a variable: ``os.environ.get(...)``, ``os.environ[...]``, ``os.getenv(...)``
    (passing the whole environment on to a child process, ``{**os.environ}``, is not reading one)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv", "environ.get", "os.environ.setdefault"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_the_environment():
    readers = {}
    for package in PRODUCT:
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "sync" / "settings.py":
                continue
            lines = reads_environment(ast.parse(path.read_text()))
            if lines:
                readers[str(path.relative_to(REPO))] = lines
    assert readers == {}


def test_the_checker_sees_a_read():
    assert reads_environment(ast.parse("import os\nx = os.environ.get('A')\ny = os.environ['B']\n")) == [2, 3]
    assert reads_environment(ast.parse("import os\nenv = {**os.environ, 'A': '1'}\n")) == []


def test_the_configuration_reference_is_generated_from_the_settings():
    documented = (REPO / "docs" / "configuration.md").read_text()
    assert documented == configuration_markdown(), "run: .venv/bin/agile config --markdown > docs/configuration.md"
    for f in fields(Settings):
        assert f"`{f.metadata['env'][0]}`" in documented


def test_values_are_parsed_and_checked_once():
    s = Settings.from_env(
        {
            "AGILE_SYNC_SECONDS": "2.5",
            "AGILE_PREFETCH": "0",
            "AGILE_SHARDED_SCORING": "yes",
            "AGILE_SHARD_ROWS": "6000",
            "AGILE_PROVIDER": "Gemini",
            "MODEL_DIR": "/tmp/ws",
            "LABEL_STUDIO_URL": "http://ls:8080/",
            "AGILE_TORCH_THREADS": "2",
            "LOG_LEVEL": "warning",
        }
    )
    assert s.log_level == "WARNING"
    assert (s.sync_seconds, s.prefetch, s.sharded_scoring, s.shard_rows) == (2.5, 0.0, True, 6000)
    assert (s.provider, s.workspace, s.label_studio_url, s.torch_threads) == (
        "gemini",
        Path("/tmp/ws"),
        "http://ls:8080",
        2,
    )
    assert Settings.from_env({}) == Settings()  # nothing set: the documented defaults
    assert Settings.from_env({"AGILE_PREFETCH": "  "}).prefetch == 0.5  # blank is unset


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("AGILE_PREFETCH", "1.5", "fraction in [0, 1)"),
        ("AGILE_SYNC_SECONDS", "soon", "seconds between 1 and 86400"),
        ("AGILE_SYNC_SECONDS", "inf", "seconds between 1 and 86400"),  # the beat cannot schedule it
        ("AGILE_SYNC_SECONDS", "print", "seconds between 1 and 86400"),
        ("AGILE_IMAGE_URL_DAYS", "0", "positive number of days"),
        ("AGILE_DEVICE", "gpu", "auto, cpu, cuda, cuda:N or mps"),
        ("LABEL_STUDIO_URL", "http://[::1:8080", "http(s) URL"),
        ("AGILE_SHARD_ROWS", "0", "positive whole number"),
        ("AGILE_COMPUTE", "fp64", "one of auto, bf16, fp32"),
        ("AGILE_PROVIDER", "openai", "one of offline, gemini"),
        ("AGILE_SHARDED_SCORING", "maybe", "1 or 0"),
        ("LOG_LEVEL", "verbose", "one of DEBUG, INFO, WARNING, ERROR"),
        ("LABEL_STUDIO_URL", "localhost:8080", "http(s) URL"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_expects(name, value, expected):
    with pytest.raises(ConfigurationError) as err:
        Settings.from_env({name: value})
    assert str(err.value).startswith(f"{name}={value!r}: ") and expected in str(err.value)


def test_a_bad_secret_is_not_printed():
    with pytest.raises(ConfigurationError) as err:
        Settings.from_env({"AGILE_IMAGE_URL_DAYS": "x"})
    assert "'x'" in str(err.value)  # not a secret
    s = Settings.from_env({"BASIC_AUTH_PASS": "hunter2", "LABEL_STUDIO_API_KEY": "token-123"})
    assert "hunter2" not in repr(s) and "token-123" not in repr(s)
    assert ("BASIC_AUTH_PASS", "(set)") in s.described() and "hunter2" not in str(s.described())


def test_a_password_in_a_url_is_never_shown():
    s = Settings.from_env(
        {
            "CELERY_BROKER_URL": "redis://:hunter2@redis.internal:6379/0",
            "LABEL_STUDIO_URL": "http://admin:pw123@ls.internal:8080/",
        }
    )
    shown = repr(s) + str(s.described())
    assert "hunter2" not in shown and "pw123" not in shown
    assert "redis://:***@redis.internal:6379/0" in shown and "http://admin:***@ls.internal:8080" in shown
    assert s.broker_url == "redis://:hunter2@redis.internal:6379/0"  # the value itself is intact
    with pytest.raises(ConfigurationError) as err:
        Settings.from_env({"AGILE_BACKEND_URL": "ftp://user:s3cret@host"})
    assert "s3cret" not in str(err.value) and "ftp://user:***@host" in str(err.value)


def test_a_child_process_gets_the_same_settings():
    s = Settings(
        workspace=Path("/tmp/ws"),
        prefetch=0.0,
        sharded_scoring=True,
        shard_rows=6000,
        provider="gemini",
        label_studio_url="http://127.0.0.1:8080",
        basic_auth_pass="secret",
        sync_seconds=3.0,
    )
    assert Settings.from_env(s.as_env()) == s
    assert "AGILE_COMPUTE" not in s.as_env()  # defaults are left to the child's own environment


def test_the_gemini_provider_needs_its_key():
    with pytest.raises(ProviderError, match="GEMINI_API_KEY"):
        Settings(provider="gemini").gemini()
    assert Settings.from_env({"GEMINI_API_KEY": "k", "AGILE_GEMINI_MODEL": "m"}).gemini().model == "m"


def agile(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agile_cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        timeout=120,
    )


def test_the_cli_reads_its_settings_once_and_says_what_is_wrong(tmp_path):
    shown = agile(
        "config",
        env={"AGILE_WORKSPACE": str(tmp_path), "AGILE_PREFETCH": "0.25", "LABEL_STUDIO_API_KEY": "secret-token"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "AGILE_WORKSPACE" in shown.stdout and str(tmp_path) in shown.stdout and "0.25" in shown.stdout
    assert "secret-token" not in shown.stdout and "(set)" in shown.stdout
    bad = agile("pool", "info", env={"AGILE_WORKSPACE": str(tmp_path), "AGILE_COMPUTE": "fast"})
    assert bad.returncode == 2 and bad.stderr.strip() == "error: AGILE_COMPUTE='fast': expected one of auto, bf16, fp32"
    flag_wins = agile("--workspace", str(tmp_path / "flag"), "config", env={"AGILE_WORKSPACE": str(tmp_path / "env")})
    assert str(tmp_path / "flag") in flag_wins.stdout and str(tmp_path / "env") not in flag_wins.stdout
