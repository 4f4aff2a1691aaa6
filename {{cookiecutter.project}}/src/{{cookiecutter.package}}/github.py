"""GitHub Actions glue: the pull request comment, job summaries, step outputs, configuration checks.

The renderers are pure functions from the JSON reports the stages write to Markdown; the CLI commands
(`comment`, `summary`, `outputs`, `check-config`, `baseline-params`) read the reports and the environment
and write what GitHub reads: `$GITHUB_STEP_SUMMARY`, `$GITHUB_OUTPUT`, a comment body file. The workflows
hold no logic of their own, so everything they decide is here, tested, and runs on a laptop too.
Nothing here imports the ML stack: these commands take a fraction of a second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rollout

# The first line of the comment: the workflow finds its own comment by it and edits it in place.
MARKER = f"<!-- {__package__}:model-report -->"
COMMENT_LIMIT = 65_536  # GitHub refuses longer comment bodies (counted in UTF-16 code units)
SUMMARY_LIMIT = 1_000_000  # a step summary may hold 1 MiB; stay below it
REPORT_STAGES = (
    "validate",
    "train",
    "evaluate",
    "smoke",
    "promote",
    "rollback",
    "pipeline",
    "batch",
    "rollout",
)
MAX_FAILURE_ROWS = 50  # validation failures listed in full; the rest are counted
CELL_LIMIT = 200
DOCS = "docs/setup.md"


# Small helpers


def signed(value: float | None, digits: int = 4) -> str:
    """`+0.0123`, `-0.0040`, `0.0000` (no sign when it rounds to zero), `n/a` for None."""
    if value is None:
        return "n/a"
    rounded = round(value, digits)
    if rounded == 0:
        return f"{0:.{digits}f}"
    return f"{rounded:+.{digits}f}"


def number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cell(value: Any, limit: int = CELL_LIMIT) -> str:
    """Text safe inside a Markdown table cell of a comment anyone can read.

    Data values come from the pull request (a CSV can hold anything): pipes would break the table, and
    HTML or newlines would change the comment's layout, so they are escaped or flattened, and long values
    are cut.
    """
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]], align: str = "") -> str:
    """A Markdown table; `align` holds one character per column, `r` for right-aligned."""
    marks = ["---:" if kind == "r" else "---" for kind in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(str(item) for item in row) + " |" for row in rows]
    return "\n".join(lines)


def utf16_length(text: str) -> int:
    """Length as GitHub (JavaScript) counts it: characters outside the BMP count twice."""
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int, note: str) -> str:
    """`text` if it fits in `limit`, else its first whole lines, then `note`, together within `limit`."""
    if utf16_length(text) <= limit:
        return text
    budget = limit - utf16_length(note) - 2
    kept: list[str] = []
    used = 0
    for line in text.splitlines():
        size = utf16_length(line) + 1
        if used + size > budget:
            break
        kept.append(line)
        used += size
    if not kept:  # a single enormous line: cut it by characters
        kept = [text[: max(budget, 0) // 2]]
    return "\n".join(kept) + "\n\n" + note


# Sections, one per report. Each takes the report (or None when it is missing) and returns Markdown.


def missing(stage: str, run_url: str | None) -> str:
    where = f"[the run's log]({run_url})" if run_url else "the run's log"
    return f"_No {stage} report: the `{stage}` step did not run or failed before writing it; see {where}._"


def metric_rows(
    evaluate: Mapping[str, Any], greater_is_better: Mapping[str, bool]
) -> list[list[str]]:
    """metric, candidate, champion, delta (candidate - champion) and whether that is better or worse."""
    primary = evaluate.get("primary_metric")
    champion = evaluate.get("champion_metrics") or {}
    rows = []
    for name, value in (evaluate.get("candidate_metrics") or {}).items():
        label = f"**{name}** (gate)" if name == primary else name
        if name not in champion:
            rows.append([label, number(value), "n/a", "n/a", ""])
            continue
        delta = value - champion[name]
        if round(delta, 4) == 0:
            change = "same"
        else:
            better = (delta > 0) == greater_is_better.get(name, True)
            change = "better" if better else "worse"
        rows.append([label, number(value), number(champion[name]), signed(delta), change])
    return rows


def verdict(evaluate: Mapping[str, Any]) -> str:
    return "PROMOTE" if evaluate.get("decision") == "promote" else "REJECT"


def evaluation_section(
    evaluate: Mapping[str, Any] | None,
    greater_is_better: Mapping[str, bool],
    run_url: str | None = None,
    champion_source: str = "",
) -> str:
    if evaluate is None:
        return "### Model\n\n" + missing("evaluate", run_url)
    candidate, champion = evaluate.get("candidate_version"), evaluate.get("champion_version")
    against = f"champion v{champion}" if champion is not None else "no champion (first model)"
    lines = [
        f"### Gate verdict: **{verdict(evaluate)}** candidate v{candidate}",
        "",
        f"Candidate v{candidate} against {against}"
        + (f" ({champion_source})" if champion_source and champion is not None else "")
        + f", on the same {evaluate.get('holdout_rows', '?')} holdout rows. "
        "Delta is candidate minus champion; the last column says whether that is better.",
        "",
        table(
            ["metric", "candidate", "champion", "delta", "change"],
            metric_rows(evaluate, greater_is_better),
            "lrrrl",
        ),
        "",
        "**Why:**",
        *[
            f"- {cell(reason, 500)}"
            for reason in evaluate.get("reasons") or ["(no reason recorded)"]
        ],
    ]
    return "\n".join(lines)


def validation_section(validate: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if validate is None:
        return "### Data validation\n\n" + missing("validate", run_url)
    evaluated, rows = validate.get("evaluated", "?"), validate.get("rows", "?")
    if validate.get("success"):
        return f"### Data validation: passed\n\nAll {evaluated} expectations hold on {rows} rows."
    failures = validate.get("failures") or []
    shown = failures[:MAX_FAILURE_ROWS]
    body = [
        "### Data validation: **FAILED**",
        "",
        f"{validate.get('failed', len(failures))} of {evaluated} expectations failed on {rows} rows.",
        "",
        table(
            ["expectation", "column", "unexpected rows", "expected", "observed"],
            [
                [
                    f"`{cell(item.get('expectation'))}`",
                    "(table)" if item.get("column") is None else f"`{cell(item['column'])}`",
                    "" if item.get("unexpected_count") is None else item["unexpected_count"],
                    cell(item.get("expected", "")),
                    cell(json.dumps(item.get("observed"), default=str)),
                ]
                for item in shown
            ],
            "llrll",
        ),
    ]
    if len(failures) > len(shown):
        body += [
            "",
            f"... and {len(failures) - len(shown)} more failures in `reports/validate.json`.",
        ]
    return "\n".join(body)


def smoke_section(smoke: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if smoke is None:
        return "### Smoke test\n\n" + missing("smoke", run_url)
    result = "passed" if smoke.get("passed") else "**FAILED**"
    rows = [
        [
            cell(item.get("name")),
            "pass" if item.get("passed") else "**FAIL**",
            cell(item.get("detail")),
        ]
        for item in smoke.get("checks") or []
    ]
    lines = [
        f"### Smoke test: {result}",
        "",
        f"Model v{smoke.get('version')} served at {cell(smoke.get('url'))}.",
        "",
        table(["check", "result", "detail"], rows),
    ]
    return "\n".join(lines)


def pipeline_section(pipeline: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if pipeline is None:
        return "### Pipeline\n\n" + missing("pipeline", run_url)
    lines = [
        f"### Pipeline: {pipeline.get('decision', '?')} v{pipeline.get('model_version')}",
        "",
        f"- deployed: {'yes' if pipeline.get('deployed') else 'no'}",
        f"- champion now: {_version(pipeline.get('champion'))}",
    ]
    if pipeline.get("rolled_back"):
        lines.append(f"- **rolled back** after: {cell(pipeline.get('failure'), 500)}")
    return "\n".join(lines)


def promote_section(promote: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if promote is None:
        return "### Promotion\n\n" + missing("promote", run_url)
    return (
        f"### Promotion: champion is now v{promote.get('champion')}\n\n"
        f"Previous champion: {_version(promote.get('previous'))}."
    )


def rollback_section(rollback: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if rollback is None:
        return "### Rollback\n\n" + missing("rollback", run_url)
    if rollback.get("skipped"):
        return f"### Rollback: nothing to do\n\n{cell(rollback.get('why'), 500)}"
    return (
        f"### Rollback: champion is now {_version(rollback.get('champion'))}\n\n"
        f"Rolled back from v{rollback.get('rolled_back_from')}."
    )


def rollout_section(report: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if report is None:
        return "### Rollout\n\n" + missing("rollout", run_url)
    return rollout.markdown(report)


def batch_section(batch: Mapping[str, Any] | None, run_url: str | None = None) -> str:
    if batch is None:
        return "### Batch scoring\n\n" + missing("batch", run_url)
    return (
        f"### Batch scoring: {batch.get('rows')} rows with v{batch.get('model_version')}\n\n"
        f"- input: `{cell(batch.get('input'))}`\n- output: `{cell(batch.get('output'))}`"
    )


def plots_section(evaluate: Mapping[str, Any] | None, artifact_url: str | None) -> str:
    names = [Path(path).stem.replace("_", " ") for path in (evaluate or {}).get("plots") or []]
    if not names:
        return ""
    where = (
        f"[the `model-report` artifact]({artifact_url})"
        if artifact_url
        else "the `model-report` artifact of this run"
    )
    return f"### Plots\n\n{', '.join(names)} of the candidate on the holdout: in {where}."


def _version(version: Any) -> str:
    return "none" if version is None else f"v{version}"


SECTIONS = {
    "evaluate": evaluation_section,
    "validate": validation_section,
    "smoke": smoke_section,
    "promote": promote_section,
    "rollback": rollback_section,
    "pipeline": pipeline_section,
    "batch": batch_section,
    "rollout": rollout_section,
}


@dataclass
class Context:
    """What a report says about where it comes from; all optional."""

    title: str = "Model report"
    run_url: str | None = None
    artifact_url: str | None = None
    sha: str | None = None
    champion_source: str = ""
    notes: list[str] = field(default_factory=list)


def render(
    reports: Mapping[str, Mapping[str, Any] | None],
    greater_is_better: Mapping[str, bool],
    context: Context,
    sections: tuple[str, ...] = ("evaluate", "validate"),
) -> str:
    """The report in Markdown: a title, then one section per name in `sections`, then the plots.

    A missing report gives a clear line in its section instead of an error, so a failed step still
    leaves a useful comment.
    """
    header = f"## {context.title}"
    evaluate = reports.get("evaluate")
    if evaluate is not None and "evaluate" in sections:
        header += f": **{verdict(evaluate)}** v{evaluate.get('candidate_version')}"
    about = []
    if context.sha:
        about.append(f"commit `{context.sha[:12]}`")
    if context.run_url:
        about.append(f"[workflow run]({context.run_url})")
    parts = [header]
    if about:
        parts.append(" · ".join(about))
    parts += [f"> {note}" for note in context.notes]
    for name in sections:
        if name == "evaluate":
            parts.append(
                evaluation_section(
                    evaluate, greater_is_better, context.run_url, context.champion_source
                )
            )
        else:
            parts.append(SECTIONS[name](reports.get(name), context.run_url))
    plots = plots_section(evaluate, context.artifact_url) if "evaluate" in sections else ""
    if plots:
        parts.append(plots)
    return "\n\n".join(parts) + "\n"


def comment_body(report: str, run_url: str | None = None) -> str:
    """The pull request comment: the hidden marker, then the report, cut below GitHub's limit."""
    where = f"the [job summary]({run_url})" if run_url else "the job summary"
    note = f"_Truncated: this report is longer than a comment may be. The full text is in {where}._"
    return MARKER + "\n" + truncate(report, COMMENT_LIMIT - utf16_length(MARKER) - 1, note)


