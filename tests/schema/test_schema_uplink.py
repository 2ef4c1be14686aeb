"""Uplink wire format v1: the decoder and the JSON Schema agree, and bad input is isolated."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.schema import (
    MAX_UPLINK_BYTES,
    Sample,
    UplinkError,
    decode_uplink,
    encode_uplink,
    parse_topic,
    uplink_topic,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "gateway/schema/uplink-v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
T0 = 1_763_794_799_123_456


def message(**overrides: object) -> dict:
    base: dict = {
        "schema": "kota.uplink/1",
        "city": "THBKK",
        "site": "bkk-1",
        "device": "pms-1",
        "driver": "pms5003",
        "readings": {
            "quantity": ["pm2_5", "pm10"],
            "value": [12.0, 20],
            "unit": ["ug/m3"] * 2,
            "observed_at": [T0, T0],
            "flags": [0, 0],
        },
    }
    base.update(overrides)
    return base


def test_docs_copies_of_schemas_are_identical() -> None:
    for name in ("uplink-v1.schema.json", "reading-v1.schema.json"):
        assert (ROOT / "docs/schemas" / name).read_text() == (
            ROOT / "gateway/schema" / name
        ).read_text()


def test_round_trip() -> None:
    samples = [Sample("pm2_5", 12.5, "ug/m3", T0), Sample("temperature", 86.0, "[degF]", T0 + 1, 8)]
    payload = encode_uplink("THBKK", "bkk-1", "pms-1", "pms5003", samples, agent="pi-1", seq=7)
    VALIDATOR.validate(json.loads(payload))
    batch = decode_uplink(payload, uplink_topic("THBKK", "bkk-1", "pms-1"))
    assert (batch.city, batch.site, batch.device, batch.agent, batch.seq) == (
        "THBKK",
        "bkk-1",
        "pms-1",
        "pi-1",
        7,
    )
    assert batch.quantity == ["pm2_5", "temperature"]
    assert batch.value == [12.5, 86.0]
    assert batch.observed_us == [T0, T0 + 1]
    assert batch.flags == [0, 8]
    assert batch.rejects == []


def test_local_time_without_offset_is_the_city_zone() -> None:
    msg = message(
        readings={
            "quantity": ["pm2_5"],
            "value": [1.0],
            "unit": ["ug/m3"],
            "observed_at": ["2026-11-22T14:00:00"],
        }
    )
    batch = decode_uplink(json.dumps(msg).encode())
    expected = datetime(2026, 11, 22, 7, 0, tzinfo=UTC).timestamp() * 1_000_000
    assert batch.observed_us == [int(expected)]  # Bangkok is UTC+7
    assert batch.local_time == [True]


def test_iso_with_offset() -> None:
    msg = message(
        readings={
            "quantity": ["pm2_5"],
            "value": [1.0],
            "unit": ["ug/m3"],
            "observed_at": ["2026-11-22T14:00:00+07:00"],
        }
    )
    batch = decode_uplink(json.dumps(msg).encode())
    assert batch.observed_us == [int(datetime(2026, 11, 22, 7, tzinfo=UTC).timestamp() * 1e6)]
    assert batch.local_time == [False]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[" * 200_000 + b"]" * 200_000, "oversized"),
        (b"[" * 50_000 + b"]" * 50_000, "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (json.dumps(message(schema="kota.uplink/2")).encode(), "unsupported_schema"),
        (json.dumps(message(city="TH BKK; DROP TABLE readings")).encode(), "bad_city"),
        (json.dumps(message(device="x" * 5000)).encode(), "bad_device"),
        (json.dumps({k: v for k, v in message().items() if k != "site"}).encode(), "missing_site"),
        (
            json.dumps(
                message(readings={"quantity": ["a"], "value": [], "unit": [], "observed_at": []})
            ).encode(),
            "column_length_mismatch",
        ),
        (json.dumps(message(readings=[1])).encode(), "missing_readings"),
        (json.dumps(message(seq="7")).encode(), "bad_seq"),
    ],
)
def test_message_level_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(UplinkError) as info:
        decode_uplink(payload)
    assert info.value.reason == reason


def test_oversized_limit_is_exact() -> None:
    with pytest.raises(UplinkError, match="oversized"):
        decode_uplink(b" " * (MAX_UPLINK_BYTES + 1))


def test_topic_must_match_payload() -> None:
    with pytest.raises(UplinkError, match="topic_mismatch"):
        decode_uplink(json.dumps(message()).encode(), "kota/v1/VNHAN/bkk-1/pms-1/up")
    assert parse_topic("kota/v1/THBKK/s/d/up") == ("THBKK", "s", "d")
    assert parse_topic("kota/v1/THBKK/s/d/status") is None


def test_one_bad_row_never_rejects_its_batch_mates() -> None:
    payload = (
        b'{"schema":"kota.uplink/1","city":"THBKK","site":"s","device":"d","driver":"x",'
        b'"readings":{"quantity":["pm2_5","pm10","co2","o3","no2","so2"],'
        b'"value":[1.0,NaN,"3",4.0,5.0,6.0],"unit":["ug/m3","ug/m3","ppm",7,"ppb","ppb"],'
        b'"observed_at":[1,2,3,4,"yesterday",6],"flags":[0,0,0,0,0,-1]}}'
    )
    batch = decode_uplink(payload)
    assert batch.quantity == ["pm2_5"]
    reasons = {i: reason for i, reason, _ in batch.rejects}
    assert reasons == {
        1: "non_finite_value",
        2: "bad_value",
        3: "bad_unit",
        4: "bad_observed_at",
        5: "bad_flags",
    }


ids = st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$", fullmatch=True)
rows = st.lists(
    st.tuples(
        st.sampled_from(["pm2_5", "pm10", "temperature"]),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.sampled_from(["ug/m3", "Cel", "[degF]"]),
        st.integers(min_value=0, max_value=2**53),
        st.integers(min_value=0, max_value=255),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ids, ids, rows)
def test_decoder_accepts_everything_the_schema_accepts(site: str, device: str, data: list) -> None:
    samples = [Sample(q, v, u, t, f) for q, v, u, t, f in data]
    payload = encode_uplink("VNHAN", site, device, "sds011", samples)
    VALIDATOR.validate(json.loads(payload))
    batch = decode_uplink(payload)
    assert len(batch) == len(samples) and not batch.rejects


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(blob: bytes) -> None:
    try:
        decode_uplink(blob)
    except UplinkError as err:
        assert err.reason


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
        max_leaves=20,
    )
)
def test_schema_and_decoder_agree_on_arbitrary_json(doc: object) -> None:
    """Whatever the JSON Schema rejects, the decoder rejects too (whole or row-wise)."""
    payload = json.dumps(
        {
            "schema": "kota.uplink/1",
            "city": "THBKK",
            "site": "s",
            "device": "d",
            "driver": "x",
            "readings": doc,
        }
    ).encode()
    schema_ok = VALIDATOR.is_valid(json.loads(payload))
    try:
        batch = decode_uplink(payload)
        decoder_ok = not batch.rejects
    except UplinkError:
        decoder_ok = False
    if decoder_ok:
        assert schema_ok


def test_huge_integer_value_is_a_row_reject_not_a_crash() -> None:
    payload = (
        '{"schema":"kota.uplink/1","city":"THBKK","site":"s","device":"d","driver":"x",'
        '"readings":{"quantity":["pm2_5","pm10"],"value":[1' + "0" * 400 + ",2.0],"
        '"unit":["ug/m3","ug/m3"],"observed_at":[1,2]}}'
    ).encode()
    batch = decode_uplink(payload)
    assert batch.quantity == ["pm10"]
    assert [(i, reason) for i, reason, _ in batch.rejects] == [(0, "bad_value")]
