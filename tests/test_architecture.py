"""Dependencies point one way: cli -> settlement -> risk -> tariffs; tariffs and risk do no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "tariffs": {"duckdb", "settlement", "risk", "cli", "typer", "rich", "os", "polars_io"},
    "risk": {"duckdb", "settlement", "cli", "typer", "rich", "os"},
    "settlement": {"cli", "typer"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package: str) -> None:
    bad = {
        str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN[package])
        for p in (REPO / package).rglob("*.py")
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{package} imports what its layer must not: {bad}"


IO_CALLS = {
    "open",
    "print",
    "input",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "read_csv",
    "read_parquet",
    "write_csv",
    "write_parquet",
    "scan_csv",
    "scan_parquet",
    "now",
    "today",
    "getenv",
}


@pytest.mark.parametrize("package", ["tariffs", "risk"])
def test_pure_packages_do_no_io(package: str) -> None:
    offenders = []
    for p in (REPO / package).rglob("*.py"):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in IO_CALLS:
                offenders.append(f"{p.relative_to(REPO)}:{node.lineno} {name}()")
    assert not offenders, offenders
