"""The two value parsers of the configuration, alone: ``parse_duration`` (Prometheus-style durations
such as 1h30m, 500ms or 28d, summed exactly, with an error that says what to write instead) and
``parse_address`` (a host and port, IPv6 in brackets, the mqtts://, ssl://, tls:// and wss:// schemes),
each with its table of valid and invalid inputs and a property: whatever the text, a value or a
ValueError, and never the credentials of an address. How the loader reports these errors with their
path: tests/test_config_errors.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.config import Target, parse_address, parse_duration

# --- parse_duration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1500000ns", 0.0015),
        ("250us", 0.00025),
        ("250µs", 0.00025),  # micro sign
        ("250μs", 0.00025),  # greek mu
        ("1m0.5s", 60.5),
        ("0.1s0.2s", 0.3),  # summed exactly, not as floats
        ("2h45m30s100ms", 9930.1),
        ("28d", 28 * 86400.0),  # Prometheus' units: certificate thresholds are counted in days
        ("2w", 14 * 86400.0),
    ],
)
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("-5s", "must not be negative"),
        ("60", "add a unit, e.g. 60s"),
        ("1.5", "add a unit, e.g. 60s"),
        ("1h30", "missing unit after 30"),
        ("1y", "unknown unit 'y'"),
        ("5S", "unknown unit 'S'"),
        ("1h 30m", "unknown unit 'h '"),
        ("10 s", "unknown unit ' s'"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("+5s", "expected a number"),
        ("1.2.3s", "malformed number"),
        ("9" * 40 + "s", "too many digits"),
        ("99999999999h", "too large"),
    ],
)
def test_parse_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^.*" + message.replace(".", r"\.").replace("+", r"\+")):
        parse_duration(text)


UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
duration_parts = st.lists(
    st.tuples(
        # 6 * 10**5 h stays below the 292-year maximum (tested separately)
        st.integers(min_value=0, max_value=10**5),
        st.none() | st.integers(min_value=0, max_value=999),
        st.sampled_from(sorted(UNIT_SECONDS)),
    ),
    min_size=1,
    max_size=6,
)


@given(duration_parts)
def test_parse_duration_is_the_sum_of_its_parts(parts: list[tuple[int, int | None, str]]) -> None:
    text = "".join(f"{whole}{'' if frac is None else f'.{frac:03d}'}{unit}" for whole, frac, unit in parts)
    expected = sum((whole + (frac or 0) / 1000) * UNIT_SECONDS[unit] for whole, frac, unit in parts)
    assert math.isclose(parse_duration(text), expected, rel_tol=1e-12, abs_tol=1e-15)


@given(st.text() | st.text(alphabet="0123456789.-+nsuµμmh d"))
def test_parse_duration_only_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0


# --- parse_address -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("mqtt.example.com", Target("mqtt.example.com", 8883)),
        ("mqtt.example.com:8884", Target("mqtt.example.com", 8884)),
        ("10.0.0.1:1", Target("10.0.0.1", 1)),
        ("broker:65535", Target("broker", 65535)),
        ("[2001:db8::1]:8883", Target("2001:db8::1", 8883)),
        ("[2001:db8::1]", Target("2001:db8::1", 8883)),
        ("2001:db8::1", Target("2001:db8::1", 8883)),
        ("::1", Target("::1", 8883)),
        ("[fe80::1%eth0]:9000", Target("fe80::1%eth0", 9000)),
        ("mqtts://broker", Target("broker", 8883)),
        ("mqtts://broker:1883", Target("broker", 1883)),
        ("mqtts://broker/", Target("broker", 8883)),
        ("ssl://broker:8000", Target("broker", 8000)),
        ("tls://broker", Target("broker", 8883)),
        ("MQTTS://broker", Target("broker", 8883)),
        ("mqtts://[::1]:8883", Target("::1", 8883)),
        ("wss://broker", Target("broker", 443, "wss", "/mqtt")),
        ("wss://broker:8443/ws", Target("broker", 8443, "wss", "/ws")),
        ("wss://[2001:db8::1]/mqtt/v2", Target("2001:db8::1", 443, "wss", "/mqtt/v2")),
    ],
)
def test_parse_address_valid(text: str, target: Target) -> None:
    assert parse_address(text) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("broker:0", "port must be 1-65535"),
        ("broker:65536", "port must be 1-65535"),
        ("broker:", "port must be 1-65535"),
        ("broker:http", "port must be 1-65535"),
        ("broker:-1", "port must be 1-65535"),
        ("[::1]:99999", "port must be 1-65535"),
        (":8883", "host must not be empty"),
        ("mqtts://", "host must not be empty"),
        ("mqtts://:8883", "host must not be empty"),
        ("2001:db8::1:99999", "must be bracketed when a port follows"),
        ("fe80::1::2:8883", "must be bracketed when a port follows"),
        ("[2001:db8::1", "missing ']'"),
        ("[broker]:8883", "brackets are only for IPv6"),
        ("[::1]8883", "expected ':port'"),
        ("mqtt://broker:1883", "TLS listeners only"),
        ("tcp://broker:1883", "TLS listeners only"),
        ("ws://broker/mqtt", "TLS listeners only"),
        ("https://broker", "unknown scheme https://"),
        ("://broker", "malformed scheme"),
        ("mqtts://broker/mqtt", "path is only allowed with wss://"),
        ("broker /x", "whitespace"),
        ("user:pass@broker", "credentials do not belong in the address"),
    ],
)
def test_parse_address_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(text)
    assert message in str(caught.value)


def test_parse_address_never_echoes_credentials() -> None:
    with pytest.raises(ValueError) as caught:
        parse_address("mqtts://user:hunter2@broker:8883")
    assert "hunter2" not in str(caught.value)


@given(st.text() | st.text(alphabet="abc.:/[]@0123456789ftpsqmw%"))
def test_parse_address_only_raises_value_error(text: str) -> None:
    try:
        target = parse_address(text)
    except ValueError:
        return
    assert target.host
    assert 1 <= target.port <= 65535
