"""deploy/monitoring: the Prometheus alert rules, their unit tests and the Grafana dashboard.

Two ways to check the rules. promtool, Prometheus's own checker, runs when it is on PATH or named by
$PROMTOOL (Debian/Ubuntu: `apt-get install prometheus`; the GitHub workflow installs it): it loads
the rules as Prometheus would and runs the unit tests of alerts.test.yml, which show each alert
firing after its `for:` on bad series and staying quiet on healthy ones. Without promtool those two
tests skip. The schema checks run always: the structure Prometheus expects, every duration, every
PromQL expression (promql-parser), every runbook link, and the metric names against the list of
what the service exposes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

from .conftest import PROJECT_DIR

MONITORING = PROJECT_DIR / "deploy" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "dashboard.json"
RUNBOOK = PROJECT_DIR / "docs" / "monitoring.md"

# What the service's /metrics exposes (serving/metrics.py, and BentoML's own): rules and panels use only these.
METRICS = {
    # ours, labelled with the model version
    "model_requests_total",
    "model_request_duration_seconds_bucket",
    "model_request_duration_seconds_sum",
    "model_request_duration_seconds_count",
    "model_predictions_total",
    "model_prediction_value_bucket",
    "model_prediction_value_sum",
    "model_prediction_value_count",
    "out_of_profile_values_total",
    "model_fallback_answers_total",
    "model_shed_requests_total",
    # BentoML's (endpoint, http_response_code, service_name, service_version; no model version)
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds_bucket",
    "bentoml_service_request_duration_seconds_sum",
    "bentoml_service_request_duration_seconds_count",
    "bentoml_service_request_in_progress",
}
SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
# Grafana's variables, replaced by sample values before an expression is parsed as PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$model_version": "3",
}


def promtool() -> str | None:
    """$PROMTOOL (which must then exist), else promtool on PATH, else None."""
    named = os.environ.get("PROMTOOL")
    if named:
        assert Path(named).is_file(), f"PROMTOOL={named}: no such file"
        return named
    return shutil.which("promtool")


def run_promtool(*args: str) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not found (apt-get install prometheus, or set PROMTOOL)")
    done = subprocess.run(
        [tool, *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects (raises ValueError if it is not PromQL)."""
    names: set[str] = set()

    def visit(node) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or "")
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (outside code blocks)."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6}\s+(.+?)\s*#*$", line)):
            text = re.sub(r"[^\w\- ]", "", heading[1].strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def dashboard_panels() -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


# promtool


def test_promtool_accepts_the_rules():
    run_promtool("check", "rules", str(RULES.relative_to(PROJECT_DIR)))


def test_promtool_unit_tests_of_the_rules_pass():
    """Each alert fires after its `for:` on bad series, and not before, nor on healthy series."""
    run_promtool("test", "rules", str(RULE_TESTS.relative_to(PROJECT_DIR)))


# The rules, by schema


def test_rules_have_the_shape_prometheus_expects():
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names)) and all(names)
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}, group["name"]
        for rule in group["rules"]:
            found.append(rule["alert"])
            assert set(rule) <= RULE_KEYS and {"alert", "expr", "for"} <= set(rule), rule
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", rule["alert"])
            promql_parser.parse_duration(rule["for"])  # raises on a bad duration
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert set(rule["annotations"]) >= ANNOTATIONS, rule["alert"]
            assert all(isinstance(value, str) for value in rule["labels"].values())
    assert {
        "ModelHighErrorRate",
        "ModelHighLatency",
        "ModelNoTraffic",
        "ModelInputsOutOfProfile",
    } <= set(found)
    assert len(found) == len(set(found))


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_rule_expressions_parse_and_use_only_exposed_metrics(rule):
    try:
        names = metric_names(rule["expr"])
    except ValueError as error:
        pytest.fail(f"{rule['alert']}: not PromQL: {error}\n{rule['expr']}")
    assert names and names <= METRICS, f"{rule['alert']}: unknown metrics {names - METRICS}"


def test_every_runbook_link_has_its_section():
    anchors = github_anchors(RUNBOOK.read_text())
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("/docs/monitoring.md"), url
        assert anchor in anchors, f"{rule['alert']}: docs/monitoring.md has no section #{anchor}"
        assert anchor == rule["alert"].lower()


def test_latency_alert_holds_production_to_the_rollout_check():
    """ModelHighLatency's threshold is rollout.checks.max_p95_latency_ms of params.yaml."""
    params = yaml.safe_load((PROJECT_DIR / "params.yaml").read_text())
    limit_ms = params["rollout"]["checks"]["max_p95_latency_ms"]
    (rule,) = [rule for rule in rules() if rule["alert"] == "ModelHighLatency"]
    expr = promql_parser.parse(rule["expr"])
    assert isinstance(expr, promql_parser.BinaryExpr) and str(expr.op) == ">"
    assert isinstance(expr.rhs, promql_parser.NumberLiteral)
    assert expr.rhs.val * 1000 == limit_ms, "params.yaml and alerts.yml disagree: update both"


def test_each_alert_has_a_unit_test_that_fires_and_one_that_stays_quiet():
    """What alerts.test.yml covers, read without promtool (which runs it when installed)."""
    document = yaml.safe_load(RULE_TESTS.read_text())
    assert document["rule_files"] == [RULES.name]
    fired, quiet = set(), set()
    for test in document["tests"]:
        for series in test["input_series"]:
            assert metric_names(series["series"]) <= METRICS, series["series"]
        for case in test["alert_rule_test"]:
            promql_parser.parse_duration(case["eval_time"])
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert fired == alerts and quiet == alerts


# The dashboard


def test_dashboard_loads_with_its_variables():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40 and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model_version"]["datasource"]["uid"] == "${datasource}"
    assert dashboard_panels()
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", dashboard_panels(), ids=lambda panel: panel["title"])
def test_dashboard_panels_query_exposed_metrics_in_promql(panel):
    if panel["type"] == "row":
        return
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["targets"], panel["title"]
    for target in panel["targets"]:
        assert target.get("datasource", panel["datasource"]) == panel["datasource"]
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{panel['title']}: unknown variable in {target['expr']}"
        try:
            names = metric_names(expr)
        except ValueError as error:
            pytest.fail(f"{panel['title']}: not PromQL: {error}\n{target['expr']}")
        assert names and names <= METRICS, f"{panel['title']}: unknown metrics {names - METRICS}"
