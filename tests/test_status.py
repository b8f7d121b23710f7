"""The fleet status page, served by a real exporter probing real lab brokers: what a person reads.

The verdicts, problems and fixes must be `check`'s: the page is compared with `check --output json` run
on the same configuration, and with the fix sentences of exporter.report.
"""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from mqtt_cert_exporter import check
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.report import FAILURE_FIXES, FULL_CHAIN_FIX, RENEW_FIX
from tests.conftest import ROOT, ExporterProcess, Lab, start_exporter, wait_for
from tests.lab.browser import chromium_binary, dump_dom, screenshot

#: The lab scenarios of issue 17, and what each one's row must say.
SCENARIOS = (
    "good",
    "expiring",
    "expired",
    "unknown_ca",
    "wrong_host",
    "incomplete_chain",
    "closed",
    "black_hole",
)
HOSTILE_CN = "\"q'<script>alert(1)</script>\n&amp;"
HOSTILE_NAME = "<i>plant</i> \"A\" & 'B'"


class TextOf(HTMLParser):
    """What a person reads: the text of the page (not the style sheet), and one text per table row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.rows: list[str] = []
        self._row: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "title"):
            self._skip += 1
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip -= 1
        if tag == "tr" and self._row is not None:
            self.rows.append(" ".join(" ".join(self._row).split()))
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data)
        if self._row is not None:
            self._row.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def read(html: str) -> TextOf:
    parser = TextOf()
    parser.feed(html)
    parser.close()
    return parser


def get(url: str, *, auth: tuple[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def config_text(lab: Lab, hostile_address: str) -> str:
    text = lab.config_yaml(*SCENARIOS, interval="60s", timeout="3s")
    return text + (
        f"  - name: '{HOSTILE_NAME.replace(chr(39), chr(39) * 2)}'\n"
        f"    address: '{hostile_address}'\n"
        "    tls:\n"
        f"      ca_file: '{lab.root.cert_path}'\n"
        "      server_name: localhost\n"
    )


@pytest.fixture(scope="module")
def hostile_broker(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker whose certificate's subject is made to break pages that forget to escape."""
    directory = tmp_path_factory.mktemp("hostile-subject")
    leaf = lab.pki.leaf("hostile-subject", lab.intermediate, common_name=HOSTILE_CN)
    mosquitto = Mosquitto(
        [Listener("hostile", cert=leaf.chain_path(lab.intermediate), key=leaf.key_path)],
        directory / "mosquitto",
    )
    mosquitto.start()
    try:
        yield mosquitto.address("hostile")
    finally:
        mosquitto.stop()


@pytest.fixture(scope="module")
def fleet(
    lab: Lab, hostile_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExporterProcess, Path]]:
    workdir = tmp_path_factory.mktemp("status")
    config = workdir / "config.yaml"
    config.write_text(config_text(lab, hostile_broker))
    process = start_exporter(config, workdir)
    try:
        wait_for(lambda: json.loads(process.get("/api/v1/brokers"))["counts"]["pending"] == 0, timeout=30)
        yield process, config
    finally:
        process.stop()


