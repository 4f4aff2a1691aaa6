"""A/B test on live labels: two versions that answered live traffic (a canary, a split), each judged
by the gate's primary metric on the labelled requests it answered, and a decision about the difference.

The two samples are different requests, so the interval is an unpaired bootstrap: each version's
requests are resampled on their own (a request with several rows stays whole: its rows came from one
client and are not independent), the metric is computed with the gate's code on every resample, and
the interval of B's gain over A is read from the differences at the gate's confidence level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import metrics
from ..errors import DataError, SettingsError, StateError
from ..evaluation import improvement
from ..prediction_log import MODEL_VERSION, REQUEST_ID, read_log
from ..reports import markdown_table, number, signed
from ..settings import Settings
from .performance import join_labels, metric_inputs, read_labels, window_metric
from .windows import Window

if TYPE_CHECKING:
    from ..registry import Registry

REPORT = "ab_test"
TOO_FEW, A_BETTER, B_BETTER, NO_DIFFERENCE = (
    "too few labels",
    "A better",
    "B better",
    "no significant difference",
)

WHY = {
    B_BETTER: "the interval of B's gain lies above 0",
    A_BETTER: "the interval of B's gain lies below 0",
    NO_DIFFERENCE: "the interval of B's gain holds 0: the difference may be chance",
}


def pick_versions(log: pd.DataFrame, chosen: list[int] | None) -> tuple[int, int]:
    """(A, B): the versions asked for, or the two that answered in the window (A the older)."""
    if chosen:
        first, second = chosen
        if first == second:
            raise SettingsError(f"--versions: A and B are both v{first}; name two versions")
        return first, second
    found = sorted(int(version) for version in log[MODEL_VERSION].unique())
    if len(found) != 2:
        raise DataError(
            f"ab-test: the prediction log's window holds versions {found}, not two; "
            "name the two to compare with --versions A B"
        )
    return found[0], found[1]


def request_resamples(request_ids: np.ndarray, samples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Row positions of `samples` bootstrap resamples of the requests: each draws as many requests
    as there are, with replacement, and takes every row of each."""
    rng = np.random.default_rng(seed)
    codes, _ = pd.factorize(request_ids)
    order = np.argsort(codes, kind="stable")  # rows grouped by request
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    for _ in range(samples):
        drawn = rng.integers(0, len(counts), len(counts))
        lengths = counts[drawn]
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        yield order[np.repeat(starts[drawn], lengths) + within]


def resampled_metric(
    task: str,
    metric: str,
    rows: pd.DataFrame,
    classes: metrics.Classes | None,
    samples: int,
    seed: int,
) -> np.ndarray:
    """The metric on bootstrap resamples of the requests of `rows` (labelled rows on which the
    metric is defined); resamples where it is not (AUC of a resample holding one class) are left
    out, as the gate leaves them out."""
    (y, predictions, probabilities), _ = metric_inputs(task, metric, rows, classes)
    score = metrics.functions(task, classes)[metric]
    values = []
    for at in request_resamples(rows[REQUEST_ID].to_numpy(), samples, seed):
        try:
            values.append(
                score(y[at], predictions[at], None if probabilities is None else probabilities[at])
            )
        except ValueError:
            continue
    return np.array(values, dtype="float64")


def _arm(
    version: int,
    log: pd.DataFrame,
    joined: pd.DataFrame,
    task: str,
    metric: str,
    classes: metrics.Classes | None,
) -> dict[str, Any]:
    """One version's side: its logged and labelled rows, and its metric on the labelled ones."""
    rows = joined[joined[MODEL_VERSION] == version]
    value, why = (
        window_metric(task, metric, rows, classes) if len(rows) else (None, "no labelled rows")
    )
    return {
        "version": version,
        "logged_rows": int((log[MODEL_VERSION] == version).sum()),
        "labelled_rows": len(rows),
        "labelled_requests": int(rows[REQUEST_ID].nunique()),
        "metric": value,
        "why_no_metric": why,
    }


