"""Hostile uplinks end to end: a real broker, a real `kota gateway run`, real PostgreSQL.

Bad input (invalid UTF-8, deep nesting, > 256 KiB, NaN/Infinity literals, wrong types,
unknown city and device, far-future and ancient times, SQL metacharacters and 10 kB strings
in every id field) is published mixed with valid readings in the SAME messages and in
neighbouring ones, in one burst (so it shares gateway batches with the valid data). Each bad
message or row must become a dead letter with its specific reason, every valid reading must
be stored, and the gateway must still be alive with its tables intact.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import CITY, SITE, Database, Stack, publish, wait_until

from gateway.schema import UPLINK_SCHEMA
from gateway.schema.uplink import uplink_topic
from kota_cli.servers import MosquittoServer

DEVICE = "flt-h0"
SQL = "'; DROP TABLE readings; --"
LONG = "x" * 10_000


class Burst:
    """Builds the messages and what each must produce."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.valid: dict[tuple[str, str, int], float] = {}
        self.reasons: Counter[str] = Counter()
        self.t0 = (time.time_ns() // 1000) - 60_000_000
        self._n = 0

    def ok(self) -> list[Any]:
        """A valid row (recorded as expected) for a message of DEVICE."""
        self._n += 1
        t = self.t0 + self._n * 1000
        self.valid[(DEVICE, "pm2_5", t)] = float(self._n)
        return ["pm2_5", float(self._n), "ug/m3", t, 0]

    def uplink(
        self,
        rows: list[list[Any]],
        *,
        header: dict[str, Any] | None = None,
        raw_rows: str | None = None,
        topic: str | None = None,
    ) -> None:
        msg: dict[str, Any] = {
            "schema": UPLINK_SCHEMA,
            "city": CITY,
            "site": SITE,
            "device": DEVICE,
            "driver": "counting",
            "agent": "flt-pi-h",
            "seq": len(self.messages),
            **(header or {}),
        }
        cols = ("quantity", "value", "unit", "observed_at", "flags")
        msg["readings"] = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        text = json.dumps(msg, separators=(",", ":"), allow_nan=True)
        if raw_rows is not None:  # literal JSON for the readings object (NaN, Infinity)
            text = text[: text.index('"readings":')] + f'"readings":{raw_rows}}}'
        where = topic or uplink_topic(
            str(msg["city"])[:20000], str(msg["site"])[:20000], str(msg["device"])[:20000]
        )
        self.messages.append((where, text.encode()))

    def raw(self, payload: bytes, reason: str, topic: str | None = None) -> None:
        self.messages.append((topic or uplink_topic(CITY, SITE, DEVICE), payload))
        self.reasons[reason] += 1

    def build(self) -> None:
        topic = uplink_topic(CITY, SITE, DEVICE)
        self.uplink([self.ok(), self.ok(), self.ok()])  # a valid neighbour
        # --- whole messages that cannot be trusted
        self.raw(b'{"schema":"kota.uplink/1","city":"\xff\xfe\xfd"}', "invalid_utf8")
        self.raw(b"[" * 100_000 + b"]" * 100_000, "invalid_json")  # deeply nested
        self.raw(b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "invalid_json")
        pad = {"schema": UPLINK_SCHEMA, "pad": "p" * (300 * 1024)}
        self.raw(json.dumps(pad).encode(), "oversized")  # > 256 KiB
        self.raw(b'{"schema": "kota.uplink/1", "city": ', "invalid_json")  # truncated
        self.raw(b"[1, 2, 3]", "not_an_object")
        self.raw(json.dumps({"schema": "kota.uplink/9"}).encode(), "unsupported_schema")
        self.uplink([self.ok()])
        # --- wrong types in the header / readings structure
        for field, value, reason in (
            ("seq", "7", "bad_seq"),
            ("sent_at", 1.5, "bad_sent_at"),
            ("readings", "nope", "missing_readings"),
            ("city", 42, "bad_city"),
            ("device", None, "missing_device"),
        ):
            msg = {
                "schema": UPLINK_SCHEMA,
                "city": CITY,
                "site": SITE,
                "device": DEVICE,
                "driver": "counting",
                "readings": {"quantity": [], "value": [], "unit": [], "observed_at": []},
            }
            if value is None:
                del msg[field]
            else:
                msg[field] = value
            self.raw(json.dumps(msg).encode(), reason, topic)
        # --- NaN / Infinity literals, mixed with valid rows of the same message
        a, b = self.ok(), self.ok()
        self.uplink(
            [],
            raw_rows=(
                '{"quantity":["pm2_5","pm2_5","pm2_5","pm2_5","pm2_5"],'
                f'"value":[{a[1]},NaN,Infinity,-Infinity,{b[1]}],'
                '"unit":["ug/m3","ug/m3","ug/m3","ug/m3","ug/m3"],'
                f'"observed_at":[{a[3]},{a[3] + 1},{a[3] + 2},{a[3] + 3},{b[3]}],'
                '"flags":[0,0,0,0,0]}'
            ),
        )
        self.reasons["non_finite_value"] += 3
        # --- wrong types per row, each next to valid rows
        t = self.t0 + 999_000_000
        self.uplink(
            [
                self.ok(),
                ["pm2_5", "12", "ug/m3", t, 0],
                ["pm2_5", None, "ug/m3", t + 1, 0],
                ["pm2_5", True, "ug/m3", t + 2, 0],
                ["pm2_5", 1.0, "ug/m3", 1.5, 0],
                ["pm2_5", 1.0, "ug/m3", [t], 0],
                ["pm2_5", 1.0, "ug/m3", "yesterday", 0],
                ["pm2_5", 1.0, "ug/m3", t + 3, -1],
                [42, 1.0, "ug/m3", t + 4, 0],
                ["pm2_5", 1.0, 5, t + 5, 0],
                ["pm2_5", 10**400, "ug/m3", t + 6, 0],
                self.ok(),
            ]
        )
        self.reasons.update(
            {"bad_value": 4, "bad_observed_at": 3, "bad_flags": 1, "bad_quantity": 1}
        )
        self.reasons["bad_unit"] += 1
        # --- unknown city, unknown device, far-future and ancient times (row level)
        now = time.time_ns() // 1000
        self.uplink([["pm2_5", 1.0, "ug/m3", now - 1000, 0]], header={"city": "XXFOO"})
        self.reasons["device_city_mismatch"] += 1
        self.uplink(
            [["pm2_5", 1.0, "ug/m3", now - 1000, 0]], header={"city": "XXFOO", "device": "zz-1"}
        )
        self.reasons["unknown_device"] += 1
        self.uplink([["pm2_5", 1.0, "ug/m3", now - 1000, 0]], header={"device": "flt-nope"})
        self.reasons["unknown_device"] += 1
        self.uplink(
            [
                self.ok(),
                ["pm2_5", 1.0, "ug/m3", now + 86_400_000_000, 0],  # a day ahead
                ["pm2_5", 1.0, "ug/m3", 2**63 - 1, 0],  # the end of int64
                ["pm2_5", 1.0, "ug/m3", 10**20, 0],  # beyond int64: a float to orjson
                ["pm2_5", 1.0, "ug/m3", 946_684_800_000_000, 0],  # 2000-01-01
                ["pm2_5", 1.0, "ug/m3", -(2**63), 0],
                ["pm2_5", 1.0, "ug/m3", "2000-01-01T00:00:00Z", 0],
                self.ok(),
            ]
        )
        self.reasons.update({"future_timestamp": 2, "ancient_timestamp": 3})
        self.reasons["bad_observed_at"] += 1
        # --- SQL metacharacters and 10 kB strings in every id field
        for bad in (SQL, LONG):
            for field in ("city", "site", "device", "driver", "agent"):
                self.uplink([self.ok_unused()], header={field: bad})
                self.reasons[f"bad_{field}"] += 1
            self.uplink([self.ok(), ["pm2_5", 1.0, bad, t + 10, 0], [bad, 1.0, "ug/m3", t + 11, 0]])
            if bad == SQL:
                self.reasons.update({"incompatible_unit": 1, "unknown_quantity": 1})
            else:
                self.reasons.update({"bad_unit": 1, "bad_quantity": 1})
        self.uplink([self.ok(), self.ok()])  # a valid neighbour at the end

    def ok_unused(self) -> list[Any]:
        """A well-formed row in a message that is rejected whole (not expected in readings)."""
        return ["pm2_5", 1.0, "ug/m3", self.t0 - 5_000_000, 0]


def test_hostile_uplinks_are_dead_lettered_and_the_rest_is_stored(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer
) -> None:
    stack = Stack(tmp_path, Database(pg_url), mosquitto)
    try:
        stack.db.prepare([(DEVICE, "counting")])
        gateway = stack.start_gateway()
        burst = Burst()
        burst.build()
        publish(mosquitto, burst.messages)
        want_dead = sum(burst.reasons.values())

        def dead_count() -> int:
            return len(stack.db.dead_letters())

        stack.db.wait_count([DEVICE], len(burst.valid), 60, "every valid reading")
        wait_until(lambda: dead_count() >= want_dead, 60, f"{want_dead} dead letters")
        stack.probe()  # barrier: nothing else is still on its way
        dead = stack.db.dead_letters()
        got = Counter(d["reason"] for d in dead)
        rows = stack.db.rows([DEVICE])
        stored = {(d, q, t): v for d, q, t, v in rows}
        print(
            f"\nFAULT hostile_uplinks: messages={len(burst.messages)} "
            f"valid_readings={len(burst.valid)} stored={len(stored)} "
            f"dead_letters={len(dead)} (expected {want_dead}) reasons={dict(sorted(got.items()))}",
            flush=True,
        )
        assert stored == burst.valid
        assert got == burst.reasons, (got - burst.reasons, burst.reasons - got)
        assert gateway.alive, gateway.log()
        with stack.db._connect() as conn:
            assert conn.execute("SELECT to_regclass('readings')").fetchone() == ("readings",)
            assert conn.execute("SELECT to_regclass('dead_letters')").fetchone()[0]
            # hostile strings are data: stored as text, cut, never interpreted
            big = conn.execute(
                "SELECT max(length(topic)), max(length(payload)), max(length(detail)) "
                "FROM dead_letters"
            ).fetchone()
        assert big[1] <= 64 * 1024 and big[0] <= 256 and big[2] <= 1000, big
        assert any(d["payload"] and SQL.encode() in d["payload"] for d in dead)
        # its own JSON stats line counts them too (printed every second)
        wait_until(
            lambda: gateway.last_stats().get("dead_letters", 0) >= want_dead,
            30,
            "a gateway stats line with the dead letters",
        )
        assert gateway.stop() == 0
    finally:
        stack.close()
