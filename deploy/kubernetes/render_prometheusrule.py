#!/usr/bin/env python3
"""Render prometheus/alerts.yml as a Prometheus Operator PrometheusRule (deploy/kubernetes/prometheusrule.yaml).

The rule groups are copied as text, comments included, under ``spec:``. Run it after editing the rules::

    python3 deploy/kubernetes/render_prometheusrule.py          # rewrite prometheusrule.yaml
    python3 deploy/kubernetes/render_prometheusrule.py --check  # exit 1 when it is out of date

Every rule's ``runbook_url`` points at ``docs/runbooks/<AlertName>.md`` under a base URL, this
repository's by default. A site that keeps its own copy of the runbooks renders its own rules::

    python3 deploy/kubernetes/render_prometheusrule.py --runbook-base-url=https://wiki.example.com/mqtt \
        --output=- > prometheusrule.yaml          # or --format=rules for a plain Prometheus rule file

Prometheus before 2.42 (and Thanos Ruler before 0.34) refuses a rule file with ``keep_firing_for``:
``--without-keep-firing-for`` renders one it loads, at the price docs/alerting.md describes.

tests/test_rules.py fails when the two disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "prometheus" / "alerts.yml"
TARGET = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
#: The base every runbook_url of prometheus/alerts.yml starts with.
RUNBOOK_BASE_URL = "https://github.com/mqtt-cert-exporter/mqtt-cert-exporter/blob/main/docs/runbooks"

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


def with_runbook_base_url(rules: str, base_url: str) -> str:
    """The rule file text with every runbook_url under ``base_url`` instead of the shipped base."""
    if not base_url.startswith(("https://", "http://")):
        raise ValueError(f"--runbook-base-url: {base_url!r} is not an http(s) URL")
    prefix = f"runbook_url: {RUNBOOK_BASE_URL}/"
    if prefix not in rules:
        raise ValueError(f"the rule file has no `{prefix}...` to rebase")
    return rules.replace(prefix, f"runbook_url: {base_url.rstrip('/')}/")


def without_keep_firing_for(rules: str) -> str:
    """The rule file text without its keep_firing_for lines, for Prometheus before 2.42."""
    return "".join(
        line for line in rules.splitlines(keepends=True) if not line.lstrip().startswith("keep_firing_for:")
    )


def render(rules: str, runbook_base_url: str = RUNBOOK_BASE_URL) -> str:
    """The PrometheusRule text for the text of a Prometheus rule file (from its `groups:` line on)."""
    rules = with_runbook_base_url(rules, runbook_base_url)
    lines = rules.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise ValueError("the rule file has no top-level `groups:` line") from None
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return HEADER + body


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when prometheusrule.yaml is out of date")
    parser.add_argument(
        "--runbook-base-url",
        default=RUNBOOK_BASE_URL,
        help="where docs/runbooks/<AlertName>.md are served (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=("prometheusrule", "rules"),
        default="prometheusrule",
        help="a Prometheus Operator PrometheusRule, or a plain Prometheus rule file",
    )
    parser.add_argument(
        "--without-keep-firing-for",
        action="store_true",
        help="for Prometheus < 2.42: drop keep_firing_for (scrape gaps then resolve alerts)",
    )
    parser.add_argument(
        "--output", help="file to write, - for stdout (default: deploy/kubernetes/prometheusrule.yaml)"
    )
    args = parser.parse_args(argv)
    source = SOURCE.read_text(encoding="utf-8")
    if args.without_keep_firing_for:
        source = without_keep_firing_for(source)
    try:
        if args.format == "rules":
            wanted = with_runbook_base_url(source, args.runbook_base_url)
        else:
            wanted = render(source, args.runbook_base_url)
    except ValueError as error:
        parser.error(str(error))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != wanted:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run {Path(__file__).relative_to(ROOT)}")
            return 1
        return 0
    if args.output == "-":
        sys.stdout.write(wanted)
        return 0
    target = Path(args.output) if args.output else TARGET
    target.write_text(wanted, encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
