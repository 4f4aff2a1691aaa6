"""Score challenger and champion on the same frozen holdout and decide, with reasons, whether to promote.

The metrics themselves are in `metrics`. matplotlib is imported where it is used: the pull request
comment and the job summaries render this module's report without paying seconds for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import metrics
from .errors import DataError, StateError
from .metrics import Classes
from .params import GateParams
from .reports import cell, markdown_table, number, signed

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

PROMOTE, REJECT = "promote", "reject"


def _predict(model: BaseEstimator, features: pd.DataFrame, task: str):
    """(predictions, class probabilities in the order of the model's `classes_`, or None), from the
    columns the model was trained on: a champion trained on other features than the candidate is
    scored on the same rows, with its own."""
    trained_on = [str(name) for name in getattr(model, "feature_names_in_", features.columns)]
    if missing := [name for name in trained_on if name not in features.columns]:
        raise DataError(
            f"a model to compare reads columns {missing} that the data no longer has; "
            "the champion and the candidate cannot be scored on the same rows"
        )
    rows = features[trained_on]
    predictions = np.asarray(model.predict(rows))
    probabilities = model.predict_proba(rows) if task == "classification" else None
    return predictions, probabilities


def classes_of(model: BaseEstimator, task: str, gate: GateParams) -> Classes | None:
    return Classes.of(model.classes_, gate) if task == "classification" else None


def score(
    model: BaseEstimator, features: pd.DataFrame, labels: pd.Series, task: str, gate: GateParams
) -> dict:
    """Every metric of the task for one model on one data set."""
    outputs = _predict(model, features, task)
    return metrics.compute(task, np.asarray(labels), *outputs, classes_of(model, task, gate))


def _classification_differences(
    metric: str, labels: np.ndarray, rows: np.ndarray, candidate: tuple, champion: tuple, classes
) -> np.ndarray:
    """Candidate minus champion on every resample (`rows`) that holds each of the holdout's
    classes: without one, its AUC or F1 is undefined."""
    codes = classes.codes(labels)
    resampled_codes = codes[rows]
    every_class = np.all([(resampled_codes == code).any(axis=1) for code in np.unique(codes)], 0)
    rows, y = rows[every_class], resampled_codes[every_class]

    def resampled(outputs: tuple) -> np.ndarray:
        predictions, probabilities = outputs
        if probabilities is not None and classes.binary:
            probabilities = probabilities[:, 1]  # all a binary metric needs (Classes.labels[1])
        return metrics.resampled_classification(
            metric,
            y,
            classes.codes(predictions)[rows],
            None if probabilities is None else probabilities[rows],
            classes,
        )

    return resampled(candidate) - resampled(champion)


def bootstrap_difference(
    task: str,
    metric: str,
    labels: np.ndarray,
    candidate: tuple,
    champion: tuple,
    samples: int,
    confidence_level: float,
    seed: int = 0,
    classes: Classes | None = None,
) -> tuple[float, float]:
    """Paired bootstrap interval of (candidate - champion) on the metric; `candidate` and
    `champion` are (predictions, class probabilities or None).

    Both models are scored on the SAME resampled rows each time, so the interval reflects the noise of
    the holdout rather than comparing two unrelated samples. `classes` (classification): the models'
    classes, by default those of `labels`.
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), (samples, len(labels)))
    if task == "classification":
        classes = classes or Classes.of(np.unique(labels))
        differences = _classification_differences(
            metric, labels, rows, candidate, champion, classes
        )
    else:
        y = labels[rows]
        differences = metrics.resampled_regression(
            metric, y, candidate[0][rows]
        ) - metrics.resampled_regression(metric, y, champion[0][rows])
    tail = (1 - confidence_level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class Comparison:
    """Everything the gate decided and why; serialised as the evaluation report."""

    decision: str
    reasons: list[str]
    primary_metric: str
    candidate_version: int
    champion_version: int | None
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] = field(default_factory=dict)
    improvement: float | None = None
    interval: tuple[float, float] | None = None
    holdout_rows: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def improvement(candidate: float, champion: float, greater_is_better: bool) -> float:
    """Positive when the candidate is better, whatever the metric's direction."""
    return candidate - champion if greater_is_better else champion - candidate


def decide(
    gate: GateParams,
    greater_is_better: dict[str, bool],
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    interval: tuple[float, float] | None,
) -> tuple[str, list[str], float | None]:
    """The gate: (decision, reasons, improvement of the primary metric). Pure, so it is easy to test.

    The first model is promoted. Afterwards the primary metric must improve by at least
    `min_improvement` (a tie never promotes), every guard metric must stay within its tolerance, and
    with `require_significance` the bootstrap interval's lower bound must clear the margin too.
    """
    metric = gate.primary_metric
    if champion is None:
        return PROMOTE, ["no champion yet: the first model is promoted"], None
    gain = improvement(candidate[metric], champion[metric], greater_is_better[metric])
    reasons, failed = [], False
    if gain >= gate.min_improvement and gain > 0:
        reasons.append(f"{metric} improves by {gain:+.4f} (needs at least {gate.min_improvement})")
    else:
        failed = True
        reasons.append(f"{metric} changes by {gain:+.4f}; needs at least +{gate.min_improvement}")
    for guard, tolerance in gate.guards.items():
        change = improvement(candidate[guard], champion[guard], greater_is_better[guard])
        if change < -tolerance:
            failed = True
            reasons.append(f"guard {guard} worsens by {-change:.4f} (tolerance {tolerance})")
        else:
            reasons.append(f"guard {guard} within tolerance ({change:+.4f}, tolerance {tolerance})")
    if interval is not None:
        low, high = _as_improvement(interval, greater_is_better[metric])
        text = (
            f"{gate.confidence_level:.0%} bootstrap interval of the gain: [{low:+.4f}, {high:+.4f}]"
        )
        if gate.require_significance and low < gate.min_improvement:
            failed = True
            reasons.append(f"{text}; its lower bound does not clear {gate.min_improvement}")
        else:
            reasons.append(text)
    return (REJECT if failed else PROMOTE), reasons, gain


