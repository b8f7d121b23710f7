"""Issue 8 in the configuration: how a broker is reached, as settings: ``addresses`` (first or all),
``ip_protocol``, ``proxy_url`` (SOCKS5 or HTTP CONNECT, credentials percent-decoded and never echoed)
and ``mqtt.roundtrip``, with their defaults and inheritance, every error message, and the checks across
them (the round trip's timeout within the probe's, an ip_protocol that can reach a literal address).
The same settings against real servers: tests/test_transport.py, test_addresses.py, test_proxy.py and
test_roundtrip.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_cert_exporter.config import Secret, Target
from tests.config_helpers import errors, only_broker, parse

# --- issue 8: addresses, ip_protocol, proxy_url, mqtt.roundtrip ---------------------------------


def test_reaching_a_broker_defaults(tmp_path: Path) -> None:
    broker = only_broker(parse("brokers: [{name: a, address: 'wss://b.example:8084/ws'}]", tmp_path))
    assert (broker.addresses, broker.ip_protocol, broker.proxy, broker.mqtt.roundtrip) == (
        "first",
        "any",
        None,
        None,
    )
    assert broker.target == Target("b.example", 8084, scheme="wss", path="/ws")


def test_reaching_a_broker_settings_and_inheritance(tmp_path: Path) -> None:
    from mqtt_cert_exporter.config import ProxySettings, RoundtripSettings

    config = parse(
        """
        defaults:
          timeout: 5s
          addresses: all
          ip_protocol: IP6
          proxy_url: socks5h://monitor:p%40ss@proxy.example.com
          mqtt:
            roundtrip: {topic: "probe/${SITE}", qos: "0", timeout: 2s}
        brokers:
          - {name: a, address: a}
          - name: b
            address: b
            addresses: first
            ip_protocol: any
            proxy_url: http://[2001:db8::1]:3128/
            mqtt: {roundtrip: {topic: probe/b}}
        """,
        tmp_path,
        env={"SITE": "plant-a"},
    )
    a, b = config.brokers
    assert (a.addresses, a.ip_protocol) == ("all", "ip6")
    assert a.proxy == ProxySettings("socks5h", "proxy.example.com", 1080, "monitor", Secret("p@ss"))
    assert a.mqtt.roundtrip == RoundtripSettings("probe/plant-a", qos=0, timeout=2.0)
    assert (b.addresses, b.ip_protocol) == ("first", "any")
    assert b.proxy == ProxySettings("http", "2001:db8::1", 3128)
    assert b.mqtt.roundtrip == RoundtripSettings("probe/b", qos=1, timeout=None)
    assert str(a.proxy) == "socks5h://proxy.example.com:1080"  # never the credentials
    assert str(b.proxy) == "http://[2001:db8::1]:3128"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults: {addresses: some}", "defaults.addresses: unsupported addresses 'some'; use first or all"),
        (
            "defaults: {addresses: [all]}",
            "defaults.addresses: unsupported addresses a list; use first or all",
        ),
        (
            "defaults: {ip_protocol: ipv4}",
            "defaults.ip_protocol: unsupported ip_protocol 'ipv4'; use any or ip4 or ip6",
        ),
        ("defaults: {proxy_url: 1080}", "defaults.proxy_url: expected a string, got a number"),
        ("defaults: {proxy_url: proxy:1080}", "defaults.proxy_url: expected a proxy URL"),
        (
            "defaults: {proxy_url: 'socks4://p:1080'}",
            "defaults.proxy_url: unsupported proxy scheme socks4://",
        ),
        ("defaults: {proxy_url: 'https://p:3128'}", "defaults.proxy_url: unsupported proxy scheme https://"),
        ("defaults: {proxy_url: 'http://p'}", "defaults.proxy_url: an http:// proxy URL needs a port"),
        ("defaults: {proxy_url: 'socks5://p:99999'}", "defaults.proxy_url: port must be 1-65535"),
        ("defaults: {proxy_url: 'socks5://p:1080/x'}", "defaults.proxy_url: a proxy URL has no path"),
        (
            "defaults: {proxy_url: 'socks5://:pw@p'}",
            "defaults.proxy_url: the proxy URL has credentials without",
        ),
        ("defaults: {mqtt: {roundtrip: probe/x}}", "defaults.mqtt.roundtrip: expected a mapping with topic"),
        ("defaults: {mqtt: {roundtrip: {qos: 1}}}", "defaults.mqtt.roundtrip.topic: required"),
        (
            "defaults: {mqtt: {roundtrip: {topic: 'a/#'}}}",
            "defaults.mqtt.roundtrip.topic: must be a topic name",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: 'a/+/b'}}}",
            "defaults.mqtt.roundtrip.topic: must be a topic name",
        ),
        ("defaults: {mqtt: {roundtrip: {topic: ''}}}", "defaults.mqtt.roundtrip.topic: must not be empty"),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, qos: 2}}}",
            "defaults.mqtt.roundtrip.qos: qos must be 0 or 1",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, qos: true}}}",
            "defaults.mqtt.roundtrip.qos: qos must be 0 or 1",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, timeout: 5}}}",
            "defaults.mqtt.roundtrip.timeout: expected a duration",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, retain: true}}}",
            "defaults.mqtt.roundtrip.retain: unknown key",
        ),
    ],
)
def test_reaching_a_broker_errors(tmp_path: Path, text: str, expected: str) -> None:
    problems = errors(text, tmp_path)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_roundtrip_timeout_must_fit_in_the_probe_timeout(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          timeout: 2s
        brokers:
          - {name: a, address: a, mqtt: {roundtrip: {topic: t, timeout: 3s}}}
          - {name: b, address: b, timeout: 5s, mqtt: {roundtrip: {topic: t, timeout: 3s}}}
          - {name: c, address: c, mqtt: {roundtrip: {topic: t, timeout: 15s}}, timeout: 20s, interval: 30s}
          - {name: d, address: d, mqtt: {roundtrip: {topic: t, timeout: 15s}}, interval: 30s}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].mqtt.roundtrip.timeout: 3s must not exceed the probe timeout 2s (from defaults.timeout)",
        "brokers[3].mqtt.roundtrip.timeout: 15s must not exceed the probe timeout 2s (from defaults.timeout)",
    ]


def test_ip_protocol_must_reach_a_literal_address(tmp_path: Path) -> None:
    problems = errors(
        """
        brokers:
          - {name: a, address: '[::1]:8883', ip_protocol: ip4}
          - {name: b, address: '127.0.0.1:8883', ip_protocol: ip6}
          - {name: c, address: '127.0.0.1:8883', ip_protocol: ip4}
          - {name: d, address: 'mqtt.example.com:8883', ip_protocol: ip6}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].ip_protocol: ip4 cannot reach the IPv6 address of brokers[0].address",
        "brokers[1].ip_protocol: ip6 cannot reach the IPv4 address of brokers[1].address",
    ]


def test_proxy_credentials_never_leak(tmp_path: Path) -> None:
    secret = "Sup3r-s3cret-proxy-pw"
    for url in (
        f"socks5://monitor:{secret}@p:99999",
        f"ftp://monitor:{secret}@p:1",
        f"http://monitor:{secret}@p",
        f"socks5://monitor:{secret}@p:1080/path",
    ):
        problems = errors(f"defaults: {{proxy_url: '{url}'}}", tmp_path)
        assert problems and not any(secret in problem or "monitor" in problem for problem in problems), (
            problems
        )
    config = parse(f"brokers: [{{name: a, address: a, proxy_url: 'socks5://monitor:{secret}@p'}}]", tmp_path)
    assert secret not in repr(config)
