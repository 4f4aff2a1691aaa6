"""Watch the served model: data drift of logged features, and the primary metric once labels arrive.

The service logs a sample of what it served under `monitoring.prediction_log`, one folder per day
(`date=YYYY-MM-DD/<uuid>.parquet`) with the columns of `prediction_log.LOG_COLUMNS` plus one float64
column per training feature; `prediction_log.read_log` reads them back. `drift` compares a window of
logged features with the training data (Evidently); `performance` joins logged predictions with
labels that arrive later (files with request_id, row, label) and computes the gate's primary metric
per window against the champion's holdout metric. Both count how many of the latest windows in a row
were flagged, so a scheduled workflow can decide on retraining from their reports alone. Evidently
takes seconds to import: only `data_drift` does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from . import data, storage
from .errors import DataError, SettingsError, StateError
from .prediction_log import (
    LOGGED_AT,
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY,
    REQUEST_ID,
    ROW,
    read_log,
)
from .reports import markdown_table, number
from .settings import Settings

LABEL = "label"
LABEL_SUFFIXES = (".csv", ".parquet")
PROBABILITY_METRICS = frozenset({"roc_auc", "log_loss"})


# Time and windows


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime; a time without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SettingsError(
            f"{what}: {text!r} is not an ISO 8601 time (e.g. 2026-01-31T06:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def time_range(
    since: str | None, until: str | None, default_hours: float, now: datetime | None = None
) -> Window:
    """[since, until) from the command line; until defaults to now, since to `default_hours` before."""
    end = parse_time(until, "--until") if until else (now or datetime.now(UTC))
    start = parse_time(since, "--since") if since else end - timedelta(hours=default_hours)
    if start >= end:
        raise SettingsError(f"--since {start.isoformat()} is not before --until {end.isoformat()}")
    return Window(start, end)


def windows(within: Window, hours: float) -> list[Window]:
    """Consecutive windows of `hours` ending at `within.end`, oldest first; the first may be shorter."""
    step, found, end = timedelta(hours=hours), [], within.end
    while end > within.start:
        found.append(Window(max(end - step, within.start), end))
        end -= step
    return found[::-1]


def rows_in(log: pd.DataFrame, window: Window) -> pd.DataFrame:
    times = log[LOGGED_AT]
    return log[(times >= pd.Timestamp(window.start)) & (times < pd.Timestamp(window.end))]


def consecutive_latest(flags: list[bool | None]) -> int:
    """How many of the latest judged windows in a row were flagged; unjudged windows (None) are skipped,
    since labels arrive late and a quiet hour says nothing either way."""
    count = 0
    for flag in reversed(flags):
        if flag is None:
            continue
        if not flag:
            break
        count += 1
    return count


# Reading the labels (local folders or s3:// prefixes)


def _labels_file(location: str, content: bytes) -> pd.DataFrame:
    if PurePosixPath(location).suffix.lower() == ".csv":
        return pd.read_csv(io.BytesIO(content), dtype={REQUEST_ID: str})  # "0042" stays as it is
    try:
        return pd.read_parquet(io.BytesIO(content))
    except Exception as error:
        raise DataError(f"{location}: not a readable Parquet file: {error}") from error


def read_labels(location: str) -> pd.DataFrame:
    """Every labels file (CSV or Parquet) under a folder or s3:// prefix: request_id, row, label.

    `row` may be missing (single-row requests): it is 0. When a (request_id, row) is labelled twice,
    the file that sorts last wins.
    """
    storage.require_folder(location, "labels")
    files = [path for path in storage.files(location) if path.lower().endswith(LABEL_SUFFIXES)]
    frames = []
    for path, content in storage.read_many(files):
        frame = _labels_file(path, content)
        missing = [name for name in (REQUEST_ID, LABEL) if name not in frame.columns]
        if missing:
            raise DataError(f"{path}: labels file without columns {missing}")
        if ROW not in frame.columns:
            frame[ROW] = 0
        frames.append(frame[[REQUEST_ID, ROW, LABEL]])
    if not frames:
        return pd.DataFrame(
            {REQUEST_ID: pd.Series(dtype=object), ROW: pd.Series(dtype="int64"), LABEL: []}
        )
    labels = pd.concat(frames, ignore_index=True)
    labels[REQUEST_ID] = labels[REQUEST_ID].astype(str)
    labels[ROW] = labels[ROW].fillna(0).astype("int64")
    return labels.drop_duplicates([REQUEST_ID, ROW], keep="last")


# Data drift


def categorical_features(reference: pd.DataFrame) -> list[str]:
    """Features with few distinct values in training, as the feature profile counts them."""
    return [
        str(name)
        for name in reference.columns
        if reference[name].nunique(dropna=True) <= data.PROFILE_MAX_CATEGORIES
    ]


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    drift_share: float,
    html: Path | None = None,
) -> dict:
    """Evidently's data drift of `current` against `reference` (same feature columns).

    Evidently picks the test per column: below 1,000 reference rows Kolmogorov-Smirnov for numeric
    columns and chi-square (Z-test for two values) for categorical ones, above it Wasserstein and
    Jensen-Shannon distances. Scores are p-values or distances, so the verdict is read from
    Evidently's own test of each column, never compared here.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    features = [str(name) for name in reference.columns]
    categorical = categorical_features(reference)
    definition = DataDefinition(
        numerical_columns=[name for name in features if name not in categorical],
        categorical_columns=categorical,
    )

    def dataset(frame: pd.DataFrame):
        values = frame[features].astype("float64").reset_index(drop=True)  # the log's dtype
        return Dataset.from_pandas(values, data_definition=definition)

    report = Report(
        [DataDriftPreset(columns=features, drift_share=drift_share)], include_tests=True
    )
    snapshot = report.run(dataset(current), dataset(reference))  # current first
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html))
    return drift_summary(snapshot.dict(), drift_share)


