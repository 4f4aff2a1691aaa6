"""The gate's decision rules and the paired bootstrap, on hand-made numbers and on real models."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import data, evaluation, metrics, training
from {{ cookiecutter.package }}.errors import SettingsError
from {{ cookiecutter.package }}.evaluation import PROMOTE, REJECT, decide
from {{ cookiecutter.package }}.metrics import Classes
from {{ cookiecutter.package }}.params import METRIC_GREATER_IS_BETTER, GateParams

DIRECTIONS = {
    **METRIC_GREATER_IS_BETTER["classification"],
    **METRIC_GREATER_IS_BETTER["regression"],
}


def gate(**changes) -> GateParams:
    return GateParams(**{"primary_metric": "f1", "min_improvement": 0.01, **changes})


def test_first_model_is_promoted():
    decision, reasons, gain = decide(gate(), DIRECTIONS, {"f1": 0.5}, None, None)
    assert (decision, gain) == (PROMOTE, None)
    assert "first model" in reasons[0]


@pytest.mark.parametrize(
    ("candidate", "champion", "expected"),
    [(0.92, 0.90, PROMOTE), (0.905, 0.90, REJECT), (0.90, 0.90, REJECT), (0.85, 0.90, REJECT)],
)
def test_primary_metric_must_improve_by_the_margin(candidate, champion, expected):
    decision, reasons, gain = decide(gate(), DIRECTIONS, {"f1": candidate}, {"f1": champion}, None)
    assert decision == expected
    assert gain == pytest.approx(candidate - champion)
    assert reasons[0].startswith("f1 ")


def test_a_tie_never_promotes_even_with_a_zero_margin():
    decision, _, _ = decide(gate(min_improvement=0), DIRECTIONS, {"f1": 0.9}, {"f1": 0.9}, None)
    assert decision == REJECT


def test_lower_is_better_metrics_count_a_drop_as_a_gain():
    rmse_gate = gate(primary_metric="rmse", min_improvement=1.0)
    decision, _, gain = decide(rmse_gate, DIRECTIONS, {"rmse": 40.0}, {"rmse": 42.0}, None)
    assert (decision, gain) == (PROMOTE, 2.0)
    decision, _, gain = decide(rmse_gate, DIRECTIONS, {"rmse": 42.0}, {"rmse": 40.0}, None)
    assert (decision, gain) == (REJECT, -2.0)


def test_a_guard_metric_that_regresses_blocks_promotion():
    guarded = gate(guards={"recall": 0.02})
    candidate, champion = {"f1": 0.95, "recall": 0.80}, {"f1": 0.90, "recall": 0.90}
    decision, reasons, _ = decide(guarded, DIRECTIONS, candidate, champion, None)
    assert decision == REJECT
    assert any("guard recall worsens by 0.1000" in reason for reason in reasons)


def test_significance_switch_requires_the_interval_to_clear_the_margin():
    candidate, champion, interval = {"f1": 0.95}, {"f1": 0.90}, (-0.01, 0.11)
    assert decide(gate(), DIRECTIONS, candidate, champion, interval)[0] == PROMOTE
    decision, reasons, _ = decide(
        gate(require_significance=True), DIRECTIONS, candidate, champion, interval
    )
    assert decision == REJECT
    assert "lower bound does not clear" in reasons[-1]


def test_paired_bootstrap_interval_brackets_the_observed_difference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, labels, 1 - labels)
    poor = np.where(rng.random(300) < 0.7, labels, 1 - labels)
    low, high = evaluation.bootstrap_difference(
        "classification", "accuracy", labels, (good, None), (poor, None), 500, 0.95
    )
    observed = (good == labels).mean() - (poor == labels).mean()
    assert 0 < low < observed < high
    same = evaluation.bootstrap_difference(
        "classification", "accuracy", labels, (good, None), (good, None), 200, 0.95
    )
    assert same == (0.0, 0.0)


def test_compare_scores_both_models_on_the_same_rows(settings, frame):
    params = settings.params
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(frame, params.data)
    model = training.build_pipeline(params.task, params.model).fit(x_train, y_train)
    comparison = evaluation.compare(
        params.task,
        params.gate,
        settings.greater_is_better,
        x_holdout,
        y_holdout,
        (2, model),
        (1, model),
    )
    assert comparison.candidate_metrics == comparison.champion_metrics
    assert comparison.decision == REJECT  # the same model twice is a tie
    assert comparison.holdout_rows == len(y_holdout)
    markdown = evaluation.markdown(comparison.to_dict(), settings.greater_is_better)
    assert "REJECT" in markdown and f"| **{params.gate.primary_metric}** (gate) |" in markdown


def test_plots_are_written(settings, frame, tmp_path):
    params = settings.params
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(frame, params.data)
    model = training.build_pipeline(params.task, params.model).fit(x_train, y_train)
    paths = evaluation.plot(model, x_holdout, y_holdout, params.task, params.gate, tmp_path)
    assert len(paths) == 2
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths)


# Label sets the vectorised metrics must handle: 0/1, strings whose positive is the smaller label,
# and three classes averaged both ways.
LABEL_KINDS = {
    "binary 0/1": ((0, 1), {}),
    "binary strings, positive 'no'": (("no", "yes"), {"positive_label": "no"}),
    "three classes, macro": (("setosa", "versicolor", "virginica"), {}),
    "three classes, weighted": (("setosa", "versicolor", "virginica"), {"average": "weighted"}),
}


@pytest.mark.parametrize("kind", sorted(LABEL_KINDS))
@pytest.mark.parametrize("metric", sorted(METRIC_GREATER_IS_BETTER["classification"]))
def test_vectorised_classification_metrics_equal_sklearn(metric, kind):
    """The bootstrap computes metrics on all resamples at once; each must match sklearn's."""
    labels, gate_changes = LABEL_KINDS[kind]
    classes = Classes.of(labels, gate(**gate_changes))
    rng = np.random.default_rng(3)
    codes = rng.integers(0, len(labels), 80)
    probabilities = rng.dirichlet(np.ones(len(labels)), 80)
    predicted = np.where(rng.random(80) < 0.7, codes, probabilities.argmax(axis=1))
    y, predictions = np.array(labels)[codes], np.array(labels)[predicted]
    rows = rng.integers(0, 80, (4, 80))
    kept = probabilities[:, 1] if classes.binary else probabilities
    vectorised = metrics.resampled_classification(
        metric, codes[rows], predicted[rows], kept[rows], classes
    )
    function = metrics.functions("classification", classes)[metric]
    expected = [function(y[r], predictions[r], probabilities[r]) for r in rows]
    np.testing.assert_allclose(vectorised, expected)


