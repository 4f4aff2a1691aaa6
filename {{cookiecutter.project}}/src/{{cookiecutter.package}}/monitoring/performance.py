"""Concept drift: the primary metric on labelled predictions, per window, against the champion's."""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import metrics, storage
from ..errors import DataError, StateError
from ..prediction_log import (
    CLASS_PROBABILITIES,
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY,
    REQUEST_ID,
    ROW,
    read_log,
)
from ..registry import CHAMPION
from ..reports import markdown_table, number
from ..settings import Settings
from .windows import Window, rows_in, streak, streak_lines, windows

if TYPE_CHECKING:
    from ..registry import Registry

LABEL = "label"
LABEL_SUFFIXES = (".csv", ".parquet")
PROBABILITY_METRICS = frozenset({"roc_auc", "log_loss"})


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


def positive_scores(log: pd.DataFrame, positive) -> np.ndarray | None:
    """P(positive class) of a binary model from the logged predicted-class probability, or None."""
    probability = pd.to_numeric(log[PROBABILITY], errors="coerce")
    if probability.isna().any():
        return None
    predicted = log[PREDICTION].to_numpy()
    return np.where(predicted == positive, probability, 1 - probability).astype("float64")


def logged_class_probabilities(joined: pd.DataFrame, classes: metrics.Classes) -> np.ndarray | None:
    """Every class's probability as the service logged it (rows x classes, in the model's class
    order), or None when a row lacks them (a log written before the service logged them)."""
    if CLASS_PROBABILITIES not in joined.columns:
        return None
    keys = [str(label) for label in classes.labels]  # the service keys them by the label as text
    try:
        return np.array([[cell[key] for key in keys] for cell in joined[CLASS_PROBABILITIES]])
    except (KeyError, TypeError):  # a missing class, or no map at all in some rows
        return None


def class_probabilities(metric: str, joined: pd.DataFrame, classes: metrics.Classes):
    """(every class's probability in the model's class order, None), or (None, why there is none).

    The log's class_probabilities when every row has them; else, for a binary model, the predicted
    class's probability is enough (the other class has the rest). For more classes without them,
    the probability metrics are not judged."""
    logged = logged_class_probabilities(joined, classes)
    if logged is not None:
        return logged.astype("float64"), None
    if not classes.binary:
        return None, (
            f"{metric} needs every class's probability; these rows of the log hold the predicted "
            f"class's only ({len(classes.labels)} classes)"
        )
    scores = positive_scores(joined, classes.positive)
    if scores is None:
        return None, f"{metric} needs the logged probability, which is missing in these rows"
    columns = [scores, 1 - scores] if classes.positive_code == 0 else [1 - scores, scores]
    return np.column_stack(columns), None


def metric_inputs(
    task: str, metric: str, joined: pd.DataFrame, classes: metrics.Classes | None
) -> tuple[tuple | None, str | None]:
    """((labels, predictions, class probabilities or None), None) as `metrics.metric` takes them,
    or (None, why the logged rows cannot give them)."""
    probabilities = None
    if task == "classification" and metric in PROBABILITY_METRICS:
        probabilities, why = class_probabilities(metric, joined, classes)
        if probabilities is None:
            return None, why
    return (joined[LABEL].to_numpy(), joined[PREDICTION].to_numpy(), probabilities), None


def window_metric(
    task: str, metric: str, joined: pd.DataFrame, classes: metrics.Classes | None
) -> tuple[float | None, str | None]:
    """(value, None), or (None, why the metric cannot be computed from these logged rows).
    `classes`: the champion's (classification), so a window that misses a class is judged as the
    model was."""
    inputs, why = metric_inputs(task, metric, joined, classes)
    if inputs is None:
        return None, why
    try:
        return metrics.metric(task, metric, *inputs, classes), None
    except ValueError as error:  # e.g. AUC with one class only
        return None, f"{metric} undefined on these rows: {error}"


def join_labels(log: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Logged predictions that have a label, with the label cast to the prediction's type: numbers
    (and booleans) as numbers, any other label as text, as a CSV file holds it."""
    keys = log.assign(**{REQUEST_ID: log[REQUEST_ID].astype(str), ROW: log[ROW].astype("int64")})
    joined = keys.merge(labels, on=[REQUEST_ID, ROW], how="inner")
    if not len(joined):
        return joined
    if pd.api.types.is_numeric_dtype(log[PREDICTION]):
        converted = pd.to_numeric(joined[LABEL], errors="coerce")
        if converted.isna().any():
            bad = joined.loc[converted.isna(), LABEL].iloc[0]
            raise DataError(f"labels: {bad!r} is not a number, and the predictions are")
        joined[LABEL] = converted.astype(log[PREDICTION].dtype)
    else:
        if joined[LABEL].isna().any():
            bad = joined.loc[joined[LABEL].isna(), REQUEST_ID].iloc[0]
            raise DataError(f"labels: request {bad!r} has an empty label")
        joined[LABEL] = joined[LABEL].map(str)
        joined[PREDICTION] = joined[PREDICTION].map(str)
    return joined


def judge_windows(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    periods: list[Window],
    *,
    task: str,
    metric: str,
    classes: metrics.Classes | None,
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
            value, entry["reason"] = window_metric(task, metric, rows, classes)
            if value is not None:
                drop = champion_metric - value if greater_is_better else value - champion_metric
                entry.update(metric=value, drop=drop, decayed=bool(drop > tolerance))
        judged.append(entry)
    return judged


def judge(settings: Settings, registry: Registry, within: Window, hours: float) -> dict:
    """The primary metric per window of `hours` in `within`, against the champion's holdout metric."""
    params, metric = settings.params.monitoring, settings.params.gate.primary_metric
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        raise StateError("performance: there is no champion to compare with; promote a model")
    champion_metric = registry.holdout_metric(champion, metric)
    classes = None
    if settings.params.task == "classification":
        classes = metrics.Classes.of(registry.load_model(champion).classes_, settings.params.gate)
    labels = read_labels(settings.resolve(params.labels))
    log = read_log(settings.resolve(params.prediction_log), within.start, within.end)
    periods = windows(within, hours)
    judged = judge_windows(
        log,
        labels,
        periods,
        task=settings.params.task,
        metric=metric,
        classes=classes,
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
        **streak([w["decayed"] for w in judged], params.retrain_after_windows),
    }
    result["verdict"] = (
        "not judged" if latest is None else "DECAYED" if result["decayed"] else "no decay"
    )
    return result


def markdown(result: dict) -> str:
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
        *streak_lines(result, "decayed"),
    ]
    return "\n".join(lines)
