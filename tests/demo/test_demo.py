"""`kota demo` end to end: every stage produces output, nothing is lost, nothing is left running,
and the HTML report renders in a real browser (headless Chromium) without console errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from matplotlib import image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def processes_under(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(f"{proc.pid}: {cmdline[:120]}")
    return found


def demo_postgres_pids() -> set[int]:
    """Throwaway clusters the demo relocates to /tmp/kota-pg-* when its workdir is private."""
    return {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "kota-pg-" in " ".join(p.info["cmdline"] or [])
    }


LEAKED: set[int] = set()


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    workdir = tmp_path_factory.mktemp("demo")
    before = demo_postgres_pids()
    env = {k: v for k, v in os.environ.items() if k not in ("KOTA_DATABASE_URL", "KOTA_MQTT_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "kota_cli.main", "demo", "--days", "2", "--cities", "3"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    LEAKED.update(demo_postgres_pids() - before)
    return workdir, result


def test_demo_runs_every_stage(demo_run) -> None:
    workdir, result = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = workdir / "out"
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert stage in result.stderr
    assert "lost: 0" in result.stdout
    produced = int(
        result.stdout.split("readings produced by devices: ")[1].split(";")[0].replace(",", "")
    )
    assert produced > 10_000
    assert (
        "unknown_device" in result.stdout and "invalid_json" in result.stdout
    )  # dead letters with reasons
    assert "bad_checksum" in result.stdout  # injected bad frames rejected at the edge
    for city in ("THBKK", "VNHAN", "THCNX"):
        assert city in result.stdout
    assert (out / "report.html").stat().st_size > 50_000
    pngs = sorted((out / "charts").glob("*.png"))
    assert len(pngs) == 5 and all(p.stat().st_size > 5_000 for p in pngs)
    for name in (
        "kota-me-day.csv",
        "kota-me-day.xlsx",
        "kota-me-day.parquet",
        "kota-me-month.csv",
        "kota-me-month.meta.json",
    ):
        assert (out / "me" / name).stat().st_size > 0, name


def test_demo_leaves_no_process_or_server_behind(demo_run) -> None:
    workdir, result = demo_run
    assert result.returncode == 0
    assert processes_under(workdir) == []
    assert set() == LEAKED
    assert not (workdir / ".kota" / "pg" / "pgdata" / "postmaster.pid").exists()


def test_report_renders_in_chromium(demo_run, tmp_path: Path) -> None:
    workdir, result = demo_run
    assert result.returncode == 0
    report = (workdir / "out" / "report.html").as_uri()
    dom = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            report,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 5
    for chunk in dom.stdout.split("<svg")[1:]:
        assert chunk.count("<path") > 50  # drawn axes, lines and bars, not an empty frame
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1100,1400",
            f"--screenshot={shot}",
            report,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = image.imread(shot)
    assert pixels.std() > 0.05  # a page with charts, not a blank screen


def test_bad_option_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kota_cli.main", "demo", "--cities", "XXXXX"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("kota: error: --cities") and result.stderr.count("\n") == 1


def test_keep_running_goes_live_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """--keep-running: live sensors on real ptys reach the database; SIGINT stops every child."""
    import signal
    import threading
    import time

    import psycopg

    env = {k: v for k, v in os.environ.items() if k not in ("KOTA_DATABASE_URL", "KOTA_MQTT_URL")}
    before = demo_postgres_pids()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kota_cli.main",
            "demo",
            "--days",
            "0.1",
            "--cities",
            "1",
            "--keep-running",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        lines.extend(proc.stderr)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while not any("KOTA_DATABASE_URL=" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        url = next(line for line in lines if "KOTA_DATABASE_URL=" in line).split("=", 1)[1].strip()
        live = 0
        while live < 2 and time.monotonic() < deadline:  # both live sensors report within seconds
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(DISTINCT device) FROM readings "
                    "WHERE observed_at > now() - interval '1 minute'"
                ).fetchone()
            live = int(row[0]) if row else 0
            time.sleep(1)
        assert live == 2
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 0, "".join(lines)[-2000:]
    assert processes_under(tmp_path) == []
    assert demo_postgres_pids() - before == set()
