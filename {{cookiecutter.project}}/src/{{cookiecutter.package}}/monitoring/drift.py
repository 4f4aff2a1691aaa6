"""Data drift: the logged features of a window against the training data (Evidently)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import data
from ..prediction_log import MODEL_VERSION, read_log
from ..profile import PROFILE_MAX_CATEGORIES, as_model_input, categorical_columns
from ..reports import markdown_table
from ..settings import Settings
from .windows import Window, rows_in, streak, streak_lines


def categorical_features(reference: pd.DataFrame) -> list[str]:
    """Features Evidently compares as categories: the text features (as training decides), and the
    numeric ones with few distinct values in training, as the feature profile counts them."""
    text = set(categorical_columns(reference))
    return [
        str(name)
        for name in reference.columns
        if name in text or reference[name].nunique(dropna=True) <= PROFILE_MAX_CATEGORIES
    ]


def comparable(frame: pd.DataFrame, features: list[str], text: set[str]) -> pd.DataFrame:
    """The features as Evidently compares them: text features as strings (the log's type, whatever
    the reference file's parser made of them), the others as float64; a gap stays a gap."""
    numbers = {name: "float64" for name in features if name not in text}
    return as_model_input(frame[features], text).astype(numbers)


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
    text = set(categorical_columns(reference))
    definition = DataDefinition(
        numerical_columns=[name for name in features if name not in categorical],
        categorical_columns=categorical,
    )

    def dataset(frame: pd.DataFrame):
        values = comparable(frame.reset_index(drop=True), features, text)
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


def judge(settings: Settings, window: Window, html: Path) -> dict:
    """Drift of `window` against the training features, and of the windows of the same length
    before it (for the retraining streak); Evidently's HTML report of `window` goes to `html`."""
    params = settings.params.monitoring
    reference, _ = data.split_features_target(data.training_table(settings), settings.params.data)
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
        "reference": data.training_source(settings),
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
        **streak([entry.get("drifted") if entry["judged"] else None for entry in history], count),
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


def markdown(result: dict) -> str:
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
    lines += ["", *streak_lines(result, "drifted")]
    return "\n".join(lines)
