"""What the workflows show and decide: the PR comment, job summaries, step outputs, configuration checks."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from {{ cookiecutter.package }} import cli, evaluation, loadtest, reports, validation
from {{ cookiecutter.package }}.errors import NotServing
from {{ cookiecutter.package }}.github import actions, comment, config_check, issue
from {{ cookiecutter.package }}.monitoring import verdict as monitoring
from {{ cookiecutter.package }}.params import METRIC_GREATER_IS_BETTER
from {{ cookiecutter.package }}.settings import Environment, GitHubContext, load_settings

DIRECTIONS = METRIC_GREATER_IS_BETTER["classification"]


def evaluate_report(**changes) -> dict:
    report = {
        "decision": "promote",
        "reasons": [
            "f1 improves by +0.0200 (needs at least 0.005)",
            "guard accuracy within tolerance (+0.0100, tolerance 0.01)",
        ],
        "primary_metric": "f1",
        "candidate_version": 3,
        "champion_version": 2,
        "candidate_metrics": {"f1": 0.95, "accuracy": 0.96, "log_loss": 0.12},
        "champion_metrics": {"f1": 0.93, "accuracy": 0.95, "log_loss": 0.10},
        "improvement": 0.02,
        "interval": [0.001, 0.04],
        "holdout_rows": 114,
        "plots": ["reports/plots/confusion_matrix.png", "reports/plots/roc_curve.png"],
    }
    return {**report, **changes}


def validate_report(failures: int = 0) -> dict:
    return {
        "success": failures == 0,
        "evaluated": 95,
        "failed": failures,
        "rows": 569,
        "failures": [
            {
                "expectation": "expect_column_values_to_be_between",
                "column": f"feature_{index}",
                "unexpected_count": 3,
                "observed": [-999.0, "a|b <script>"],
                "expected": "between 0 and 40",
            }
            for index in range(failures)
        ],
    }


def rows_by_metric(report: dict) -> dict[str, list[str]]:
    return {row[0]: row for row in evaluation.metric_rows(report, DIRECTIONS)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0123, "+0.0123"),
        (-0.004, "-0.0040"),
        (0.0, "0.0000"),
        (-0.00001, "0.0000"),
        (None, "n/a"),
    ],
)
def test_deltas_carry_their_sign(value, expected):
    assert reports.signed(value) == expected


def test_metric_table_shows_candidate_champion_delta_and_direction():
    rows = rows_by_metric(evaluate_report())
    assert rows["**f1** (gate)"] == ["**f1** (gate)", "0.9500", "0.9300", "+0.0200", "better"]
    assert rows["accuracy"][3:] == ["+0.0100", "better"]
    # log loss went up: a positive delta that is worse, because lower is better
    assert rows["log_loss"][3:] == ["+0.0200", "worse"]


def test_equal_metrics_are_the_same_not_better():
    report = evaluate_report(candidate_metrics={"f1": 0.93}, champion_metrics={"f1": 0.93})
    assert rows_by_metric(report)["**f1** (gate)"][3:] == ["0.0000", "same"]


def test_first_model_has_no_champion_column_values():
    report = evaluate_report(champion_version=None, champion_metrics={}, interval=None)
    rows = rows_by_metric(report)
    assert rows["accuracy"][2:4] == ["n/a", "n/a"]
    text = evaluation.markdown(report, DIRECTIONS)
    assert "no champion (first model)" in text


@pytest.mark.parametrize(("decision", "word"), [("promote", "PROMOTE"), ("reject", "REJECT")])
def test_verdict_and_reasons_are_in_the_report(decision, word):
    reasons = ["f1 changes by -0.0100; needs at least +0.005", "guard accuracy worsens by 0.0200"]
    report = comment.render(
        {"evaluate": evaluate_report(decision=decision, reasons=reasons), "validate": None},
        DIRECTIONS,
        comment.Provenance(),
    )
    assert report.startswith(f"## Model report: **{word}** v3")
    assert f"### Gate verdict: **{word}** candidate v3" in report
    for reason in reasons:
        assert f"- {reason}" in report


def test_missing_reports_give_a_clear_line_not_an_error():
    report = comment.render(
        {"evaluate": None, "validate": None},
        DIRECTIONS,
        comment.Provenance(run_url="https://github.com/o/r/actions/runs/1"),
    )
    assert "_No evaluate report: the `evaluate` step did not run" in report
    assert "_No validate report" in report
    assert "(https://github.com/o/r/actions/runs/1)" in report
    assert "Plots" not in report


def test_validation_failures_are_tabulated_and_escaped():
    text = validation.markdown(validate_report(failures=2))
    assert "### Data validation: **FAILED**" in text
    assert "2 of 95 expectations failed on 569 rows" in text
    assert "`feature_1`" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "a\\|b" in text  # a pipe in the data does not split the table row


def test_many_validation_failures_are_counted_not_listed():
    text = validation.markdown(validate_report(failures=validation.MAX_FAILURE_ROWS + 7))
    assert text.count("expect_column_values_to_be_between") == validation.MAX_FAILURE_ROWS
    assert "... and 7 more failures" in text


def test_plots_link_to_the_artifact():
    text = comment.plots_section(evaluate_report(), "https://example.com/artifact/9")
    assert "confusion matrix, roc curve" in text
    assert "(https://example.com/artifact/9)" in text


def test_comment_starts_with_the_hidden_marker():
    body = comment.body("## Model report\n")
    assert body.splitlines()[0] == comment.MARKER
    assert body.splitlines()[0].startswith("<!--")


def test_very_long_report_is_cut_below_githubs_limit_with_a_note():
    report = comment.render(
        {"evaluate": evaluate_report(), "validate": validate_report(failures=20)},
        DIRECTIONS,
        comment.Provenance(),
    )
    # a report far over the limit, with characters that count twice in UTF-16
    long_report = report + "\n".join(f"- line {n} \N{BAR CHART}" * 5 for n in range(20_000))
    body = comment.body(long_report, "https://github.com/o/r/actions/runs/1")
    assert actions.utf16_length(body) <= actions.COMMENT_LIMIT
    assert body.startswith(comment.MARKER + "\n## Model report")
    assert body.rstrip().endswith("._")
    assert "Truncated" in body and "(https://github.com/o/r/actions/runs/1)" in body
    assert "| **f1** (gate) |" in body  # the top of the report survives


def test_short_report_is_not_truncated():
    report = "## Model report\n\nall good\n"
    assert comment.body(report) == comment.MARKER + "\n" + report


def test_a_single_enormous_line_is_cut_too():
    text = actions.truncate("x" * 100_000, 1_000, "_cut_")
    assert actions.utf16_length(text) <= 1_000 and text.endswith("_cut_")


def test_outputs_go_to_the_github_output_file(tmp_path):
    path = tmp_path / "output"
    values = actions.outputs_from("evaluate", evaluate_report(champion_version=None))
    actions.write_outputs(values, GitHubContext(output=path))
    assert path.read_text() == "decision=promote\ncandidate_version=3\nchampion_version=\n"


@pytest.mark.parametrize(
    ("report", "tag"),
    [
        ({"champion": 3, "rolled_back_from": 4}, "model-v3"),
        ({"skipped": True, "champion": 5, "why": "not v4"}, ""),
        ({"champion": None, "previous": None}, ""),  # the first champion's alias was removed
    ],
)
def test_the_image_tag_to_move_production_to_comes_from_the_rollback(report, tag):
    assert actions.outputs_from("rollback", report)["image_tag"] == tag
    assert actions.outputs_from("train", {"model_version": 7})["image_tag"] == "model-v7"


def test_outputs_refuse_line_breaks(tmp_path):
    with pytest.raises(ValueError, match="line break"):
        actions.write_outputs({"x": "a\nb=c"}, GitHubContext(output=tmp_path / "output"))


def test_cd_without_a_tracking_server_says_what_to_set(tmp_path):
    check = config_check.check("cd", Environment.read({}), {"data": "data/x.csv"}, tmp_path)
    assert check.configured is False
    assert check.outputs == {"configured": "false"}
    summary = check.summary()
    assert "MLFLOW_TRACKING_URI" in summary and "docs/setup.md" in summary
    assert "AWS_ROLE_ARN" not in summary  # the data is local


def test_s3_locations_need_an_aws_role(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}
    locations = {"data": "data/x.csv", "input": "s3://bucket/in.csv", "output": "s3://bucket/out"}
    assert config_check.check("cd", Environment.read(env), locations, tmp_path).configured is True
    batch = config_check.check("batch", Environment.read(env), locations, tmp_path)
    assert batch.configured is False
    assert [name for _, name, _ in batch.missing] == ["AWS_ROLE_ARN"]
    with_role = {**env, "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/gh"}
    assert (
        config_check.check("batch", Environment.read(with_role), locations, tmp_path).configured
        is True
    )


def test_batch_on_emr_serverless_needs_an_aws_role_and_says_where_it_runs(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}
    local = {"data": "data/x.csv", "input": "data/in.csv", "output": "reports/out.parquet"}
    here = config_check.check("batch", Environment.read(env), local, tmp_path)
    assert here.outputs == {"configured": "true", "emr_serverless": "false"}
    emr = config_check.check("batch", Environment.read(env), local, tmp_path, "00f1abcd2ef3gh4i")
    assert [name for _, name, _ in emr.missing] == ["AWS_ROLE_ARN"]
    with_role = {**env, "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/gh"}
    emr = config_check.check(
        "batch", Environment.read(with_role), local, tmp_path, "00f1abcd2ef3gh4i"
    )
    assert emr.outputs == {"configured": "true", "emr_serverless": "true"}
    assert "EMR Serverless application `00f1abcd2ef3gh4i`" in emr.summary()


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "baseline"),
        ({"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}, "server"),
        (
            {
                "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
                "PR_HEAD_REPO": "someone/fork",
                "GITHUB_REPOSITORY": "owner/repo",
            },
            "baseline",
        ),
        (
            {
                "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
                "PR_HEAD_REPO": "owner/repo",
                "GITHUB_REPOSITORY": "owner/repo",
            },
            "server",
        ),
        # A pull request whose fork was deleted has no head repository: still a fork.
        (
            {
                "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
                "GITHUB_REPOSITORY": "owner/repo",
            },
            "baseline",
        ),
    ],
)
def test_ci_needs_no_configuration(tmp_path, env, mode):
    check = config_check.check("ci", Environment.read(env), {}, tmp_path)
    assert check.configured is True
    assert check.outputs["mode"] == mode
    # A pull request's stages write to the job's throwaway store, whatever the mode.
    assert check.outputs["tracking_uri"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert check.outputs.get("registry_uri") == (
        env["MLFLOW_TRACKING_URI"] if mode == "server" else None
    )


def test_monitoring_needs_a_prediction_log_the_runner_can_read(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}
    local = {"data": "data/x.csv", "prediction_log": "logs/predictions", "labels": "logs/labels"}
    check = config_check.check("monitor", Environment.read(env), local, tmp_path)
    assert not check.configured
    assert [name for _, name, _ in check.missing] == ["monitoring.prediction_log"]
    (tmp_path / "logs" / "predictions").mkdir(parents=True)  # a self-hosted runner that sees it
    assert config_check.check("monitor", Environment.read(env), local, tmp_path).configured
    in_s3 = {**local, "prediction_log": "s3://bucket/prediction-log"}
    check = config_check.check("monitor", Environment.read(env), in_s3, tmp_path)
    assert [name for _, name, _ in check.missing] == ["AWS_ROLE_ARN"]


DRIFTED = {
    "judged": True,
    "drifted": True,
    "consecutive_windows": 2,
    "retrain": True,
    "rows": 120,
    "features": {"a": {}, "b": {}},
    "drifted_features": ["a"],
    "share_drifted": 0.5,
    "threshold": 0.5,
    "html": "reports/drift.html",
}
STEADY = {
    "judged_windows": 3,
    "decayed": False,
    "consecutive_windows": 0,
    "retrain": False,
    "metric": "f1",
    "latest_judged": {"metric": 0.93, "labelled_rows": 80, "start": "s", "end": "e"},
    "champion": {"version": 2, "metric": 0.94},
    "tolerance": 0.05,
    "windows": [],
}
UNJUDGED_DRIFT = {"judged": False, "drifted": False, "reason": "too few rows to judge"}
UNJUDGED_PERFORMANCE = {
    "judged_windows": 0,
    "latest_judged": None,
    "decayed": False,
    "windows": [{"reason": "too few labelled rows to judge (3 < 50)"}],
}


def monitoring_issue(drift: dict, performance: dict, details: str, run_url=None):
    verdict = monitoring.verdict(drift, performance)
    return verdict, issue.body(verdict, details, run_url)


def test_persistent_drift_alerts_and_retrains():
    verdict, issue_body = monitoring_issue(DRIFTED, STEADY, "DETAILS", "https://run")
    assert (verdict.alert, verdict.retrain) == (True, True)
    marker, heading, *rest = issue_body.splitlines()
    assert marker == issue.MARKER
    assert heading == "## Model monitoring: data drift"
    assert "- data drift in the latest window, 2 window(s) in a row" in rest
    assert (
        "DETAILS" in rest
        and "- the run, with the HTML drift report as an artifact: https://run" in rest
    )


def test_a_first_window_of_decay_alerts_without_retraining():
    decayed = {**STEADY, "decayed": True, "consecutive_windows": 1}
    verdict, issue_body = monitoring_issue(
        {**DRIFTED, "drifted": False, "retrain": False}, decayed, ""
    )
    assert (verdict.alert, verdict.retrain) == (True, False)
    assert issue_body.splitlines()[1] == "## Model monitoring: decay"


def test_healthy_or_unjudged_windows_raise_no_alert():
    verdict, issue_body = monitoring_issue(UNJUDGED_DRIFT, UNJUDGED_PERFORMANCE, "")
    assert (verdict.alert, verdict.retrain) == (False, False)
    assert "## Model monitoring: healthy" in issue_body
    assert "- not judged (too little data): drift, performance" in issue_body


def test_the_verdict_says_each_finding_in_one_line():
    verdict = monitoring.verdict(DRIFTED, {**STEADY, "decayed": True, "consecutive_windows": 1})
    assert verdict.drift.line == (
        "data drift: 1 of 2 features drifted (share 0.50, threshold 0.5) in 120 rows: a; "
        "drifted in the last 2 judged windows: retrain; see reports/drift.html"
    )
    assert verdict.decay.line == (
        "performance decayed: f1 0.9300 on 80 labelled rows (s to e), champion v2 0.9400, "
        "tolerance 0.05"
    )
    assert verdict.headline == "Model monitoring: data drift and decay"
    unjudged = monitoring.verdict(UNJUDGED_DRIFT, UNJUDGED_PERFORMANCE)
    assert unjudged.drift.line == "drift not judged: too few rows to judge"
    assert unjudged.decay.line == (
        "performance not judged in 1 windows: too few labelled rows to judge (3 < 50)"
    )
    assert (unjudged.drift.problem, unjudged.decay.problem) == (None, None)


def test_baseline_params_keep_the_base_model_but_use_this_data():
    base = {"data": {"source": "data/old.csv", "target": "y"}, "registry": {"model_name": "old"}}
    params = comment.baseline_params(base, "/work/data/new.csv", "new_name")
    assert params["data"] == {"source": "/work/data/new.csv", "target": "y"}
    assert params["registry"]["model_name"] == "new_name"
    assert base["data"]["source"] == "data/old.csv"  # the input is not changed


def test_champion_source_reports_a_failed_baseline():
    source, notes = comment.champion_source(
        Environment.read(
            {"BASE_REF": "main", "BASE_SHA": "a" * 40, "BASELINE_OUTCOME": "failure"}
        ).github
    )
    assert source.startswith("trained from `main` at `aaaaaaaaaaaa`")
    assert "could not be trained" in notes[0]
    assert comment.champion_source(Environment.read({"CHAMPION_MODE": "server"}).github) == (
        "the registry's champion",
        [],
    )


# The CLI commands, on reports written by hand (no training needed)


def write_reports(project, **found: dict) -> None:
    folder = project / "reports"
    folder.mkdir(exist_ok=True)
    for stage, report in found.items():
        (folder / f"{stage}.json").write_text(json.dumps(report))


def test_comment_command_writes_the_body_and_the_same_job_summary(project, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_reports(project, evaluate=evaluate_report(), validate=validate_report())
    assert cli.main(["comment", "--output", "out/comment.md"]) == cli.EXIT_OK
    body = (project / "out" / "comment.md").read_text()
    assert body.startswith(comment.MARKER + "\n")
    assert "| **f1** (gate) | 0.9500 | 0.9300 | +0.0200 | better |" in body
    assert "### Data validation: passed" in body
    assert summary.read_text().strip() == body.removeprefix(comment.MARKER + "\n").strip()


def test_a_lower_is_better_metric_has_the_same_sign_in_evaluate_md_and_the_comment(project):
    """The task's lower-is-better metric (log_loss, rmse) went up, which is worse:
    `reports/evaluate.md` and the pull request comment say so alike."""
    directions = load_settings(project / "params.yaml").greater_is_better
    metric = next(name for name, greater in directions.items() if not greater)
    report = evaluate_report(candidate_metrics={metric: 0.12}, champion_metrics={metric: 0.10})
    reports.write_report(
        project / "reports", "evaluate", report, evaluation.markdown(report, directions)
    )
    assert cli.main(["comment"]) == cli.EXIT_OK

    def metric_row(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(f"| {metric} |"))

    in_file = metric_row((project / "reports" / "evaluate.md").read_text())
    in_comment = metric_row((project / "reports" / "comment.md").read_text())
    assert in_file == in_comment == f"| {metric} | 0.1200 | 0.1000 | +0.0200 | worse |"


def test_comment_command_works_without_any_report(project):
    assert cli.main(["comment"]) == cli.EXIT_OK
    assert "_No evaluate report" in (project / "reports" / "comment.md").read_text()


def test_check_config_ends_green_and_sets_outputs(project, tmp_path, monkeypatch):
    output, summary = tmp_path / "output", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert cli.main(["check-config", "--for", "cd"]) == cli.EXIT_OK
    assert output.read_text() == "configured=false\n"
    assert "MLFLOW_TRACKING_URI" in summary.read_text()


def test_summary_command_refuses_unknown_sections(project, capsys):
    assert cli.main(["summary", "--sections", "evaluate,nonsense"]) == cli.EXIT_ERROR
    assert "nonsense" in capsys.readouterr().err


# The load test and waiting for a version, against a tiny stand-in server


class FakeModelServer(BaseHTTPRequestHandler):
    version = 7
    status = 200

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"prediction": 1, "model_version": self.version}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeModelServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    FakeModelServer.status = 200


def test_load_test_is_bounded_and_reports_latency(fake_server):
    check = loadtest.load_test(fake_server, [{"x": 1.0}], seconds=5, max_requests=50)
    assert check["passed"] is True
    assert check["stats"]["requests"] == 50  # stopped by max_requests, well before 5 s
    assert check["stats"]["p95_ms"] is not None
    assert "uncorrected" in check["detail"]


def test_load_test_fails_on_errors(fake_server):
    FakeModelServer.status = 503
    check = loadtest.load_test(fake_server, [{"x": 1.0}], seconds=5, max_requests=10)
    assert check["passed"] is False
    assert "first error: HTTP 503" in check["detail"]


def test_wait_for_version(fake_server):
    assert loadtest.wait_for_version(fake_server, 7, timeout=5) < 5
    with pytest.raises(NotServing, match="serves v7"):
        loadtest.wait_for_version(fake_server, 8, timeout=0.2, interval=0.1)


def test_a_warning_is_an_annotation_only_inside_github_actions():
    inside, outside = GitHubContext(actions=True), GitHubContext()
    assert actions.warning("Base image", "pin it", inside) == "::warning title=Base image::pin it"
    assert actions.warning("Base image", "pin it", outside) == "warning: pin it"
