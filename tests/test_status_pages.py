"""The status pages' pure parts: escaping, assessment reuse, filters and paging, every section of the
broker page, and the routes' refusal to answer a bug with a 500 (hand-built results; no network)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.report import RELOAD_FIX, RENEW_FIX, REVOKED_FIX
from mqtt_cert_exporter.results import (
    Failure,
    LegacyTlsFacts,
    Lint,
    LintFinding,
    MqttFacts,
    Phase,
    ProbeResult,
    Problem,
    Reason,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    ServedFileFacts,
    Stage,
    TlsFacts,
    TrustVerdict,
)
from mqtt_cert_exporter.web.app import WebState, build_app
from mqtt_cert_exporter.web.status.broker_page import broker_page
from mqtt_cert_exporter.web.status.fleet import Assessor, QueryError, assess_fleet, parse_query, select
from mqtt_cert_exporter.web.status.fleet_page import ProbeHelp, fleet_page
from mqtt_cert_exporter.web.status.html import Html, el, join
from mqtt_cert_exporter.web.status.routes import StatusSource, status_routes
from tests.conftest import cert_facts
from tests.test_status import read

NOW = 1_800_000_000.0
DAY = 86400.0
EVIL = "<script>alert('x')</script>\"\n&"


def broker(name: str, **tls: Any) -> BrokerConfig:
    return BrokerConfig(name=name, target=Target(f"{name}.example.com", 8883), tls=TlsSettings(**tls))


def trusted(name: str, days: float) -> ProbeResult:
    leaf = cert_facts(
        subject=f"CN={name}", common_name=name, not_before=NOW - 30 * DAY, not_after=NOW + days * DAY
    )
    return ProbeResult(
        broker=name,
        address=f"{name}.example.com:8883",
        ip="10.0.0.7",
        started=NOW - 1,
        finished=NOW - 0.5,
        durations=((Phase.TLS, 0.02), (Phase.TOTAL, 0.03)),
        failure=None,
        tls=TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", (leaf,), TrustVerdict(True)),
        mqtt=MqttFacts("5", 0),
    )


def refused(name: str) -> ProbeResult:
    return ProbeResult(
        name,
        f"{name}.example.com:8883",
        "10.0.0.9",
        NOW - 1,
        NOW - 0.5,
        (),
        Failure(Stage.CONNECT, Reason.REFUSED, "refused"),
    )


def test_builders_escape_every_value_but_markup() -> None:
    made = el("a", EVIL, Html("<b>kept</b>"), None, 3, href=EVIL, title=None, hidden=True, class_="x")
    assert made == (
        '<a href="&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;\n&amp;" hidden class="x">'
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;\n&amp;<b>kept</b>3</a>"
    )
    assert (
        join([EVIL, Html("<br>")], ", ")
        == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;\n&amp;, <br>"
    )
    assert isinstance(made, Html) and not isinstance(EVIL + made, Html)  # concatenating drops the mark


def test_assessments_are_reused_for_a_while_then_follow_the_clock() -> None:
    """A certificate 30.5 days from expiry is OK; half a day later the same result is a WARNING."""
    config = [broker("plant")]
    result = trusted("plant", 30.5)
    assessor = Assessor(warn_days=30, reuse_seconds=60)
    first = assessor.rows(config, [result], now=NOW)[0]
    assert first.status == "ok"
    assert assessor.rows(config, [result], now=NOW + 59)[0] is first  # reused
    later = assessor.rows(config, [result], now=NOW + DAY)[0]
    assert later is not first and later.status == "warning" and later.problems == ("expires_soon",)
    newer = trusted("plant", 300)
    assert assessor.rows(config, [newer], now=NOW + DAY + 1)[0].status == "ok"  # a new result: assessed
    assert assessor.rows([], [newer], now=NOW + DAY + 2) == []  # removed from the config: gone
    assert not assessor._seen  # and nothing of it kept  # noqa: SLF001 - that nothing of a removed broker is kept


def test_rows_are_worst_first_and_counted_before_filtering() -> None:
    config = [broker(name) for name in ("a-ok", "b-soon", "c-sooner", "d-refused", "e-new")]
    results = [trusted("a-ok", 200), trusted("b-soon", 25), trusted("c-sooner", 20), refused("d-refused")]
    rows = assess_fleet(config, results, now=NOW, warn_days=30)
    view = select(rows, parse_query({}, paged=True))
    assert [row.name for row in view.rows] == ["d-refused", "c-sooner", "b-soon", "e-new", "a-ok"]
    assert [row.status for row in view.rows] == ["critical", "warning", "warning", "pending", "ok"]
    filtered = select(rows, parse_query({"q": "REFUSED"}, paged=True))
    assert [row.name for row in filtered.rows] == ["d-refused"] and filtered.counts["ok"] == 1
    assert filtered.matched == 1 and filtered.total == 5
    second = select(rows, parse_query({"per_page": "2", "page": "2"}, paged=True))
    assert [row.name for row in second.rows] == ["b-soon", "e-new"]
    api = select(rows, parse_query({"status": "warning,pending", "offset": "1"}, paged=False))
    assert [row.name for row in api.rows] == ["b-soon", "e-new"] and api.query.limit is None


@pytest.mark.parametrize(
    ("params", "paged", "named"),
    [
        ({"page": "0"}, True, "'page'"),
        ({"per_page": "5000"}, True, "'per_page'"),
        ({"status": "ok,broken"}, True, "'status'"),
        ({"q": "x" * 500}, False, "'q'"),
        ({"limit": "0"}, False, "'limit'"),
        ({"offset": "1e3"}, False, "'offset'"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, str], paged: bool, named: str) -> None:
    with pytest.raises(QueryError, match=named):
        parse_query(params, paged=paged)


def test_broker_page_shows_everything_around_the_chain_as_text() -> None:
    evil_leaf = cert_facts(
        subject=f"CN={EVIL}",
        common_name=EVIL,
        not_before=NOW - 10 * DAY,
        not_after=NOW - 2 * DAY,
        crl_urls=("http://crl",),
    )
    renewed = cert_facts(
        subject="CN=renewed", common_name="renewed", not_before=NOW - DAY, not_after=NOW + 89 * DAY
    )
    result = ProbeResult(
        broker=EVIL,
        address="plant.example.com:8883",
        ip="10.0.0.7",
        started=NOW - 1,
        finished=NOW - 0.5,
        durations=((Phase.RESOLVE, 0.001), (Phase.TOTAL, 0.03)),
        failure=Failure(Stage.TRUST, Reason.UNTRUSTED, "expired"),
        tls=TlsFacts(
            "TLSv1.2",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            (evil_leaf,),
            TrustVerdict(False, (Problem.EXPIRED,), 10, "certificate has expired", (EVIL,)),
        ),
        mqtt=MqttFacts("3.1.1", 0, unverified_connection=True),
        served_file=ServedFileFacts(
            "/etc/mosquitto/cert.pem", "/etc/mosquitto/archive/cert3.pem", renewed, NOW, False, "ab"
        ),
        client_cert=cert_facts(subject="CN=exporter", common_name="exporter", not_after=NOW + 5 * DAY),
        revocation=RevocationFacts(
            (RevocationCheck(0, RevocationStatus.REVOKED, "http://crl", "revoked", NOW - DAY),), True
        ),
        legacy_tls=LegacyTlsFacts(True, "TLSv1.1", NOW),
        lints=(LintFinding(Lint.NO_SUBJECT_ALT_NAME, EVIL, (0,)),),
    )
    config = BrokerConfig(
        name=EVIL,
        target=Target("plant.example.com", 8883),
        tls=TlsSettings(cert_file="/etc/exporter.crt"),
        broker_kind="mosquitto",  # the fixes name Mosquitto's settings (its certificate paths are Mosquitto's)
    )
    rows = assess_fleet([config], [result], now=NOW, warn_days=30)
    html = broker_page(EVIL, rows, now=NOW, probe=False)
    assert "<script" not in html
    text = read(html).text
    for expected in (
        "CRITICAL latest probe",
        "the file /etc/mosquitto/cert.pem (-> /etc/mosquitto/archive/cert3.pem) already holds a renewed certificate",
        RELOAD_FIX,
        REVOKED_FIX,
        "client_cert_expires_soon",
        "served file /etc/mosquitto/cert.pem (-> /etc/mosquitto/archive/cert3.pem): NOT the certificate served",
        "client certificate /etc/exporter.crt: CN=exporter",
        "certificate 0: revoked - revoked",
        "still accepts TLSv1.1",
        "no_subject_alt_name: " + EVIL.replace("\n", "\\n"),  # escaped: a name cannot split the report
        "NOT trusted by the system trust store: expired",
        "MQTT 3.1.1, CONNACK 0 (connection accepted) over a connection that ignored the certificate",
        "EXPIRED",
    ):
        assert expected in text, expected
    assert RENEW_FIX not in text  # renewed on disk: the fix is to reload, as check says


def test_without_brokers_the_page_explains_probe() -> None:
    rows = select([], parse_query({}, paged=True))
    on = read(
        fleet_page(
            rows, {}, warn_days=30, now=NOW, probe=ProbeHelp(True, ("a\\.example:8883",), ("default", EVIL))
        )
    ).text
    assert (
        "probe?target=mqtt.example.com:8883&module=%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E%22%0A%26"
        in on
    )
    assert "a\\.example:8883" in on
    off = read(fleet_page(rows, {}, warn_days=30, now=NOW, probe=ProbeHelp(False))).text
    assert "Off. Start the exporter with --probe.allowed-target REGEX" in off


async def test_a_failing_page_answers_503_not_500_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Sequence[ProbeResult]:
        raise RuntimeError("bug")

    source = StatusSource(brokers=lambda: [broker("plant")], results=broken)
    app = build_app(CollectorRegistry(), WebState(), pages=status_routes(source))
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR, logger="mqtt_cert_exporter.status"):
            response = await client.get("/")
            assert response.status == 503 and "exporter's log" in await response.text()
        assert "status page failed" in caplog.text
    ok = StatusSource(
        brokers=lambda: [broker("line/7 ?#"), broker("new")], results=lambda: [trusted("line/7 ?#", 60)]
    )
    app = build_app(CollectorRegistry(), WebState(), pages=status_routes(ok))
    async with TestClient(TestServer(app)) as client:
        page = await (await client.get("/")).text()
        assert 'href="broker/line%2F7%20%3F%23"' in page  # a name is one path segment, whatever it holds
        response = await client.get("/api/v1/brokers/line%2F7%20%3F%23")
        assert response.status == 200
        document = json.loads(await response.text())
        assert document["reports"][0]["status"] == "ok"
        detail = await client.get("/broker/line%2F7%20%3F%23")
        assert detail.status == 200 and detail.headers["X-Content-Type-Options"] == "nosniff"
        assert "CN=line/7 ?#" in read(await detail.text()).text
        pending = read(await (await client.get("/broker/new")).text()).text
        assert "Not probed yet: waiting for the first probe." in pending


def test_addresses_all_gets_a_row_and_a_section_per_address() -> None:
    config = BrokerConfig(name="cluster", target=Target("cluster.example.com", 8883), addresses="all")
    old = cert_facts(subject="CN=old", common_name="old", not_after=NOW + 20 * DAY)
    first = replace(trusted("cluster", 60), ip="10.0.0.7", address_label="10.0.0.7")
    assert first.tls is not None
    second = replace(first, ip="10.0.0.8", address_label="10.0.0.8", tls=replace(first.tls, chain=(old,)))
    rows = assess_fleet([config], [first, second], now=NOW, warn_days=30)
    view = select(rows, parse_query({}, paged=True))
    page = read(fleet_page(view, {}, warn_days=30, now=NOW, probe=ProbeHelp(False)))
    assert page.rows[1].startswith("WARNING cluster cluster.example.com:8883 (10.0.0.8) ")
    assert page.rows[2].startswith("OK cluster cluster.example.com:8883 (10.0.0.7) ")
    detail = read(broker_page("cluster", rows, now=NOW, probe=False)).text
    assert "OK address 10.0.0.7" in detail and "WARNING address 10.0.0.8" in detail