def drift_summary(snapshot: dict, drift_share: float) -> dict:
    """Per-feature score, method, threshold and verdict from an Evidently snapshot's dict."""
    verdicts = {test["metric_config"]["metric_id"]: test["status"] for test in snapshot["tests"]}
    per_feature, counted = {}, None
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            status = verdicts.get(metric["id"])
            per_feature[config["column"]] = {
                "score": float(metric["value"]),
                "method": config["method"],
                "threshold": config["threshold"],
                "drifted": status == "FAIL",
            }
        elif config["type"].endswith(":DriftedColumnsCount"):
            counted = metric["value"]
    drifted = sorted(name for name, result in per_feature.items() if result["drifted"])
    share = len(drifted) / len(per_feature) if per_feature else 0.0
    if counted is not None and round(counted["share"], 9) != round(share, 9):
        raise RuntimeError(f"Evidently counted {counted} drifted columns, its tests {drifted}")
    return {
        "features": per_feature,
        "drifted_features": drifted,
        "share_drifted": share,
        "drifted": share >= drift_share,
    }


# Performance on labelled predictions


def positive_scores(log: pd.DataFrame) -> np.ndarray | None:
    """P(class 1) from the logged predicted-class probability (binary 0/1 labels), or None."""
    probability = pd.to_numeric(log[PROBABILITY], errors="coerce")
    if probability.isna().any():
        return None
    predicted = log[PREDICTION].to_numpy()
    return np.where(predicted == 1, probability, 1 - probability).astype("float64")


def window_metric(task: str, metric: str, joined: pd.DataFrame) -> tuple[float | None, str | None]:
    """(value, None), or (None, why the metric cannot be computed from these logged rows)."""
    from . import evaluation

    y = joined[LABEL].to_numpy()
    predictions = joined[PREDICTION].to_numpy()
    scores = None
    if metric in PROBABILITY_METRICS:
        classes = set(np.unique(np.concatenate([y, predictions])).tolist())
        if not classes <= {0, 1}:
            return (
                None,
                f"{metric} needs binary 0/1 labels; the log holds {sorted(map(str, classes))}",
            )
        scores = positive_scores(joined)
        if scores is None:
            return None, f"{metric} needs the logged probability, which is missing in these rows"
    try:
        return evaluation.metric(task, metric, y, predictions, scores), None
    except ValueError as error:  # e.g. AUC with one class only
        return None, f"{metric} undefined on these rows: {error}"


