"""The monitoring files, checked offline: every metric a dashboard or rule uses exists (f2f's own, defined in
f2f/serving/metrics.py; Ray's own, as Ray's bundled dashboards use them or Ray Serve defines its gauges; or a
recording rule here), the rules pass `promtool check rules` and their unit tests (`promtool test rules`, which
must fail when an alert's logic is broken), dashboards are valid JSON with unique panel ids, and the PodMonitor
scrapes the port the Ray pods name `metrics`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from f2f.serving import metrics

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "grafana").glob("*.json"))
RULES = OBSERVABILITY / "prometheus" / "rules.yaml"
RULE_TESTS = OBSERVABILITY / "prometheus" / "rules.test.yaml"
SERVE_GAUGE = re.compile(r'metrics\.Gauge\(\s*"(serve_[a-z0-9_]+)"')
USED = re.compile(r"\b(ray_[a-z0-9_]+|f2f:[a-z0-9_:]+)")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset"}


@cache
def known_metrics() -> frozenset[str]:
    """Exported names: f2f's (with Ray's prefix and histogram suffixes), Ray's own, and our recording rules."""
    names = set()
    for name, kind in _f2f_metric_kinds().items():
        names.add(f"ray_{name}")
        if kind == "histogram":
            names |= {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
    import ray

    ray_dashboards = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    for path in [*ray_dashboards.glob("*.py"), *ray_dashboards.glob("*.json")]:
        names |= set(re.findall(r"\bray_[a-z0-9_]+", path.read_text()))
    for path in (Path(ray.__file__).parent / "serve").rglob("*.py"):  # Serve's gauges, exported as ray_<name>
        names |= {f"ray_{name}" for name in SERVE_GAUGE.findall(path.read_text())}
    names |= {rule["record"] for group in _rules()["groups"] for rule in group["rules"] if "record" in rule}
    return frozenset(names)


def _f2f_metric_kinds() -> dict[str, str]:
    kinds = {}
    for line in (metrics.__doc__ or "").splitlines():
        match = re.match(r"\| `ray_(f2f_\w+)` \| (\w+) \|", line)
        if match:
            kinds[match[1]] = match[2]
    return kinds


def _rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def expressions() -> dict[str, str]:
    """Every PromQL expression: 'where' -> expr."""
    found = {}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                found[f"{path.name} panel {panel['id']} {target['refId']}"] = target["expr"]
    for group in _rules()["groups"]:
        for rule in group["rules"]:
            found[f"rules {rule.get('record') or rule.get('alert')}"] = rule["expr"]
    return found


def unknown_metrics(expr: str) -> list[str]:
    used = set(USED.findall(expr))
    selected = {name for name in SELECTOR.findall(re.sub(r'"[^"]*"', '""', expr)) if name not in PROMQL_WORDS}
    return sorted(name for name in used | selected if name not in known_metrics())


def test_the_metric_table_lists_every_defined_metric() -> None:
    defined = {getattr(metrics, n) for n in dir(metrics) if n.isupper() and isinstance(getattr(metrics, n), str)}
    assert set(_f2f_metric_kinds()) == {name for name in defined if name.startswith("f2f_")}


def test_every_metric_used_exists() -> None:
    exprs = expressions()
    assert len(exprs) >= 20
    assert {where: bad for where, expr in exprs.items() if (bad := unknown_metrics(expr))} == {}


def test_a_misspelt_metric_is_caught() -> None:
    assert unknown_metrics("sum(rate(ray_f2f_edit_total[5m]))") == ["ray_f2f_edit_total"]
    assert unknown_metrics('max(queue_depth{app="f2f"})') == ["queue_depth"]


def test_dashboards_are_valid_with_unique_panel_ids() -> None:
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)) and all(panel["targets"] for panel in dashboard["panels"])
        titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
        for subject in ("route", "queue", "broker", "p50", "p95", "denois", "gpu memory", "replicas", "target", "fallback"):
            assert subject in titles, f"{path.name} has no {subject} panel"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return promtool


def test_rules_pass_promtool() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in _rules()["groups"] for rule in group["rules"] if "alert" in rule}
    assert {"F2FEditErrorsHigh", "F2FQueueBacklogOld", "F2FNoHealthyReplicas", "F2FEditLatencyObjective"} <= alerts
    assert {"F2FQueueStalled", "F2FBrokerBacklog"} <= alerts


def _rule_tests(rules: Path, tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), "test", "rules", str(tests)], capture_output=True, text=True, cwd=rules.parent)


def test_the_stall_and_backlog_alerts_fire_when_they_should_and_only_then() -> None:
    """rules.test.yaml: the stall alert fires when jobs wait and no edit ends for 15 minutes (also when none ever
    ended), not while edits end (errors included) or nothing waits; the backlog alert after 30 minutes of a
    broker that never empties, not when it empties in between."""
    result = _rule_tests(RULES, RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [check for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for check in test["alert_rule_test"]]
    for alert in ("F2FQueueStalled", "F2FBrokerBacklog"):
        outcomes = {bool(check["exp_alerts"]) for check in cases if check["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert} needs a case that fires and one that does not"


@pytest.mark.parametrize(
    ("broken", "instead"),
    [
        ("(sum(increase(ray_f2f_edits_total[15m])) or vector(0)) == 0", "sum(increase(ray_f2f_edits_total[15m])) == 0"),
        ("sum(increase(ray_f2f_edits_total[15m]))", 'sum(increase(ray_f2f_edits_total{outcome="edited"}[15m]))'),
        ("max(ray_f2f_queue_depth) > 0", "max(ray_f2f_queue_depth) > 1"),
    ],
    ids=["blind-before-the-first-edit", "errors-do-not-count-as-ended", "one-waiting-job-is-missed"],
)
def test_a_broken_stall_alert_fails_its_unit_test(tmp_path: Path, broken: str, instead: str) -> None:
    text = RULES.read_text()
    assert text.count(broken) == 1
    (tmp_path / "rules.yaml").write_text(text.replace(broken, instead))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = _rule_tests(tmp_path / "rules.yaml", tmp_path / RULE_TESTS.name)
    assert result.returncode != 0 and "F2FQueueStalled" in result.stdout + result.stderr


def test_the_pod_monitor_scrapes_the_named_metrics_port() -> None:
    monitor = yaml.safe_load((OBSERVABILITY / "podmonitor.yaml").read_text())
    assert monitor["kind"] == "PodMonitor" and monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    manifests = list((ROOT / "k8s" / "overlays").glob("*/ray*.yaml"))
    assert manifests
    for path in manifests:
        text = path.read_text()
        assert f"name: {endpoint['port']}\n" in text and 'metrics-export-port: "8080"' in text, path