def summary_body(report: str) -> str:
    return truncate(report, SUMMARY_LIMIT, "_Truncated: the full reports are in `reports/`._")


# The environment GitHub gives a step


def run_url(env: Mapping[str, str]) -> str | None:
    parts = [env.get(key) for key in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if not all(parts):
        return None
    server, repository, run = parts
    return f"{server}/{repository}/actions/runs/{run}"


def load_reports(reports_dir: Path, stages: tuple[str, ...] = REPORT_STAGES) -> dict[str, Any]:
    """stage -> its JSON report, or None when the file is missing or unreadable."""
    found: dict[str, Any] = {}
    for stage in stages:
        try:
            found[stage] = json.loads((reports_dir / f"{stage}.json").read_text())
        except (OSError, ValueError):
            found[stage] = None
    return found


def _single_line(value: object) -> str:
    text = "" if value is None else str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a step output cannot hold a line break: {text!r}")
    return text


def write_outputs(values: Mapping[str, object], env: Mapping[str, str]) -> str:
    """Append `key=value` lines to $GITHUB_OUTPUT (None becomes empty); return the lines written."""
    lines = "".join(f"{key}={_single_line(value)}\n" for key, value in values.items())
    path = env.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(lines)
    return lines


def append_summary(markdown: str, env: Mapping[str, str]) -> bool:
    """Append to $GITHUB_STEP_SUMMARY; False when not in a GitHub Actions step."""
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as out:
        out.write(summary_body(markdown).rstrip() + "\n\n")
    return True


# Step outputs from reports


def outputs_from(stage: str, report: Mapping[str, Any]) -> dict[str, object]:
    """The values a later job or step needs from one report."""
    if stage == "evaluate":
        return {
            "decision": report["decision"],
            "candidate_version": report["candidate_version"],
            "champion_version": report.get("champion_version"),
        }
    if stage == "train":
        return {"model_version": report["model_version"]}
    if stage == "build":
        return {"bento": report["bento"], "model_version": report["model_version"]}
    if stage == "rollback":
        return {
            "champion": report.get("champion"),
            "skipped": str(bool(report.get("skipped"))).lower(),
        }
    if stage == "promote":
        return {"champion": report["champion"], "previous": report.get("previous")}
    raise ValueError(f"no outputs are defined for the {stage} report")


# Is this repository configured for what the workflow is about to do?

VARIABLES_PAGE = "Settings > Secrets and variables > Actions"


@dataclass
class ConfigCheck:
    purpose: str
    configured: bool
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, what to set)
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        if self.configured:
            lines = [f"### {self.purpose.upper()} configuration: ready"]
            lines += [f"- {note}" for note in self.notes]
            return "\n".join(lines)
        lines = [
            f"## {self.purpose.upper()} is not configured yet: nothing was changed",
            "",
            "This run ended without error on purpose. To turn it on, set the following under "
            f"**{VARIABLES_PAGE}** of this repository (step by step: `{DOCS}`), then run it again:",
            "",
            table(["kind", "name", "what to set"], [list(item) for item in self.missing]),
        ]
        lines += ["", *[f"- {note}" for note in self.notes]] if self.notes else []
        return "\n".join(lines)