def compare(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    versions: tuple[int, int],
    *,
    task: str,
    metric: str,
    classes: metrics.Classes | None,
    greater_is_better: bool,
    samples: int,
    confidence_level: float,
    min_rows: int,
) -> dict[str, Any]:
    """The A/B test's result: per version the metric and n, B's gain over A (positive: B is better,
    whatever the metric's direction) with its bootstrap interval, and the decision."""
    joined = join_labels(log, labels)
    a, b = (_arm(version, log, joined, task, metric, classes) for version in versions)
    result = {
        "metric": metric,
        "greater_is_better": greater_is_better,
        "a": a,
        "b": b,
        "gain": None,
        "interval": None,
        "confidence_level": confidence_level,
        "bootstrap_samples": samples,
        "min_labelled_rows": min_rows,
    }
    if min(a["labelled_rows"], b["labelled_rows"]) < min_rows:
        counts = f"v{a['version']} {a['labelled_rows']}, v{b['version']} {b['labelled_rows']}"
        return _undecided(result, f"labelled rows {counts}; each version needs {min_rows}")
    if a["metric"] is None or b["metric"] is None:
        return _undecided(result, a["why_no_metric"] or b["why_no_metric"])
    arms = [joined[joined[MODEL_VERSION] == arm["version"]] for arm in (a, b)]
    a_values, b_values = (
        resampled_metric(task, metric, rows, classes, samples, seed)
        for seed, rows in enumerate(arms)
    )
    kept = min(len(a_values), len(b_values))
    if not kept:
        return _undecided(result, f"{metric} is undefined on every bootstrap resample")
    gains = improvement(b_values[:kept], a_values[:kept], greater_is_better)
    tail = (1 - confidence_level) / 2 * 100
    low, high = (float(value) for value in np.percentile(gains, [tail, 100 - tail]))
    decision = B_BETTER if low > 0 else A_BETTER if high < 0 else NO_DIFFERENCE
    return {
        **result,
        "gain": improvement(b["metric"], a["metric"], greater_is_better),
        "interval": [low, high],
        "decision": decision,
        "winner": {B_BETTER: b["version"], A_BETTER: a["version"]}.get(decision),
        "reason": WHY[decision],
    }


def _undecided(result: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**result, "decision": TOO_FEW, "winner": None, "reason": reason}


def judge(
    settings: Settings, registry: Registry, within: Window, versions: list[int] | None
) -> dict[str, Any]:
    """Read the window's log and the labels, pick the two versions, and compare them."""
    params, gate = settings.params.monitoring, settings.params.gate
    log = read_log(settings.resolve(params.prediction_log), within.start, within.end)
    pair = pick_versions(log, versions)
    classes = None
    if settings.params.task == "classification":
        a, b = (metrics.Classes.of(registry.load_model(v).classes_, gate) for v in pair)
        if a != b:
            raise StateError(
                f"v{pair[0]} knows the classes {list(a.labels)}, v{pair[1]} {list(b.labels)}: "
                "their metrics are not comparable"
            )
        classes = a
    result = compare(
        log,
        read_labels(settings.resolve(params.labels)),
        pair,
        task=settings.params.task,
        metric=gate.primary_metric,
        classes=classes,
        greater_is_better=settings.greater_is_better[gate.primary_metric],
        samples=gate.bootstrap_samples,
        confidence_level=gate.confidence_level,
        min_rows=params.ab_min_labelled_rows,
    )
    return {**result, "range": within.to_dict()}


def for_versions(report: Mapping[str, Any] | None, versions: tuple[int, int]) -> Mapping | None:
    """`report` when it compares these two versions (in either order), else None."""
    if report is None:
        return None
    return report if {report["a"]["version"], report["b"]["version"]} == set(versions) else None


def markdown(result: Mapping[str, Any]) -> str:
    """The A/B test for people: `reports/ab_test.md`, the job summary, the rollout report."""
    metric, a, b = result["metric"], result["a"], result["b"]
    verdict = result["decision"]
    if result["winner"] is not None:
        verdict += f": v{result['winner']}"
    interval = result["interval"]
    rows = [
        [
            f"{name}: v{arm['version']}",
            arm["labelled_requests"],
            arm["labelled_rows"],
            number(arm["metric"]),
        ]
        for name, arm in zip("AB", (a, b), strict=True)
    ]
    lines = [
        f"### A/B test on live labels: **{verdict}**",
        "",
        f"{metric} of the labelled requests each version answered "
        f"({result['range']['start']} to {result['range']['end']}).",
        "",
        markdown_table(["version", "labelled requests", "labelled rows", metric], rows, "lrrr"),
        "",
        f"- B's gain over A: {signed(result['gain'])} (positive: B is better), "
        + (
            f"{result['confidence_level']:.0%} bootstrap interval "
            f"[{signed(interval[0])}, {signed(interval[1])}] over {result['bootstrap_samples']} "
            "resamples of the requests"
            if interval
            else "no interval"
        ),
        f"- {result['reason']}",
        f"- No winner is called below {result['min_labelled_rows']} labelled rows per version "
        "(monitoring.ab_min_labelled_rows).",
    ]
    return "\n".join(lines)
