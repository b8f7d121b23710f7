"""Fixes that name the broker's own settings (``broker_kind``), pure: never a Mosquitto-only instruction
for another broker; for a broker of unknown kind, every kind's, labelled."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from mqtt_cert_exporter.certs.lints import legacy_tls_accepted
from mqtt_cert_exporter.config import BrokerConfig, MqttSettings, Target
from mqtt_cert_exporter.config.model import BrokerKindName
from mqtt_cert_exporter.report import (
    FAILURE_FIXES,
    FULL_CHAIN_FIX,
    RELOAD_FIX,
    RENEW_FIX,
    WRONG_FILE_FIX,
    failure_finding,
)
from mqtt_cert_exporter.report.brokerfixes import MOSQUITTO_ONLY, tailor
from mqtt_cert_exporter.report.brokerkinds import BrokerKind
from mqtt_cert_exporter.results import (
    REASONS_BY_STAGE,
    Failure,
    LegacyTlsFacts,
    MqttFacts,
    Phase,
    ProbeResult,
)

ROOT_LINT = "the server sends the root certificate 2 (root): clients need it in their trust store anyway; leave it out of the broker's certfile"


def _legacy_detail() -> str:
    finding = legacy_tls_accepted(LegacyTlsFacts(True, "TLSv1.1"))
    assert finding is not None
    return finding.detail


def _every_fix(kind: str) -> list[str]:
    """Every fix and lint text the report can show, as shown for a broker of ``kind``."""
    texts = [RENEW_FIX, FULL_CHAIN_FIX, RELOAD_FIX, WRONG_FILE_FIX, ROOT_LINT]
    texts.append(_legacy_detail())
    texts += [fix.format(host="mqtt.example.com", port=8883) for fix in FAILURE_FIXES.values()]
    for username in (None, "monitor"):
        broker = BrokerConfig("b", Target("mqtt.example.com", 8883), mqtt=MqttSettings(username=username))
        for stage, reasons in REASONS_BY_STAGE.items():
            for reason in reasons:
                for code in (None, 1, 4, 5, 0x87):
                    failure = Failure(stage, reason, "detail")
                    result = ProbeResult(
                        broker="b",
                        address=broker.address,
                        ip="127.0.0.1",
                        started=0.0,
                        finished=0.1,
                        durations=((Phase.TOTAL, 0.1),),
                        failure=failure,
                        mqtt=MqttFacts("3.1.1", code),
                    )
                    texts.append(failure_finding(failure, result, broker).fix)
    return [tailor(text, kind) for text in texts]


@pytest.mark.parametrize("kind", [kind for kind in BrokerKind if kind is not BrokerKind.MOSQUITTO])
def test_no_fix_for_another_broker_names_mosquittos_settings(kind: BrokerKind) -> None:
    leftovers = [text for text in _every_fix(kind) if MOSQUITTO_ONLY.search(text)]
    assert leftovers == []


def test_mosquittos_fixes_stay_as_written() -> None:
    assert tailor(RELOAD_FIX, "mosquitto") == RELOAD_FIX
    assert tailor(ROOT_LINT, "mosquitto") == ROOT_LINT


def test_rabbitmq_gets_its_own_instructions() -> None:
    assert "rabbitmqctl eval 'ssl:clear_pem_cache().'" in tailor(RELOAD_FIX, "rabbitmq")
    # RabbitMQ serves the root from cacertfile: "leave it out of the certfile" would be wrong
    root = tailor(ROOT_LINT, "rabbitmq")
    assert "certfile" not in root.replace("cacertfile", "") and "ssl_options.cacertfile" in root
    assert "ssl_options.versions" in tailor(_legacy_detail(), "rabbitmq")
    assert "wss://mqtt.example.com:8883/ws" in tailor(FAILURE_FIXES["mqtt/timeout"], "rabbitmq").format(
        host="mqtt.example.com", port=8883
    )
    assert "Erlang adds the chain from ssl_options.cacertfile" in tailor(FULL_CHAIN_FIX, "rabbitmq")


def test_unknown_kind_gets_every_kinds_instruction_labelled() -> None:
    reload = tailor(RELOAD_FIX, "")
    for name in ("Mosquitto: SIGHUP", "RabbitMQ: rabbitmqctl", "EMQX: ", "HiveMQ: ", "ejabberd: "):
        assert name in reload
    # unlabelled Mosquitto wording is gone
    assert not re.search(r"leave it out of the broker's certfile", tailor(ROOT_LINT, ""))


def test_the_config_accepts_exactly_the_kinds_the_fixes_know() -> None:
    assert set(get_args(BrokerKindName)) == {kind.value for kind in BrokerKind}