S3_PREFIX = "s3://"


def _uses_s3(*locations: str | None) -> bool:
    return any(location and location.startswith(S3_PREFIX) for location in locations)


def check_config(
    purpose: str,
    env: Mapping[str, str],
    locations: Mapping[str, str],
    project_dir: Path,
) -> ConfigCheck:
    """What `purpose` (ci, cd, rollback, batch, monitor) needs from the repository's variables and
    secrets.

    `env` holds what the workflow passed from `vars` (MLFLOW_TRACKING_URI, AWS_ROLE_ARN, SKIP_IMAGE)
    and, for pull requests, PR_HEAD_REPO. `locations` are the locations of params.yaml (data, batch
    input and output, prediction log and labels) that decide whether AWS credentials are needed.
    CI needs nothing: with no tracking server (or for a pull request from a fork, which gets no
    secrets), the champion is a model trained from the base branch in the same job, in a local store.
    """
    uri = env.get("MLFLOW_TRACKING_URI", "").strip()
    role = env.get("AWS_ROLE_ARN", "").strip()
    check = ConfigCheck(purpose, configured=True)
    server_row = (
        "variable",
        "MLFLOW_TRACKING_URI",
        "URL of your MLflow tracking server, e.g. `https://mlflow.example.com`",
    )
    token_note = (
        "If the tracking server needs a token, add the secret `MLFLOW_TRACKING_TOKEN` "
        "(MLflow sends it as a bearer token)."
    )
    if purpose == "ci":
        head, repository = env.get("PR_HEAD_REPO", ""), env.get("GITHUB_REPOSITORY", "")
        fork = bool(head) and bool(repository) and head != repository
        if uri and not fork:
            check.outputs = {"mode": "server", "tracking_uri": uri}
            check.notes.append("champion: the registry's `champion` on the tracking server")
        else:
            local = f"sqlite:///{(project_dir / 'mlflow.db').resolve()}"
            check.outputs = {"mode": "baseline", "tracking_uri": local}
            why = (
                "a pull request from a fork gets no secrets"
                if uri and fork
                else "no MLFLOW_TRACKING_URI variable is set"
            )
            check.notes.append(
                f"champion: a model trained from the base branch in this job ({why})"
            )
        check.outputs["configured"] = "true"
        return check
    if not uri:
        check.configured = False
        check.missing.append(server_row)
        check.notes.append(token_note)
    needs_aws = {
        "cd": _uses_s3(locations.get("data")),
        "rollback": False,
        "batch": _uses_s3(locations.get("data"), locations.get("input"), locations.get("output")),
        "monitor": _uses_s3(
            locations.get("data"), locations.get("prediction_log"), locations.get("labels")
        ),
    }.get(purpose, False)
    log = locations.get("prediction_log") or ""
    if purpose == "monitor" and not (_uses_s3(log) or (project_dir / log).is_dir()):
        # The servers write the log; a runner sees it only in a bucket (or on a self-hosted runner).
        check.configured = False
        check.missing.append(
            (
                "params.yaml",
                "monitoring.prediction_log",
                f"an s3:// location the service writes to (now `{cell(log, 100)}`, not on this runner)",
            )
        )
    if needs_aws and not role:
        check.configured = False
        check.missing.append(
            (
                "variable",
                "AWS_ROLE_ARN",
                "ARN of the IAM role GitHub's OIDC provider may assume (trust and S3 policies: "
                f"`{DOCS}`)",
            )
        )
    if uri.startswith("sqlite:") and env.get("GITHUB_ACTIONS") == "true" and not env.get("ACT"):
        check.notes.append(
            "MLFLOW_TRACKING_URI is a sqlite file: it does not outlive the job on GitHub's "
            "runners, so every run starts from an empty registry. Use a tracking server."
        )
    if check.configured and env.get("SKIP_IMAGE") == "true" and purpose == "cd":
        check.notes.append(
            "SKIP_IMAGE is true: no container image is built or pushed; staging smoke-tests the bento."
        )
    check.outputs = {"configured": str(check.configured).lower()}
    return check


