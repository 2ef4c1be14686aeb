"""Generated dashboard JSON is up to date and structurally valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dashboards.build import DASHBOARD_DIR, PROVISIONING, render_all, stale_files
from dashboards.macros import variables_used
from dashboards.panels import BOARDS, VARIABLES

DATASOURCE_UIDS = {
    ds["uid"]: ds["type"]
    for ds in yaml.safe_load((PROVISIONING / "datasources" / "kota.yaml").read_text())[
        "datasources"
    ]
}


def boards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.rglob("*.json"))]


def test_committed_json_is_what_the_code_generates() -> None:
    assert stale_files() == [], "run `kota dashboards build` and commit the result"
    assert set(render_all()) == set(DASHBOARD_DIR.rglob("*.json"))


def test_uids_unique_and_panel_ids_unique() -> None:
    uids = [b["uid"] for b in boards()]
    assert len(uids) == len(set(uids)) == len(BOARDS)
    for board in boards():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("board", boards(), ids=lambda b: b["uid"])
def test_datasource_refs_are_provisioned(board: dict) -> None:
    for panel in board["panels"]:
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        for ref in refs:
            assert DATASOURCE_UIDS.get(ref["uid"]) == ref["type"], (panel["title"], ref)


@pytest.mark.parametrize("board", boards(), ids=lambda b: b["uid"])
def test_no_overlapping_grid_positions(board: dict) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("board", boards(), ids=lambda b: b["uid"])
def test_every_variable_used_is_defined(board: dict) -> None:
    defined = {v["name"] for v in board["templating"]["list"]}
    queries = [t.get("rawSql", "") for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    for sql in queries:
        assert variables_used(sql) <= defined, sql


def test_every_declared_variable_exists_in_catalogue() -> None:
    for board in BOARDS:
        assert set(board.variables) <= set(VARIABLES)


def test_dashboard_provider_points_at_the_folders() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "kota.yaml").read_text())["providers"][
        0
    ]
    assert provider["options"]["foldersFromFilesStructure"] is True
    assert {b.folder for b in BOARDS} == {p.name for p in DASHBOARD_DIR.iterdir() if p.is_dir()}


def test_check_command_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kota_cli.main", "dashboards", "check"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr


def test_push_to_unreachable_grafana_is_one_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kota_cli.main",
            "dashboards",
            "push",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("kota: error:") and result.stderr.count("\n") == 1, (
        result.stderr
    )
