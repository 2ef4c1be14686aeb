"""The durable outbox: order, ack semantics, bounds with counted drops, reopen, kill -9."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.outbox import ROW_OVERHEAD, Outbox, OutboxError, pack_samples
from gateway.schema import Sample

T0 = 1_763_794_800.0  # 2025-11-22, a sane clock


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def samples(n: int, start: int = 0, t_us: int = 1_763_794_800_000_000) -> list[Sample]:
    return [Sample("pm2_5", float(start + i), "ug/m3", t_us + i) for i in range(n)]


def values(rows: list) -> list[float]:
    return [s.value for row in rows for s in row.samples]


def test_put_take_ack_in_order(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.sqlite", clock=clock) as box:
        ids = [box.put("dev-a", "site", "pms5003", samples(2, start=2 * i)) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert box.stats().readings == 10
        # not due before the batch age, due after
        assert box.due(clock(), 500, 5.0) == []
        assert box.due(clock(), 10, 5.0) == ["dev-a"]  # 10 readings reach max_readings
        clock.t += 5
        assert box.due(clock(), 500, 5.0) == ["dev-a"]
        first = box.take("dev-a", 4)
        assert values(first) == [0, 1, 2, 3]
        second = box.take("dev-a", 500)
        assert values(second) == [4, 5, 6, 7, 8, 9]
        assert box.take("dev-a", 500) == []  # everything in flight
        assert box.stats().inflight_rows == 5
        # acks in any order; readings leave only when acknowledged
        assert box.ack([r.id for r in second]) == 6
        assert box.stats().readings == 4
        assert box.ack([r.id for r in first]) == 4
        assert box.stats().readings == 0 and box.stats().rows == 0


def test_take_splits_at_max_readings_but_takes_at_least_one_row(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_row_readings=10) as box:
        box.put("d", "s", "k", samples(8))
        box.put("d", "s", "k", samples(8, start=8))
        rows = box.take("d", 5)  # a row is never split: one row of 8 > 5 still goes
        assert values(rows) == list(range(8))
        assert values(box.take("d", 5)) == list(range(8, 16))


def test_big_handoff_is_split_into_rows(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_row_readings=100) as box:
        box.put("d", "s", "k", samples(250))
        assert box.stats().rows == 3
        assert values(box.take("d", 100)) == list(range(100))


def test_unacked_rows_come_back_after_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        for i in range(6):
            box.put(f"dev-{i % 2}", "s", "k", samples(1, start=i))
        taken = box.take("dev-0", 500)
        box.ack([taken[0].id])  # only the first acknowledged; the rest was in flight
    with Outbox(path) as box:
        assert box.stats().readings == 5
        assert values(box.take("dev-0", 500)) == [2, 4]
        assert values(box.take("dev-1", 500)) == [1, 3, 5]
        assert [r.id for r in box.rows()] == sorted(r.id for r in box.rows())


def test_release_sends_rows_again(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        for i in range(3):
            box.put("d", "s", "k", samples(1, start=i))
        rows = box.take("d", 500)
        assert box.take("d", 500) == []
        box.release("d", rows[1].id)
        assert values(box.take("d", 500)) == [1, 2]
        box.release_all()
        assert values(box.take("d", 500)) == [0, 1, 2]


def test_size_bound_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    row_size = len(pack_samples(samples(10))) + ROW_OVERHEAD
    max_bytes = 1024 * 1024
    per_box = max_bytes // row_size
    with Outbox(path, max_bytes=max_bytes) as box:
        for i in range(per_box + 200):
            box.put("d", "s", "k", samples(10, start=10 * i))
        stats = box.stats()
        assert stats.bytes <= max_bytes
        dropped = stats.dropped["size"]
        assert dropped > 0 and dropped % 10 == 0
        # what is left is exactly the newest readings: nothing else missing, nothing silent
        left = values(box.rows())
        assert left == list(range(int(left[0]), (per_box + 200) * 10))
        assert dropped + len(left) == (per_box + 200) * 10
    with Outbox(path, max_bytes=max_bytes) as box:
        assert box.dropped()["size"] == dropped  # persisted across restarts


def test_age_bound_drops_old_rows_and_counts(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.sqlite", max_age_s=3600, clock=clock) as box:
        box.put("d", "s", "k", samples(3))
        clock.t += 1800
        box.put("d", "s", "k", samples(2, start=3))
        clock.t += 1801
        assert box.expire() == 3
        assert values(box.rows()) == [3, 4]
        assert box.dropped() == {"size": 0, "age": 3, "write_error": 0}
        assert box.stats().oldest_age_s == pytest.approx(1801)


def test_age_bound_waits_for_a_sane_clock(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)  # 1970: a Pi before NTP
    with Outbox(tmp_path / "o.sqlite", max_age_s=60, clock=clock) as box:
        box.put("d", "s", "k", samples(3))
        clock.t += 3600
        assert box.expire() == 0
        clock.t = T0  # NTP synced: rows stamped before sync are not judged by a bogus clock
        assert box.expire() == 0
        assert box.stats().readings == 3


def test_ack_of_a_dropped_row_is_harmless(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "o.sqlite", max_age_s=60, clock=clock) as box:
        box.put("d", "s", "k", samples(2))
        rows = box.take("d", 500)
        clock.t += 61
        assert box.expire() == 2
        assert box.ack([r.id for r in rows]) == 0
        assert box.stats().readings == 0 and box.stats().rows == 0


def test_second_agent_on_same_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path), pytest.raises(OutboxError, match="in use by another agent"):
        Outbox(path)


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    """A writer SIGKILLed mid-stream: every put that returned is in the file, in order."""
    path = tmp_path / "o.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from edge.outbox import Outbox
        from gateway.schema import Sample
        box = Outbox({str(path)!r})
        for i in range(300):
            box.put("d", "s", "k", [Sample("pm2_5", float(i), "ug/m3", i)])
            sys.stdout.write(f"{{i}}\\n"); sys.stdout.flush()
            if i == 250:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -9
    confirmed = [int(line) for line in result.stdout.split()]
    with Outbox(path) as box:
        stored = values(box.rows())
    assert stored[: len(confirmed)] == confirmed
    assert stored == list(range(len(stored)))


def test_disk_write_failure_is_counted_not_raised(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        box.put("d", "s", "k", samples(1))
        box._db.execute("PRAGMA query_only = ON")  # every write now fails like a read-only disk
        assert box.put("d", "s", "k", samples(4)) is None
        assert box.dropped()["write_error"] == 4
        box._db.execute("PRAGMA query_only = OFF")
        box.put("d", "s", "k", samples(1))  # the next commit persists the count
    with Outbox(tmp_path / "o.sqlite") as box:
        assert box.dropped()["write_error"] == 4