# Monitoring: one issue that follows the verdicts of `drift` and `performance`

MONITORING_MARKER = f"<!-- {__package__}:model-monitoring -->"


@dataclass
class MonitoringVerdict:
    """What the monitor workflow does with one run's drift and performance reports."""

    alert: bool  # open or update the issue (else close it if one is open)
    retrain: bool  # dispatch cd.yml
    issue_body: str  # the marker, a `## <title>` line, then the story


def _judged(report: Mapping[str, Any] | None) -> bool:
    return bool(report) and bool(report.get("judged", report.get("judged_windows")))


def monitoring_verdict(
    drift: Mapping[str, Any] | None,
    performance: Mapping[str, Any] | None,
    details: str,
    run_url: str | None = None,
) -> MonitoringVerdict:
    """The alert and retraining decisions from the two reports, and the issue that tells people.

    `details` is the Markdown of both reports (drift.md and performance.md), shown in the issue.
    """
    found, lines, retrain = [], [], False
    for name, report, flag in (("data drift", drift, "drifted"), ("decay", performance, "decayed")):
        if not report or not report.get(flag):
            continue
        found.append(name)
        streak = report.get("consecutive_windows", 1)
        lines.append(f"- {name} in the latest window, {streak} window(s) in a row")
        retrain = retrain or bool(report.get("retrain"))
    if retrain:
        lines.append("- it persisted: retraining was dispatched (cd.yml)")
    if not found:
        lines.append("- no data drift and no decay")
    unjudged = [
        name
        for name, report in (("drift", drift), ("performance", performance))
        if not _judged(report)
    ]
    if unjudged:
        lines.append(f"- not judged (too little data): {', '.join(unjudged)}")
    if run_url:
        lines.append(f"- the run, with the HTML drift report as an artifact: {run_url}")
    title = "Model monitoring: " + (" and ".join(found) if found else "healthy")
    body = "\n".join(
        [
            MONITORING_MARKER,
            f"## {title}",
            "",
            *lines,
            "",
            "Runbook: `docs/monitoring.md`.",
            "",
            details,
        ]
    )
    return MonitoringVerdict(
        alert=bool(found),
        retrain=retrain,
        issue_body=truncate(body, COMMENT_LIMIT, "(cut: the run's reports have the rest)"),
    )


