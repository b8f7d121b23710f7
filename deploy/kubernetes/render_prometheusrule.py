#!/usr/bin/env python3
"""Render prometheus/alerts.yml as a Prometheus Operator PrometheusRule (deploy/kubernetes/prometheusrule.yaml).

The rule groups are copied as text, comments included, under ``spec:``. Run it after editing the rules::

    python3 deploy/kubernetes/render_prometheusrule.py          # rewrite prometheusrule.yaml
    python3 deploy/kubernetes/render_prometheusrule.py --check  # exit 1 when it is out of date

tests/test_rules.py fails when the two disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "prometheus" / "alerts.yml"
TARGET = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from prometheus/alerts.yml by deploy/kubernetes/render_prometheusrule.py: do not edit here.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: mqtt-cert-exporter
  labels:
    app.kubernetes.io/name: mqtt-cert-exporter
    app.kubernetes.io/part-of: mqtt-cert-exporter
    app.kubernetes.io/component: alerting-rules
    # The Prometheus resource's ruleSelector must match; kube-prometheus-stack selects
    # `release: <its Helm release name>` by default.
    release: kube-prometheus-stack
spec:
"""


def render(rules: str) -> str:
    """The PrometheusRule text for the text of a Prometheus rule file (from its `groups:` line on)."""
    lines = rules.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise ValueError("the rule file has no top-level `groups:` line") from None
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return HEADER + body


def main(argv: list[str]) -> int:
    wanted = render(SOURCE.read_text(encoding="utf-8"))
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != wanted:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run {Path(__file__).relative_to(ROOT)}")
            return 1
        return 0
    TARGET.write_text(wanted, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