def join_labels(log: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Logged predictions that have a label, with the label cast to the prediction's type."""
    keys = log.assign(**{REQUEST_ID: log[REQUEST_ID].astype(str), ROW: log[ROW].astype("int64")})
    joined = keys.merge(labels, on=[REQUEST_ID, ROW], how="inner")
    if pd.api.types.is_numeric_dtype(log[PREDICTION]) and len(joined):
        converted = pd.to_numeric(joined[LABEL], errors="coerce")
        if converted.isna().any():
            bad = joined.loc[converted.isna(), LABEL].iloc[0]
            raise DataError(f"labels: {bad!r} is not a number, and the predictions are")
        joined[LABEL] = converted.astype(log[PREDICTION].dtype)
    return joined


def judge_windows(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    periods: list[Window],
    *,
    task: str,
    metric: str,
    greater_is_better: bool,
    champion_metric: float,
    tolerance: float,
    min_rows: int,
) -> list[dict]:
    """The metric per window against the champion's; `decayed` is None when it could not be judged."""
    joined = join_labels(log, labels)
    judged = []
    for window in periods:
        rows = rows_in(joined, window)
        entry = {
            **window.to_dict(),
            "logged_rows": len(rows_in(log, window)),
            "labelled_rows": len(rows),
            "model_versions": sorted(int(v) for v in rows[MODEL_VERSION].unique()),
            "metric": None,
            "champion_metric": champion_metric,
            "drop": None,
            "decayed": None,
            "reason": None,
        }
        if len(rows) < min_rows:
            entry["reason"] = f"too few labelled rows to judge ({len(rows)} < {min_rows})"
        else:
            value, entry["reason"] = window_metric(task, metric, rows)
            if value is not None:
                drop = champion_metric - value if greater_is_better else value - champion_metric
                entry.update(metric=value, drop=drop, decayed=bool(drop > tolerance))
        judged.append(entry)
    return judged


# The two checks, as the CLI runs them


def drift(settings: Settings, window: Window, html: Path) -> dict:
    """Drift of `window` against the training features, and of the windows of the same length
    before it (for the retraining streak); Evidently's HTML report of `window` goes to `html`."""
    params = settings.params.monitoring
    source = settings.resolve(settings.params.data.source)
    reference, _ = data.split_features_target(data.read_table(source), settings.params.data.target)
    features = [str(name) for name in reference.columns]
    length, count = window.end - window.start, params.retrain_after_windows
    periods = [
        Window(window.end - n * length, window.end - (n - 1) * length) for n in range(count, 0, -1)
    ]
    log = read_log(settings.resolve(params.prediction_log), periods[0].start, window.end, features)
    html.unlink(missing_ok=True)  # never leave an older window's report beside this one
    history = []
    for period in periods:
        rows = rows_in(log, period)
        entry = {
            **period.to_dict(),
            "rows": len(rows),
            "judged": len(rows) >= params.min_window_rows,
        }
        entry["model_versions"] = sorted(int(v) for v in rows[MODEL_VERSION].unique())
        if entry["judged"]:
            latest = period is periods[-1]
            entry.update(data_drift(reference, rows, params.drift_share, html if latest else None))
        history.append(entry)
    latest = history[-1]
    result = {
        "window": window.to_dict(),
        "rows": latest["rows"],
        "model_versions": latest["model_versions"],
        "reference": settings.params.data.source,
        "reference_rows": len(reference),
        "threshold": params.drift_share,
        "min_window_rows": params.min_window_rows,
        "judged": latest["judged"],
        "reason": None,
        "features": latest.get("features", {}),
        "drifted_features": latest.get("drifted_features", []),
        "share_drifted": latest.get("share_drifted"),
        "drifted": latest.get("drifted", False),
        "html": str(html) if latest["judged"] else None,
        "windows": [
            {key: value for key, value in entry.items() if key != "features"} for entry in history
        ],
        **_streak([entry.get("drifted") if entry["judged"] else None for entry in history], count),
    }
    if not latest["judged"]:
        result["reason"] = (
            f"too few rows to judge: {latest['rows']} logged in the window, "
            f"monitoring.min_window_rows is {params.min_window_rows}"
        )
    result["verdict"] = (
        "not judged" if not result["judged"] else "DRIFT" if result["drifted"] else "no drift"
    )
    return result


def performance(settings: Settings, within: Window, hours: float) -> dict:
    """The primary metric per window of `hours` in `within`, against the champion's holdout metric."""
    from . import registry

    params, metric = settings.params.monitoring, settings.params.gate.primary_metric
    model_registry = registry.Registry(settings)
    champion = model_registry.alias_version(registry.CHAMPION)
    if champion is None:
        raise StateError("performance: there is no champion to compare with; promote a model")
    champion_metric = model_registry.holdout_metric(champion, metric)
    labels = read_labels(settings.resolve(params.labels))
    log = read_log(settings.resolve(params.prediction_log), within.start, within.end)
    periods = windows(within, hours)
    judged = judge_windows(
        log,
        labels,
        periods,
        task=settings.params.task,
        metric=metric,
        greater_is_better=settings.greater_is_better[metric],
        champion_metric=champion_metric,
        tolerance=params.performance_tolerance,
        min_rows=params.min_window_rows,
    )
    latest = next((w for w in reversed(judged) if w["decayed"] is not None), None)
    result = {
        "metric": metric,
        "greater_is_better": settings.greater_is_better[metric],
        "champion": {"version": champion, "metric": champion_metric},
        "tolerance": params.performance_tolerance,
        "window_hours": hours,
        "range": within.to_dict(),
        "min_window_rows": params.min_window_rows,
        "windows": judged,
        "judged_windows": sum(w["decayed"] is not None for w in judged),
        "latest_judged": latest,
        "decayed": bool(latest and latest["decayed"]),
        **_streak([w["decayed"] for w in judged], params.retrain_after_windows),
    }
    result["verdict"] = (
        "not judged" if latest is None else "DECAYED" if result["decayed"] else "no decay"
    )
    return result


def _streak(flags: list[bool | None], needed: int) -> dict:
    streak = consecutive_latest(flags)
    return {
        "consecutive_windows": streak,
        "retrain_after_windows": needed,
        "retrain": streak >= needed,
    }


# The verdict: what the two reports say, and what the monitor workflow does about it


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


# Reports


def drift_markdown(result: dict) -> str:
    window = result["window"]
    lines = [
        f"## Data drift: **{result['verdict']}**",
        "",
        f"{result['rows']} logged rows from {window['start']} to {window['end']} "
        f"(model versions {result['model_versions'] or 'none'}) against {result['reference_rows']} "
        f"training rows of {result['reference']}.",
        "",
    ]
    if not result["judged"]:
        lines.append(result["reason"])
    else:
        lines += [
            f"{len(result['drifted_features'])} of {len(result['features'])} features drifted "
            f"(share {result['share_drifted']:.2f}; drift at {result['threshold']:.2f} or more).",
            "",
            markdown_table(
                ["feature", "method", "score", "threshold", "drifted"],
                [
                    [name, f["method"], f"{f['score']:.4g}", f["threshold"], f["drifted"]]
                    for name, f in sorted(result["features"].items())
                ],
            ),
        ]
    lines += ["", *_streak_lines(result, "drifted")]
    return "\n".join(lines)


def performance_markdown(result: dict) -> str:
    metric = result["metric"]
    rows = [
        [
            w["start"],
            w["end"],
            w["labelled_rows"],
            number(w["metric"]),
            number(w["champion_metric"]),
            number(w["drop"]),
            "not judged" if w["decayed"] is None else w["decayed"],
        ]
        for w in result["windows"]
    ]
    lines = [
        f"## Model performance: **{result['verdict']}**",
        "",
        f"{metric} of labelled predictions per {result['window_hours']:g} h window against champion "
        f"v{result['champion']['version']}'s holdout {metric} "
        f"({result['champion']['metric']:.4f}); a window decays when it is worse by more than "
        f"{result['tolerance']}.",
        "",
        markdown_table(
            ["start", "end", "labelled rows", metric, "champion", "drop", "decayed"], rows
        ),
        "",
        *[f"- {w['start']}: {w['reason']}" for w in result["windows"] if w["reason"]],
        "",
        *_streak_lines(result, "decayed"),
    ]
    return "\n".join(lines)


def _streak_lines(result: dict, word: str) -> list[str]:
    return [
        f"Latest windows {word} in a row: {result['consecutive_windows']} "
        f"(retraining at {result['retrain_after_windows']}): "
        + ("**retrain**" if result["retrain"] else "no retraining"),
    ]
