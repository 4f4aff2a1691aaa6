"""The verdict: what the drift and performance reports say, and what the monitor workflow does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One check's report in a line: judged at all, flagged (drifted or decayed), asking to retrain."""

    judged: bool
    flagged: bool
    streak: int  # flagged windows in a row, the latest last
    retrain: bool  # the streak reached monitoring.retrain_after_windows
    line: str  # the problem when flagged, else what was found or why nothing could be judged

    @property
    def problem(self) -> str | None:
        return self.line if self.flagged else None


@dataclass(frozen=True)
class Verdict:
    """The monitor run's decisions: open the issue (`alert`), dispatch cd.yml (`retrain`)."""

    drift: Finding
    decay: Finding
    alert: bool
    retrain: bool
    headline: str  # `Model monitoring: data drift and decay`, or `...: healthy`


def drift_finding(result: Mapping[str, Any]) -> Finding:
    """The `drift` report in a line; the problem names the HTML report of the window."""
    if not result["judged"]:
        return Finding(False, False, 0, False, f"drift not judged: {result['reason']}")
    drifted = result["drifted_features"]
    summary = (
        f"{len(drifted)} of {len(result['features'])} features drifted "
        f"(share {result['share_drifted']:.2f}, threshold {result['threshold']:g}) "
        f"in {result['rows']} rows" + (f": {', '.join(drifted)}" if drifted else "")
    )
    problem = "data drift: {}; see " + str(result["html"])
    return _finding(result, "drifted", summary, problem, "no data drift: {}")


def decay_finding(result: Mapping[str, Any]) -> Finding:
    """The `performance` report in a line, about its latest judged window."""
    latest, windows = result["latest_judged"], result["windows"]
    if latest is None:
        reasons = sorted({w["reason"] for w in windows})
        line = f"performance not judged in {len(windows)} windows: {'; '.join(reasons)}"
        return Finding(False, False, 0, False, line)
    summary = (
        f"{result['metric']} {latest['metric']:.4f} on {latest['labelled_rows']} labelled rows "
        f"({latest['start']} to {latest['end']}), champion v{result['champion']['version']} "
        f"{result['champion']['metric']:.4f}, tolerance {result['tolerance']}"
    )
    return _finding(result, "decayed", summary, "performance decayed: {}", "performance holds: {}")


def _finding(
    result: Mapping[str, Any], flag: str, summary: str, problem: str, fine: str
) -> Finding:
    """A judged report's finding; `problem`/`fine` hold `{}` for the summary."""
    if result["retrain"]:
        summary += f"; {flag} in the last {result['consecutive_windows']} judged windows: retrain"
    flagged = bool(result[flag])
    return Finding(
        judged=True,
        flagged=flagged,
        streak=result["consecutive_windows"],
        retrain=bool(result["retrain"]),
        line=(problem if flagged else fine).format(summary),
    )


def verdict(drift: Mapping[str, Any], performance: Mapping[str, Any]) -> Verdict:
    """Alert when the latest window drifted or decayed; retrain when a flagged one persisted."""
    findings = {"data drift": drift_finding(drift), "decay": decay_finding(performance)}
    found = [name for name, finding in findings.items() if finding.flagged]
    return Verdict(
        drift=findings["data drift"],
        decay=findings["decay"],
        alert=bool(found),
        retrain=any(finding.flagged and finding.retrain for finding in findings.values()),
        headline="Model monitoring: " + (" and ".join(found) if found else "healthy"),
    )
