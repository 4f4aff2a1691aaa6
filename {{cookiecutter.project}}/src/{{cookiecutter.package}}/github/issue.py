"""The monitoring issue: one issue that follows the verdicts of `drift` and `performance`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .actions import COMMENT_LIMIT, truncate

if TYPE_CHECKING:  # monitoring imports pandas; the issue only reads the verdict
    from ..monitoring.verdict import Verdict

# The first line of the issue: the workflow finds the open issue by it and edits it in place.
MARKER = f"<!-- {__package__.split('.')[0]}:model-monitoring -->"


def body(verdict: Verdict, details: str, run_url: str | None = None) -> str:
    """The marker, a `## <headline>` line, the story of the verdict, then `details`: the Markdown of
    both reports (drift's and performance's renderers), cut to GitHub's limit."""
    lines = []
    for name, finding in (("data drift", verdict.drift), ("decay", verdict.decay)):
        if finding.flagged:
            lines.append(f"- {name} in the latest window, {finding.streak} window(s) in a row")
    if verdict.retrain:
        lines.append("- it persisted: retraining was dispatched (cd.yml)")
    if not verdict.alert:
        lines.append("- no data drift and no decay")
    unjudged = [
        name
        for name, finding in (("drift", verdict.drift), ("performance", verdict.decay))
        if not finding.judged
    ]
    if unjudged:
        lines.append(f"- not judged (too little data): {', '.join(unjudged)}")
    if run_url:
        lines.append(f"- the run, with the HTML drift report as an artifact: {run_url}")
    text = "\n".join(
        [
            MARKER,
            f"## {verdict.headline}",
            "",
            *lines,
            "",
            "Runbook: `docs/monitoring.md`.",
            "",
            details,
        ]
    )
    return truncate(text, COMMENT_LIMIT, "(cut: the run's reports have the rest)")