@pytest.fixture(scope="module")
def fleet_json(fleet: tuple[ExporterProcess, Path]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(fleet[0].get("/api/v1/brokers"))
    return document


ROW = re.compile(r"^(?P<status>[A-Z]+) (?P<name>.+?) (?P<address>[\w.]+:\d+) ")


def rows_by_broker(html: str) -> dict[str, str]:
    """Each row's text by broker name; a row reads "STATUS NAME ADDRESS ..."."""
    found = {}
    for row in read(html).rows[1:]:  # after the header row
        match = ROW.match(row)
        assert match is not None, row
        found[match["name"]] = row
    return found


@pytest.mark.slow
def test_every_row_says_verdict_days_problems_and_fix(fleet: tuple[ExporterProcess, Path]) -> None:
    process, _ = fleet
    page = process.get("/")
    rows = rows_by_broker(page)
    assert set(rows) == {*SCENARIOS, HOSTILE_NAME}
    expectations = {
        "good": ("OK", r"(89\.\d|90\.0) days leaf", "none"),
        "expiring": ("WARNING", r"\b(19\.9|20\.0) days leaf", "expires_soon"),
        "expired": ("CRITICAL", r"EXPIRED (2\.9|3\.0) days ago leaf", "expired"),
        "unknown_ca": ("CRITICAL", r"(89\.\d|90\.0) days leaf", "unknown_ca"),
        "wrong_host": ("CRITICAL", r"(89\.\d|90\.0) days leaf", "hostname_mismatch"),
        "incomplete_chain": ("CRITICAL", r"(89\.\d|90\.0) days leaf", "incomplete_chain"),
        "closed": ("CRITICAL", "no certificate", "connect/refused"),
        "black_hole": ("CRITICAL", "no certificate", "connect/timeout"),
    }
    for name, (verdict, days, problem) in expectations.items():
        row = rows[name]
        assert row.startswith(verdict + " "), row
        assert re.search(days, row), row
        assert problem in row, row
    assert "renew it with your CA" in rows["expiring"]
    assert RENEW_FIX in rows["expired"]
    assert FULL_CHAIN_FIX in rows["incomplete_chain"]
    assert (
        "mqtt.example.com" not in rows["wrong_host"]
        and "--server-name / tls.server_name" in rows["wrong_host"]
    )
    match = ROW.match(rows["closed"])
    assert match is not None
    host, _, port = match["address"].rpartition(":")
    assert FAILURE_FIXES["connect/refused"].format(host=host, port=port) in rows["closed"]
    assert "firewall" in rows["black_hole"]
    assert "(failed at trust/untrusted)" in rows["expired"]

    order = [row.split()[0] for row in read(page).rows[1:]]
    ranks = ["CRITICAL", "WARNING", "PENDING", "OK"]
    assert order == sorted(order, key=ranks.index), "worst first"
    text = read(page).text
    assert "9 brokers" in text and "6 CRITICAL" in text and "1 WARNING" in text and "2 OK" in text


@pytest.mark.slow
def test_the_page_agrees_with_check(fleet: tuple[ExporterProcess, Path], fleet_json: dict[str, Any]) -> None:
    _, config = fleet
    out, err = io.StringIO(), io.StringIO()
    check.main(["--config.file", str(config), "--output", "json"], stdout=out, stderr=err)
    reports = {report["broker"]: report for report in json.loads(out.getvalue())}
    for row in fleet_json["brokers"]:
        report = reports[row["broker"]]
        assert row["status"] == report["status"], row["broker"]
        problems = [problem["problem"] for problem in (report["tls"] or {}).get("problems", [])]
        warnings = [warning["warning"] for warning in report["warnings"]]
        failure = report["failure"]
        if failure and not problems:
            problems.append(f"{failure['stage']}/{failure['reason']}")
        assert set(row["problems"]) == {*problems, *warnings}, row["broker"]
        fixes = {finding["fix"] for finding in row["findings"]}
        assert {problem["fix"] for problem in (report["tls"] or {}).get("problems", [])} <= fixes


@pytest.mark.slow
def test_broker_page_is_the_check_report(fleet: tuple[ExporterProcess, Path]) -> None:
    process, _ = fleet
    status, html, headers = get(process.url + "/broker/expired")
    assert status == 200
    assert (
        "script-src" not in headers["Content-Security-Policy"]
        and "default-src 'none'" in headers["Content-Security-Policy"]
    )
    text = read(html).text
    for expected in (
        "CRITICAL latest probe",
        "expired: certificate 0 (expired) expired on",
        "fix: " + RENEW_FIX,
        "Certificate chain",
        "CN=expired",
        "CN=Lab Intermediate CA",
        "EC-P256",
        "ecdsa-with-SHA256",
        "NOT trusted by the CA file",
        "10 certificate has expired",
        "anchor O=mqtt-cert-exporter lab,CN=Lab Root CA",
        "CONNACK 0 (success) over a connection that ignored the certificate",
        "timings resolve",
        "verdict CRITICAL: the certificate chain is not trusted (expired)",  # check's own text, verbatim
    ):
        assert expected in text, expected

    missing = read(process.get("/broker/incomplete_chain")).text
    assert "incomplete_chain: the server did not send the intermediate certificate" in missing
    assert FULL_CHAIN_FIX in missing

    status, html, _ = get(process.url + "/broker/no-such-broker")
    assert status == 404 and "Unknown broker." in read(html).text


@pytest.mark.slow
def test_filters_by_text_and_status(fleet: tuple[ExporterProcess, Path]) -> None:
    process, _ = fleet
    only = rows_by_broker(process.get("/?q=hostname_mismatch"))
    assert set(only) == {"wrong_host"}
    attention = rows_by_broker(process.get("/?status=critical,warning&q=ex"))
    assert set(attention) == {"expiring", "expired"}
    assert set(rows_by_broker(process.get("/?status=ok"))) == {"good", HOSTILE_NAME}
    paged = process.get("/?per_page=2&page=2")
    assert len(read(paged).rows) == 3 and "page 2 of 5, brokers 3-4 of 9" in read(paged).text
    assert 'href="?page=3&amp;per_page=2"' in paged or 'href="?per_page=2&amp;page=3"' in paged
    for bad, named in (("?page=zero", "'page'"), ("?status=red", "'status'"), ("?q=" + "x" * 201, "'q'")):
        status, html, _ = get(process.url + "/" + bad)
        assert status == 400 and named in read(html).text
    status, body, _ = get(process.url + "/api/v1/brokers?limit=-1")
    assert status == 400 and "'limit'" in json.loads(body)["error"]


def documented_keys(section: str) -> list[str]:
    """The keys docs/status.md lists in the table under ``section`` (a ### heading)."""
    text = (ROOT / "docs" / "status.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", body, re.MULTILINE)


@pytest.mark.slow
def test_json_is_held_to_the_documented_schema(
    fleet: tuple[ExporterProcess, Path], fleet_json: dict[str, Any]
) -> None:
    assert list(fleet_json) == documented_keys("The document")
    broker_keys = documented_keys("A broker")
    for row in fleet_json["brokers"]:
        assert list(row) == broker_keys
        for finding in row["findings"]:
            assert list(finding) == documented_keys("A finding")
        if row["failure"] is not None:
            assert list(row["failure"]) == documented_keys("A failure")
    assert fleet_json["schema_version"] == 1 and fleet_json["total"] == 9 and fleet_json["limit"] is None
    expired = next(row for row in fleet_json["brokers"] if row["broker"] == "expired")
    assert (
        expired["status"] == "critical"
        and -3.1 < expired["days_left"] < -2.9
        and expired["expires_position"] == 0
    )
    one = json.loads(fleet[0].get("/api/v1/brokers/expired"))
    assert one["reports"][0]["status"] == "critical" and one["reports"][0]["broker"] == "expired"


@pytest.mark.slow
def test_hostile_subject_and_name_are_text(fleet: tuple[ExporterProcess, Path]) -> None:
    process, _ = fleet
    page = process.get("/")
    assert "<script>" not in page and "<i>plant" not in page
    assert "&lt;i&gt;plant&lt;/i&gt; &quot;A&quot; &amp; &#x27;B&#x27;" in page
    href = re.search(r'href="(broker/%3Ci%3E[^"]*)"', page)
    assert href is not None
    status, detail, _ = get(f"{process.url}/{href.group(1)}")
    assert status == 200
    assert "<script" not in detail.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "\"q'<script>alert(1)</script>" in read(detail).text  # the CN, as check shows it


@pytest.mark.slow
def test_pages_are_behind_the_web_config(lab: Lab, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"let-me-see", bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  ops: '{hashed}'\n")
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, tmp_path, f"--web.config.file={web_config}")
    try:
        for path in ("/", "/broker/good", "/api/v1/brokers", "/api/v1/brokers/good"):
            assert get(process.url + path)[0] == 401, path
            assert get(process.url + path, auth=("ops", "wrong"))[0] == 401, path
            assert get(process.url + path, auth=("ops", "let-me-see"))[0] == 200, path
    finally:
        process.stop()


@pytest.mark.slow
def test_probe_only_deployment_explains_probe(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("modules:\n  plant:\n    timeout: 5s\n  mtls: {}\n")
    process = start_exporter(config, tmp_path, "--probe.allowed-target=mqtt\\.example\\.com:8883")
    try:
        text = read(process.get("/")).text
        assert "No brokers are configured for scheduled probing" in text
        for module in ("default", "plant", "mtls"):
            assert f"probe?target=mqtt.example.com:8883&module={module}" in text
        assert "mqtt\\.example\\.com:8883" in text  # the allowed pattern
        assert json.loads(process.get("/api/v1/brokers"))["total"] == 0
    finally:
        process.stop()
    process = start_exporter(config, tmp_path)
    try:
        assert "Off. Start the exporter with --probe.allowed-target REGEX" in read(process.get("/")).text
    finally:
        process.stop()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow
def test_in_a_real_browser(
    fleet: tuple[ExporterProcess, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Debian's chromium renders the page from the running exporter; screenshots are kept (path printed)."""
    if chromium_binary() is None:
        pytest.skip(
            "chromium is not installed: run `bash scripts/ensure-system-packages.sh browser` (make test does)"
        )
    process, _ = fleet
    dom = dump_dom(process.url + "/")
    page = read(dom)
    assert "<script" not in dom.lower()  # the hostile name stayed text: no element was made of it
    rows = rows_by_broker(dom)
    assert rows["expired"].startswith("CRITICAL expired ") and RENEW_FIX in rows["expired"]
    assert rows["expiring"].startswith("WARNING expiring ") and "expires_soon" in rows["expiring"]
    assert rows[HOSTILE_NAME].startswith(f"OK {HOSTILE_NAME} ")
    assert "9 brokers" in page.text and "6 CRITICAL" in page.text

    href = re.search(r'href="(broker/%3Ci%3E[^"]*)"', dom)
    assert href is not None
    detail_dom = dump_dom(f"{process.url}/{href.group(1)}")
    assert "<script" not in detail_dom.lower()
    assert "\"q'<script>alert(1)</script>" in read(detail_dom).text

    artifacts = tmp_path_factory.mktemp("status-screenshots")
    desktop = screenshot(process.url + "/", artifacts / "status.png", window_size=(1280, 900))
    phone = screenshot(
        process.url + "/?status=critical", artifacts / "status-phone.png", window_size=(390, 1400)
    )
    broker = screenshot(
        process.url + "/broker/expired", artifacts / "broker-expired.png", window_size=(1280, 1400)
    )
    print(f"status page screenshots: {desktop} {phone} {broker}")
    assert png_size(desktop) == (1280, 900) and png_size(phone) == (390, 1400) and png_size(broker)[0] == 1280
