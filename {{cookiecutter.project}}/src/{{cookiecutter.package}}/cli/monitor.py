"""Watching the served model: data drift, performance on labelled predictions, and the verdict the
monitor workflow acts on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import reports
from ..errors import CheckFailed, SettingsError
from ..settings import Settings
from .command import Command, argument, open_registry, say

if TYPE_CHECKING:
    from ..monitoring.verdict import Finding

SINCE = argument(
    "--since", help="ISO 8601 time, UTC unless it says otherwise (default: see --until)"
)
UNTIL = argument("--until", help="ISO 8601 time (default: now)")


def judge_drift(settings: Settings, since: str | None, until: str | None) -> tuple[dict, str]:
    """Run `drift` and write its report; returns the result and its Markdown."""
    from ..monitoring import drift, windows

    window = windows.time_range(since, until, settings.params.monitoring.window_hours)
    result = drift.judge(settings, window, settings.reports_dir / "drift.html")
    markdown = drift.markdown(result)
    reports.write_report(settings.reports_dir, "drift", result, markdown)
    return result, markdown


def judge_performance(
    settings: Settings, since: str | None, until: str | None, window_hours: float | None
) -> tuple[dict, str]:
    """Run `performance` and write its report; returns the result and its Markdown."""
    from ..monitoring import performance, windows

    params = settings.params.monitoring
    hours = params.window_hours if window_hours is None else window_hours
    if hours <= 0:
        raise SettingsError(f"--window-hours: {hours} is not a positive number of hours")
    default_hours = hours * params.retrain_after_windows  # enough windows for the retraining streak
    within = windows.time_range(since, until, default_hours)
    result = performance.judge(settings, open_registry(settings), within, hours)
    markdown = performance.markdown(result)
    reports.write_report(settings.reports_dir, "performance", result, markdown)
    return result, markdown


def drift(settings: Settings, since: str | None, until: str | None) -> dict:
    """Logged features of a window (default: the last monitoring.window_hours) against training."""
    from ..monitoring import verdict

    result, _ = judge_drift(settings, since, until)
    return _raise_if_flagged(verdict.drift_finding(result), result)


def performance(
    settings: Settings, since: str | None, until: str | None, window_hours: float | None
) -> dict:
    """The primary metric on labelled predictions per window, against the champion's holdout metric."""
    from ..monitoring import verdict

    result, _ = judge_performance(settings, since, until, window_hours)
    return _raise_if_flagged(verdict.decay_finding(result), result)


def ab_test(
    settings: Settings, since: str | None, until: str | None, versions: list[int] | None
) -> dict:
    """Two versions' primary metric on the labelled requests each answered, and which is better.

    Exits 0 whatever the decision, "too few labels" included (it is information); 2 on bad input.
    """
    from ..github import actions
    from ..monitoring import ab_test, windows

    within = windows.time_range(since, until, settings.params.monitoring.window_hours)
    result = ab_test.judge(settings, open_registry(settings), within, versions)
    markdown = ab_test.markdown(result)
    reports.write_report(settings.reports_dir, ab_test.REPORT, result, markdown)
    actions.append_summary(markdown, settings.env.github)
    a, b = result["a"], result["b"]
    say(
        f"A/B test of v{a['version']} (A) and v{b['version']} (B) on {result['metric']}: "
        f"{result['decision']} ({result['reason']})"
    )
    return result


def _raise_if_flagged(finding: Finding, result: dict) -> dict:
    if finding.flagged:
        raise CheckFailed(finding.line)
    say(finding.line)
    return result


def monitor(settings: Settings, issue_body: str | None) -> dict:
    """`drift` and `performance` over the latest windows, then what monitor.yml does about them.

    Exits 0 whatever the verdicts (bad input still exits 2): `alert` and `retrain` become step
    outputs, and the story goes to the job summary and to --issue-body, the monitoring issue's text.
    """
    from ..github import actions, issue
    from ..monitoring import verdict

    drifted, drift_markdown = judge_drift(settings, None, None)
    _say_unless_flagged(verdict.drift_finding(drifted))
    decayed, performance_markdown = judge_performance(settings, None, None, None)
    _say_unless_flagged(verdict.decay_finding(decayed))
    decided = verdict.verdict(drifted, decayed)
    github = settings.env.github
    body = issue.body(decided, f"{drift_markdown}\n\n{performance_markdown}", github.run_url)
    if issue_body:
        Path(issue_body).parent.mkdir(parents=True, exist_ok=True)
        Path(issue_body).write_text(body)
    flags = {"alert": decided.alert, "retrain": decided.retrain}
    actions.write_outputs({name: str(flag).lower() for name, flag in flags.items()}, github)
    actions.append_summary(body, github)
    result = {**flags, "drift": decided.drift.problem, "decay": decided.decay.problem}
    reports.write_report(settings.reports_dir, "monitor", result, body)
    say(decided.headline + ("; retrain" if decided.retrain else ""))
    return result


def _say_unless_flagged(finding: Finding) -> None:
    """What a check found when it is not a problem: the problems go to the verdict."""
    if not finding.flagged:
        say(finding.line)


COMMANDS = (
    Command(
        "ab-test",
        "two versions' primary metric on the labelled requests each answered, with a decision",
        ab_test,
        (
            SINCE,
            UNTIL,
            argument(
                "--versions",
                nargs=2,
                type=int,
                metavar=("A", "B"),
                help="default: the two versions that answered in the window, A the older",
            ),
        ),
        more_help="; --since defaults to monitoring.window_hours before --until",
    ),
    Command(
        "drift",
        "data drift of the logged features of a window against the training data",
        drift,
        (SINCE, UNTIL),
        more_help="; --since defaults to monitoring.window_hours before --until",
    ),
    Command(
        "monitor",
        "drift and performance, then the alert and retraining verdicts",
        monitor,
        (argument("--issue-body", help="write the monitoring issue's text here"),),
    ),
    Command(
        "performance",
        "the primary metric on labelled predictions per window, against the champion's",
        performance,
        (
            SINCE,
            UNTIL,
            argument(
                "--window-hours", type=float, help="default: monitoring.window_hours in params"
            ),
        ),
        more_help="; --since defaults to monitoring.retrain_after_windows windows before --until",
    ),
)