# The base branch's model, for pull requests without a tracking server


def baseline_params(base: dict[str, Any], head_source: str, model_name: str) -> dict[str, Any]:
    """The base branch's params, trained on the head's data and registered under the head's name.

    Same data: the baseline differs from the candidate only by what the pull request changed in code
    and params. Same registered model: the head's `evaluate` finds it as the champion.
    """
    params = json.loads(json.dumps(base))  # a deep copy of plain YAML data
    if not isinstance(params.get("data"), dict) or not isinstance(params.get("registry"), dict):
        raise ValueError("the base branch's params.yaml has no data or registry section")
    params["data"]["source"] = head_source
    params["registry"]["model_name"] = model_name
    return params


def champion_source(env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Where the champion of a pull request's evaluation came from, and notes for the reader.

    Reads what ci.yml passes: CHAMPION_MODE (`server` or `baseline`, from `check-config --for ci`),
    BASE_REF and BASE_SHA (the pull request's base), BASELINE_OUTCOME (the baseline step's outcome).
    """
    if env.get("CHAMPION_MODE") == "server":
        return "the registry's champion", []
    base = f"`{cell(env['BASE_REF'], 100)}`" if env.get("BASE_REF") else "the base branch"
    sha = cell((env.get("BASE_SHA") or "")[:12])
    source = f"trained from {base}" + (f" at `{sha}`" if sha else "") + " in this job, on this data"
    outcome = env.get("BASELINE_OUTCOME", "")
    if outcome and outcome != "success":
        return source, [
            f"The base branch's model could not be trained (step outcome: {cell(outcome)}), so the "
            "candidate is compared with no champion; see the job log."
        ]
    return source, []