@pytest.mark.parametrize("metric", sorted(METRIC_GREATER_IS_BETTER["regression"]))
def test_vectorised_regression_metrics_equal_sklearn(metric):
    rng = np.random.default_rng(3)
    labels = rng.normal(size=80)
    predictions = labels + rng.normal(size=80)
    rows = rng.integers(0, 80, (4, 80))
    vectorised = metrics.resampled_regression(metric, labels[rows], predictions[rows])
    function = metrics.functions("regression")[metric]
    expected = [function(labels[r], predictions[r], None) for r in rows]
    np.testing.assert_allclose(vectorised, expected)


def test_positive_label_defaults_to_one_or_the_greater_label_and_must_be_a_class():
    assert Classes.of([0, 1]).positive == 1
    assert Classes.of([False, True]).positive is True
    assert Classes.of(["no", "yes"]).positive == "yes"
    assert Classes.of([1, 2]).positive == 1
    assert Classes.of(["no", "yes"], gate(positive_label="no")).positive == "no"
    assert Classes.of([0, 1], gate(positive_label="0")).positive == 0
    with pytest.raises(
        SettingsError, match=re.escape("gate.positive_label 'maybe' is not a class")
    ):
        Classes.of(["no", "yes"], gate(positive_label="maybe"))


def test_three_string_classes_are_compared_bootstrapped_and_plotted(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(300, 2)), columns=["a", "b"])
    names = np.array(["setosa", "versicolor", "virginica"])
    labels = pd.Series(names[(features["a"] > -0.4).astype(int) + (features["a"] > 0.4)])
    strong = LogisticRegression().fit(features, labels)
    weak = LogisticRegression().fit(features[["b"]].assign(a=0.0)[["a", "b"]], labels)
    params = gate(primary_metric="roc_auc", min_improvement=0.0)
    comparison = evaluation.compare(
        "classification", params, DIRECTIONS, features, labels, (2, strong), (1, weak)
    )
    assert comparison.decision == PROMOTE
    low, high = comparison.interval
    assert 0 < low <= comparison.improvement <= high
    assert comparison.candidate_metrics["accuracy"] > 0.8
    paths = evaluation.plot(strong, features, labels, "classification", params, tmp_path)
    assert [path.name for path in paths] == ["confusion_matrix.png"]  # no ROC curve for 3 classes
