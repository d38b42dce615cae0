"""The layering rule of DESIGN.md: the core engine never imports Label Studio, Flask or Celery."""

import ast
from pathlib import Path

import agile_modeling

FORBIDDEN = {"label_studio_sdk", "label_studio", "flask", "celery", "ml_backend", "sync", "agile_cli", "werkzeug", "gunicorn"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_engine_imports_no_service_layer():
    core = Path(agile_modeling.__file__).parent
    offenders = {
        str(p.relative_to(core)): sorted(imported_roots(p) & FORBIDDEN) for p in core.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_forbidden_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import flask\nfrom celery import Celery\nfrom label_studio_sdk.client import LabelStudio\n")
    assert imported_roots(bad) & FORBIDDEN == {"flask", "celery", "label_studio_sdk"}
