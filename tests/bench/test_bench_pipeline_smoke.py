"""Smoke runs of the benchmarks: shapes and correctness (nothing lost, nothing doubled), not speed.

The pipeline run starts its own PostgreSQL and Mosquitto (kota_cli.servers), two
`kota gateway run` workers and a load generator, with tiny sizes so CI finishes in well under
a minute.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from kota_cli.bench import group as bench_group
from kota_cli.bench_pipeline import UplinkTemplate, run_pipeline_bench

PIPELINE_KEYS = {
    "readings_per_s",
    "copy_limit_rows_per_s",
    "ratio",
    "p50_latency_s",
    "p99_latency_s",
    "lost",
    "duplicates",
    "duplicates_in_table",
    "cpu_s_per_100k",
    "workers",
    "seconds",
    "published_readings",
    "rows",
    "latency_at_half",
}
COMPONENTS = {"loadgen", "gateway_workers", "mosquitto", "postgres"}


def test_load_generator_sends_exactly_what_encode_uplink_encodes() -> None:
    from gateway.schema.uplink import decode_uplink, encode_uplink

    for rpm in (1, 9, 10, 50):
        t = UplinkTemplate("THBKK", "bp-thbkk-0000", "bench-pipe-00001", "gen-0", rpm, seed=3)
        for n in range(40):
            now = time.time_ns() // 1000
            base = t.next_base(now)
            payload = t.payload(n, now, base)
            expected = encode_uplink(
                "THBKK",
                "bp-thbkk-0000",
                "bench-pipe-00001",
                "bench",
                t.samples(n, base),
                agent="gen-0",
                seq=n,
                sent_us=now,
            )
            assert payload == expected
            batch = decode_uplink(payload, t.topic.decode())
            assert len(batch) == rpm and not batch.rejects
            # keys unique within the message
            assert len(set(zip(batch.quantity, batch.observed_us, strict=True))) == rpm


def test_pipeline_smoke_loses_and_doubles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOTA_DATABASE_URL", raising=False)
    monkeypatch.delenv("KOTA_MQTT_URL", raising=False)
    started = time.monotonic()
    result = run_pipeline_bench(
        workers=2,
        seconds=2,
        warmup=1,
        devices=10,
        readings_per_message=10,
        copy_rows=20_000,
        latency_seconds=2,
    )
    json.dumps(result)  # JSON-able as printed by `kota bench pipeline --json`
    assert set(result) >= PIPELINE_KEYS
    assert result["lost"] == 0
    assert result["duplicates_in_table"] == 0
    assert result["duplicates"] >= 0
    assert result["dead_letters"] == 0
    assert result["drained"] is True
    assert result["rows"] == result["published_readings"] > 0
    assert result["readings_per_s"] > 0 and result["copy_limit_rows_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["readings_per_s"] / result["copy_limit_rows_per_s"], abs=1e-3
    )
    assert set(result["cpu_s_per_100k"]) >= COMPONENTS
    assert result["p50_latency_s"] is not None
    assert 0 <= result["p50_latency_s"] <= result["p99_latency_s"]
    assert result["workers"] == 2
    assert time.monotonic() - started < 60


def test_bench_normalize_json_shape() -> None:
    out = CliRunner().invoke(bench_group, ["normalize", "--json", "--messages", "200"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert {
        "messages",
        "readings_in",
        "readings_out",
        "readings_per_s",
        "seconds",
        "machine",
    } <= set(result)
    assert result["messages"] == 200 and result["readings_per_s"] > 0
    assert {"cpus", "cpu", "python"} <= set(result["machine"])


def test_bench_edge_json_shape() -> None:
    out = CliRunner().invoke(bench_group, ["edge", "--seconds", "3", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert {"devices", "seconds", "peak_rss_mb", "cpu_percent_one_core", "machine"} <= set(result)
    assert result["readings_received"] > 0
