"""The gate's decision rules and the paired bootstrap, on hand-made numbers and on real models."""

from __future__ import annotations

import numpy as np
import pytest

from {{ cookiecutter.package }} import data, evaluation, training
from {{ cookiecutter.package }}.evaluation import PROMOTE, REJECT, decide
from {{ cookiecutter.package }}.settings import METRIC_GREATER_IS_BETTER, GateParams

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
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(
        frame, params.data.target, params.data.holdout_fraction
    )
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
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(
        frame, params.data.target, params.data.holdout_fraction
    )
    model = training.build_pipeline(params.task, params.model).fit(x_train, y_train)
    paths = evaluation.plot(model, x_holdout, y_holdout, params.task, tmp_path)
    assert len(paths) == 2
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths)


@pytest.mark.parametrize(
    ("task", "metric"),
    [(task, metric) for task, metrics in METRIC_GREATER_IS_BETTER.items() for metric in metrics],
)
def test_vectorised_bootstrap_metrics_equal_sklearn(task, metric):
    """The bootstrap computes metrics on all resamples at once; each must match sklearn's."""
    rng = np.random.default_rng(3)
    if task == "classification":
        labels, scores = rng.integers(0, 2, 80), rng.random(80)
        predictions = (scores > 0.5).astype(int)
    else:
        labels, scores = rng.normal(size=80), None
        predictions = labels + rng.normal(size=80)
    rows = rng.integers(0, 80, (4, 80))
    vectorised = evaluation._resampled_metric(
        metric, labels[rows], predictions[rows], None if scores is None else scores[rows]
    )
    function = evaluation._metric_functions(task)[metric]
    expected = [
        function(labels[r], predictions[r], None if scores is None else scores[r]) for r in rows
    ]
    np.testing.assert_allclose(vectorised, expected)
