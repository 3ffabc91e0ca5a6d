"""The dashboard and alert rules in `kustomize/components/prometheus` against the metrics
the servers really export: a query naming a metric nobody exports draws an empty panel
or an alert that never fires, and nothing else would say so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

# Series Prometheus makes itself for every target it scrapes.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b\d+(?:\.\d+)?(?:ms|[smhdwy])?\b", "", text)  # numbers, durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in _NAME.finditer(text):
        word = match.group()
        follows = text[match.end() :].lstrip()[:1]
        variable = text[match.start() - 1 : match.start()] == "$"  # a dashboard's $name
        if follows == "(" or word.lower() in _WORDS or variable:
            continue  # a function, a keyword or a variable
        names.add(word)
    return names


def exported_names(metrics_text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers, from its families (a
    labelled metric that has not been used yet still declares its family)."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(metrics_text):
        base = family.name
        names.add(base)
        if family.type == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        elif family.type in ("histogram", "summary"):
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum", f"{base}_created"}
        names |= {sample.name for sample in family.samples}
    return names


def dashboard_queries(path: Path) -> list[str]:
    dashboard = json.loads(Path(path).read_text())
    return [
        target["expr"]
        for panel in dashboard.get("panels", [])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def rule_queries(path: Path) -> list[str]:
    rules = yaml.safe_load(Path(path).read_text())
    return [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]


def unknown_metrics(queries: list[str], exported: set[str]) -> list[str]:
    """'metric (in: query)' for each metric a query reads that nothing exports."""
    known = exported | SCRAPE_SERIES
    return [
        f"{name} (in: {query})" for query in queries for name in sorted(metric_names(query) - known)
    ]
