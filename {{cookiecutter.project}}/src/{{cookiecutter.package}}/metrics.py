"""The task's metrics from labels and a model's outputs: one at a time (scikit-learn), and on every
bootstrap resample at once (vectorised), for regression and for classification with any labels
(numbers, strings, booleans) and any number of classes.

scikit-learn's metrics are imported where they are used: the pull request comment and the job
summaries render evaluation reports without paying seconds for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import SettingsError
from .params import GateParams


@dataclass(frozen=True)
class Classes:
    """What the classification metrics need to know of the labels: the classes in the model's
    order (`classes_`, sorted), which one is positive (binary targets), how to average (more)."""

    labels: tuple
    positive: Any = None
    average: str = "macro"

    @classmethod
    def of(cls, classes, gate: GateParams | None = None) -> Classes:
        """The classes of a model (or a target), with the gate's positive label and average.

        The positive label of a binary target is `gate.positive_label` when set; otherwise 1 (or
        True, which equals 1) when it is one of the two labels, else the greater of the two in sorted
        order ("yes" of "no"/"yes").
        """
        labels = tuple(np.asarray(classes).tolist())
        chosen = gate.positive_label if gate is not None else None
        average = gate.average if gate is not None else "macro"
        if len(labels) != 2:
            return cls(labels, None, average)
        wanted = chosen if chosen is not None else (1 if 1 in labels else labels[1])
        matches = [label for label in labels if label == wanted or str(label) == str(wanted)]
        if not matches:
            raise SettingsError(
                f"gate.positive_label {wanted!r} is not a class of the target; "
                f"the classes are {list(labels)}"
            )
        return cls(labels, matches[0], average)

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    def codes(self, values) -> np.ndarray:
        """Each value's index in `labels` (-1 for a label the model does not know)."""
        return pd.Index(self.labels).get_indexer(pd.Index(np.asarray(values)))

    @property
    def positive_code(self) -> int:
        return self.labels.index(self.positive)


def _classification_functions(classes: Classes) -> dict:
    """name -> f(y_true, predictions, probabilities: one column per class, in `classes` order)."""
    from sklearn import metrics as skm

    labels = list(classes.labels)
    if classes.binary:
        positive, column = classes.positive, classes.positive_code
        counted = {"pos_label": positive, "zero_division": 0}
        return {
            "accuracy": lambda y, p, s: skm.accuracy_score(y, p),
            "f1": lambda y, p, s: skm.f1_score(y, p, **counted),
            "precision": lambda y, p, s: skm.precision_score(y, p, **counted),
            "recall": lambda y, p, s: skm.recall_score(y, p, **counted),
            "roc_auc": lambda y, p, s: skm.roc_auc_score(np.asarray(y) == positive, s[:, column]),
            # the probability of labels[1], as log_loss reads a single column
            "log_loss": lambda y, p, s: skm.log_loss(y, s[:, 1], labels=labels),
        }
    averaged = {"labels": labels, "average": classes.average, "zero_division": 0}
    return {
        "accuracy": lambda y, p, s: skm.accuracy_score(y, p),
        "f1": lambda y, p, s: skm.f1_score(y, p, **averaged),
        "precision": lambda y, p, s: skm.precision_score(y, p, **averaged),
        "recall": lambda y, p, s: skm.recall_score(y, p, **averaged),
        "roc_auc": lambda y, p, s: skm.roc_auc_score(
            y, s, multi_class="ovr", average=classes.average, labels=labels
        ),
        "log_loss": lambda y, p, s: skm.log_loss(y, s, labels=labels),
    }


def functions(task: str, classes: Classes | None = None) -> dict:
    """name -> f(y_true, predictions, class probabilities or None) for every metric of the task."""
    if task == "classification":
        return _classification_functions(classes)
    from sklearn import metrics as skm

    return {
        "r2": lambda y, p, s: skm.r2_score(y, p),
        "rmse": lambda y, p, s: skm.root_mean_squared_error(y, p),
        "mae": lambda y, p, s: skm.mean_absolute_error(y, p),
    }


def metric(task: str, name: str, y, predictions, probabilities=None, classes=None) -> float:
    """One metric from labels and a model's outputs."""
    return float(functions(task, classes)[name](y, predictions, probabilities))


def compute(task: str, y, predictions, probabilities, classes=None) -> dict[str, float]:
    return {
        name: float(f(y, predictions, probabilities))
        for name, f in functions(task, classes).items()
    }


def _mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per resample: the chance a positive row outranks a negative one (the ROC AUC)."""
    from scipy.stats import rankdata  # scipy.stats takes a second to import; only AUC needs it

    ranks = rankdata(scores, axis=1)
    positives = positive.sum(axis=1)
    negatives = positive.shape[1] - positives
    rank_sum = (ranks * positive).sum(axis=1)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _counted(metric: str, y: np.ndarray, predictions: np.ndarray, code: int) -> np.ndarray:
    """Precision, recall or f1 of the class `code`, per resample (0 where undefined)."""
    true_pos = ((predictions == code) & (y == code)).sum(axis=1)
    predicted, actual = (predictions == code).sum(axis=1), (y == code).sum(axis=1)
    denominator = {"precision": predicted, "recall": actual, "f1": (predicted + actual) / 2}
    below = denominator[metric]
    return np.divide(true_pos, below, out=np.zeros(len(y)), where=below > 0)


def _averaged(values: list[np.ndarray], y: np.ndarray, average: str) -> np.ndarray:
    """Per-class values of every resample averaged: plainly (macro) or by the class's rows (weighted)."""
    stacked = np.stack(values, axis=1)
    if average == "macro":
        return stacked.mean(axis=1)
    support = np.stack([(y == code).sum(axis=1) for code in range(len(values))], axis=1)
    return (stacked * support).sum(axis=1) / support.sum(axis=1)


def resampled_classification(
    metric: str, y: np.ndarray, predictions: np.ndarray, probabilities, classes: Classes
) -> np.ndarray:
    """The metric on every resample at once: rows are resamples, labels are codes of `classes`
    (`Classes.codes`), probabilities have a last axis per class (binary: only labels[1]'s column,
    which is all a binary metric needs, and keeps memory as small as one score per row)."""
    if metric == "accuracy":
        return (y == predictions).mean(axis=1)
    if classes.binary:
        positive = classes.positive_code
        if metric in {"precision", "recall", "f1"}:
            return _counted(metric, y, predictions, positive)
        if metric == "log_loss":
            clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
            return -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean(axis=1)
        scores = probabilities if positive == 1 else 1 - probabilities
        return _mann_whitney_auc(scores, y == positive)  # roc_auc
    codes = range(len(classes.labels))
    if metric in {"precision", "recall", "f1"}:
        values = [_counted(metric, y, predictions, code) for code in codes]
        return _averaged(values, y, classes.average)
    if metric == "log_loss":
        chosen = np.take_along_axis(probabilities, y[..., None], axis=2)[..., 0]
        return -np.log(np.clip(chosen, 1e-15, 1)).mean(axis=1)
    values = [_mann_whitney_auc(probabilities[..., code], y == code) for code in codes]
    return _averaged(values, y, classes.average)  # roc_auc, one class against the rest


def resampled_regression(metric: str, y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The metric on every resample at once: rows of `y`/`predictions` are resamples."""
    errors = predictions - y
    if metric == "rmse":
        return np.sqrt((errors**2).mean(axis=1))
    if metric == "mae":
        return np.abs(errors).mean(axis=1)
    total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return 1 - (errors**2).sum(axis=1) / total  # r2
