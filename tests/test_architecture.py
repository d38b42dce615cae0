"""The layering rule of DESIGN.md: the core engine never imports Label Studio, Flask or Celery."""

import ast
import gc
from pathlib import Path

import agile_modeling

FORBIDDEN = {
    "label_studio_sdk",
    "label_studio",
    "flask",
    "celery",
    "ml_backend",
    "sync",
    "agile_cli",
    "werkzeug",
    "gunicorn",
    "label_config",
    "httpx",
}
ROOT = Path(agile_modeling.__file__).parent.parent


def parse(path: Path) -> ast.Module:
    """``ast.parse`` with the garbage collector paused: a finalizer that fails during the parse has
    CPython 3.11 format its traceback with a nested ast.parse, which breaks the outer one
    (python/cpython#106905)."""
    gc.disable()
    try:
        return ast.parse(path.read_text())
    finally:
        gc.enable()


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_engine_imports_no_service_layer():
    core = Path(agile_modeling.__file__).parent
    offenders = {str(p.relative_to(core)): sorted(imported_roots(p) & FORBIDDEN) for p in core.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_forbidden_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import flask\nfrom celery import Celery\nfrom label_studio_sdk.client import LabelStudio\n")
    assert imported_roots(bad) & FORBIDDEN == {"flask", "celery", "label_studio_sdk"}


def test_service_layers_point_down():
    """sync/ never imports the backend or the CLI; the backend never imports the CLI; label_config/
    (a leaf beside the core) imports neither Flask nor Celery."""
    rules = {
        "sync": {"ml_backend", "agile_cli", "flask"},
        "ml_backend": {"agile_cli"},
        "label_config": {"flask", "celery", "sync", "ml_backend", "agile_cli", "label_studio_sdk"},
    }
    offenders = {}
    for package, forbidden in rules.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = imported_roots(path) & forbidden
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_every_sqlite_file_goes_through_the_one_connection_policy():
    """Only agile_modeling/database.py opens SQLite connections (WAL, per-thread connections, one
    busy timeout, lock errors retried): every wrapper of a state file uses its ``Database``."""
    opened = sorted(
        str(p.relative_to(ROOT))
        for package in ("agile_modeling", "sync", "ml_backend", "agile_cli")
        for p in (ROOT / package).rglob("*.py")
        if "sqlite3.connect(" in p.read_text()
    )
    assert opened == ["agile_modeling/database.py"]