def _as_improvement(interval: tuple[float, float], greater_is_better: bool) -> tuple[float, float]:
    low, high = interval
    return (low, high) if greater_is_better else (-high, -low)


def compare(
    task: str,
    gate: GateParams,
    greater_is_better: dict[str, bool],
    features: pd.DataFrame,
    labels: pd.Series,
    candidate: tuple[int, BaseEstimator],
    champion: tuple[int, BaseEstimator] | None,
) -> Comparison:
    """Score both models on the same rows, bootstrap the difference, and apply the gate."""
    y = np.asarray(labels)
    candidate_version, candidate_model = candidate
    classes = classes_of(candidate_model, task, gate)
    candidate_outputs = _predict(candidate_model, features, task)
    candidate_metrics = metrics.compute(task, y, *candidate_outputs, classes)
    champion_metrics, interval = None, None
    if champion is not None:
        if classes_of(champion[1], task, gate) != classes:
            raise StateError(
                f"champion v{champion[0]} knows the classes {list(champion[1].classes_)}, "
                f"the candidate {list(classes.labels)}: they cannot be scored on one holdout"
            )
        champion_outputs = _predict(champion[1], features, task)
        champion_metrics = metrics.compute(task, y, *champion_outputs, classes)
        interval = bootstrap_difference(
            task,
            gate.primary_metric,
            y,
            candidate_outputs,
            champion_outputs,
            gate.bootstrap_samples,
            gate.confidence_level,
            classes=classes,
        )
    decision, reasons, gain = decide(
        gate, greater_is_better, candidate_metrics, champion_metrics, interval
    )
    return Comparison(
        decision=decision,
        reasons=reasons,
        primary_metric=gate.primary_metric,
        candidate_version=candidate_version,
        champion_version=None if champion is None else champion[0],
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics or {},
        improvement=gain,
        interval=interval,
        holdout_rows=len(y),
    )


def decision_label(report: Mapping[str, Any]) -> str:
    return "PROMOTE" if report.get("decision") == PROMOTE else "REJECT"


def metric_rows(
    report: Mapping[str, Any], greater_is_better: Mapping[str, bool]
) -> list[list[str]]:
    """metric, candidate, champion, delta (candidate - champion) and whether that is better or worse."""
    primary = report.get("primary_metric")
    champion = report.get("champion_metrics") or {}
    rows = []
    for name, value in (report.get("candidate_metrics") or {}).items():
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


def markdown(
    report: Mapping[str, Any], greater_is_better: Mapping[str, bool], champion_source: str = ""
) -> str:
    """The evaluation report for people: `reports/evaluate.md`, the pull request comment, summaries.

    One convention for the sign everywhere: delta is candidate minus champion, and the last column says
    whether that is better (for log_loss or rmse, a negative delta is).
    """
    candidate, champion = report.get("candidate_version"), report.get("champion_version")
    against = f"champion v{champion}" if champion is not None else "no champion (first model)"
    lines = [
        f"### Gate verdict: **{decision_label(report)}** candidate v{candidate}",
        "",
        f"Candidate v{candidate} against {against}"
        + (f" ({champion_source})" if champion_source and champion is not None else "")
        + f", on the same {report.get('holdout_rows', '?')} holdout rows. "
        "Delta is candidate minus champion; the last column says whether that is better.",
        "",
        markdown_table(
            ["metric", "candidate", "champion", "delta", "change"],
            metric_rows(report, greater_is_better),
            "lrrrl",
        ),
        "",
        "**Why:**",
        *[f"- {cell(reason, 500)}" for reason in report.get("reasons") or ["(no reason recorded)"]],
    ]
    return "\n".join(lines)


def plot(
    model: BaseEstimator,
    features: pd.DataFrame,
    labels: pd.Series,
    task: str,
    gate: GateParams,
    out: Path,
):
    """Diagnostic plots of one model on the holdout; returns the PNG paths written.

    Classification: the k x k confusion matrix, and the ROC curve of the positive class when there
    are two. Regression: residuals and actual against predicted.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt
    from sklearn import metrics as skm

    out.mkdir(parents=True, exist_ok=True)
    predictions, probabilities = _predict(model, features, task)
    written = []
    if task == "classification":
        classes = classes_of(model, task, gate)
        charts = {
            "confusion_matrix": lambda ax: skm.ConfusionMatrixDisplay.from_predictions(
                labels, predictions, labels=list(classes.labels), ax=ax, colorbar=False
            ),
        }
        if classes.binary:
            charts["roc_curve"] = lambda ax: skm.RocCurveDisplay.from_predictions(
                labels,
                probabilities[:, classes.positive_code],
                pos_label=classes.positive,
                ax=ax,
            )
    else:
        charts = {
            "residuals": lambda ax: skm.PredictionErrorDisplay.from_predictions(
                labels, predictions, kind="residual_vs_predicted", ax=ax
            ),
            "actual_vs_predicted": lambda ax: skm.PredictionErrorDisplay.from_predictions(
                labels, predictions, kind="actual_vs_predicted", ax=ax
            ),
        }
    for name, draw in charts.items():
        figure, axes = plt.subplots(figsize=(5, 4))
        draw(axes)
        axes.set_title(name.replace("_", " "))
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)
    return written
