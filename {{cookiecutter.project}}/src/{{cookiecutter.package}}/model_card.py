"""The model card of a registered version: what it is for, what it learned from, how it scored, where
it falls short and where it came from, so anyone can judge a model without reading the pipeline.

`build` makes the card (the JSON) from what training knows, `with_gate` adds the gate's decision, and
`markdown` renders it for people. Training logs both files with the version (its run's artifacts
`model_card.json` and `model_card.md`), the gate's evaluation logs them again with its decision, the
build packs the card with the model into the bento and the service answers it at GET /model_card.
`model-card` writes a version's card to reports/.

Nothing heavy is imported at module level: the service and the pull request comment import it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import reports
from .reports import cell, markdown_table, number

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .registry import Registry

CARD_JSON, CARD_MARKDOWN = "model_card.json", "model_card.md"  # artifacts of the version's run
REPORT = "model_card"  # reports/model_card.json and .md
BENTO_METADATA_KEY = "model_card"  # the card as JSON text, in the bento's stored model's metadata
# A class the model finds less often than this on the holdout (its recall) is a known limit.
LOW_RECALL = 0.8
# The S3 object version training read (datasets.source_version), among the lineage tags.
LINEAGE_S3_VERSION = "data_s3_version_id"
NOT_STATED = "not stated: write it in pyproject.toml ([project] {field})"


@dataclass(frozen=True)
class Facts:
    """What training knows of one registered version: everything a card says."""

    model_name: str
    version: int
    task: str
    estimator: str
    about: Mapping[str, str]  # owner and intended use (`about`)
    source: str
    train_target: pd.Series
    holdout_labels: np.ndarray
    holdout_predictions: np.ndarray
    holdout_metrics: Mapping[str, float]
    feature_profile: Mapping[str, dict]
    feature_roles: Mapping[str, list[str]]
    lineage: Mapping[str, str]  # git sha, params hash, data fingerprint, run id, model digest


def about(project_dir: Path) -> dict[str, str]:
    """Owner and intended use: the project's `authors` and `description` (pyproject.toml), the one
    place the project says who answers for it and what it is for."""
    try:
        project = tomllib.loads((project_dir / "pyproject.toml").read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        project = {}
    owners = [author.get("name", "") for author in project.get("authors") or []]
    return {
        "owner": ", ".join(name for name in owners if name) or NOT_STATED.format(field="authors"),
        "intended_use": project.get("description") or NOT_STATED.format(field="description"),
    }


def build(facts: Facts) -> dict[str, Any]:
    """The card of `facts`' version, before any gate evaluated it. Pure: facts in, JSON out."""
    return {
        "model": {
            "name": facts.model_name,
            "version": facts.version,
            "task": facts.task,
            "estimator": facts.estimator,
        },
        "owner": facts.about["owner"],
        "intended_use": facts.about["intended_use"],
        "training_data": {
            "source": facts.source,
            "fingerprint": facts.lineage["data_fingerprint"],
            "s3_version_id": facts.lineage.get(LINEAGE_S3_VERSION),  # None: not a versioned bucket
            "train_rows": len(facts.train_target),
            "holdout_rows": len(facts.holdout_labels),
            "target": target_distribution(facts.task, facts.train_target),
            "feature_roles": dict(facts.feature_roles),
        },
        "holdout_metrics": dict(facts.holdout_metrics),
        "gate": None,
        "feature_profile": profile_summary(facts.feature_profile),
        "known_limits": known_limits(facts),
        "lineage": dict(facts.lineage),
    }


def target_distribution(task: str, target: pd.Series) -> dict[str, Any]:
    """Classification: each class's training rows and share; regression: the target's spread."""
    if task == "classification":
        counts = target.value_counts().sort_index()
        return {
            "classes": {
                str(label): {"rows": int(rows), "share": rows / len(target)}
                for label, rows in counts.items()
            }
        }
    quantiles = target.quantile([0.25, 0.5, 0.75])
    return {
        "min": float(target.min()),
        "p25": float(quantiles[0.25]),
        "median": float(quantiles[0.5]),
        "p75": float(quantiles[0.75]),
        "max": float(target.max()),
        "mean": float(target.mean()),
    }


def profile_summary(profile: Mapping[str, dict]) -> dict[str, dict[str, Any]]:
    """Each feature's kind, missing share and range (numeric) or number of categories: the full
    profile is the service's /metadata."""
    summary = {}
    for name, seen in profile.items():
        entry = {"kind": seen["kind"], "missing_rate": seen["missing_rate"]}
        if seen["kind"] == "categorical":
            entry["categories"] = len(seen["categories"])
        else:
            entry |= {"min": seen["min"], "max": seen["max"], "mean": seen["mean"]}
        summary[name] = entry
    return summary


def class_recall(labels: np.ndarray, predictions: np.ndarray) -> dict[str, tuple[float, int]]:
    """Each holdout class's recall (the share of its rows predicted as it) and its number of rows."""
    import numpy as np

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    recall = {}
    for label in np.unique(labels):
        rows = labels == label
        recall[str(label)] = (float(np.mean(predictions[rows] == label)), int(rows.sum()))
    return recall


def known_limits(facts: Facts) -> list[str]:
    """Where the model is known to fall short: classes it often misses on the holdout, targets it
    never saw (regression), and inputs outside what training saw."""
    limits = []
    if facts.task == "classification":
        for label, (recall, rows) in class_recall(
            facts.holdout_labels, facts.holdout_predictions
        ).items():
            if recall < LOW_RECALL:
                limits.append(
                    f"class {label}: recall {recall:.3f} on the {rows} holdout rows of that class "
                    f"(below {LOW_RECALL}): often missed"
                )
    else:
        target = facts.train_target
        limits.append(
            f"trained on targets from {target.min():.4g} to {target.max():.4g}: "
            "predictions beyond that range are extrapolation"
        )
    limits.append(
        "inputs outside the feature profile (ranges and categories seen in training) were never "
        "tested: the service flags or refuses them (serving.out_of_profile)"
    )
    return limits


def with_gate(card: Mapping[str, Any], evaluated: Mapping[str, Any]) -> dict[str, Any]:
    """The card with the gate's decision and reasons (an evaluation report of this version)."""
    interval = evaluated.get("interval")
    return {
        **card,
        "gate": {
            "decision": evaluated["decision"],
            "reasons": list(evaluated["reasons"]),
            "against_champion": evaluated.get("champion_version"),
            "primary_metric": evaluated["primary_metric"],
            "candidate_metrics": dict(evaluated["candidate_metrics"]),
            "champion_metrics": dict(evaluated.get("champion_metrics") or {}),
            # The paired bootstrap interval of candidate minus champion (None: no champion).
            "bootstrap_interval": None if interval is None else list(interval),
            "holdout_rows": evaluated.get("holdout_rows"),
        },
    }


# Markdown


def markdown(card: Mapping[str, Any]) -> str:
    """The card for people: reports/model_card.md, the version's run in MLflow."""
    model = card["model"]
    parts = [
        f"# Model card: {cell(model['name'])} v{model['version']}",
        f"A {model['task']} model ({cell(model['estimator'])}).",
        "## Intended use\n\n"
        + f"{cell(card['intended_use'], 2000)}\n\nOwner: {cell(card['owner'], 500)}",
        _data_markdown(card["training_data"]),
        "## Holdout metrics\n\n"
        + markdown_table(
            ["metric", "value"],
            [[name, number(value)] for name, value in card["holdout_metrics"].items()],
            "lr",
        ),
        _gate_markdown(card.get("gate")),
        "## Feature profile\n\n" + _profile_table(card["feature_profile"]),
        "## Known limits\n\n"
        + "\n".join(f"- {cell(limit, 500)}" for limit in card["known_limits"]),
        "## Lineage\n\n"
        + markdown_table(
            ["what", "value"], [[key, f"`{cell(value)}`"] for key, value in card["lineage"].items()]
        ),
    ]
    return "\n\n".join(parts) + "\n"


def _data_markdown(data: Mapping[str, Any]) -> str:
    roles = data["feature_roles"]
    lines = [
        "## Training data",
        "",
        f"- source: `{cell(data['source'])}`"
        + (f" (S3 version `{cell(data['s3_version_id'])}`)" if data.get("s3_version_id") else "")
        + f", fingerprint `{cell(data['fingerprint'])}`",
        f"- rows: {data['train_rows']} for training, {data['holdout_rows']} in the frozen holdout",
        f"- features: {len(roles.get('features', []))}"
        + (
            f" (categorical: {cell(', '.join(roles['categorical']))})"
            if roles.get("categorical")
            else ""
        )
        + (f"; left out: {cell(', '.join(roles['dropped']))}" if roles.get("dropped") else ""),
        "",
    ]
    target = data["target"]
    if "classes" in target:
        rows = [
            [cell(label), seen["rows"], f"{seen['share']:.1%}"]
            for label, seen in target["classes"].items()
        ]
        lines.append(markdown_table(["class", "training rows", "share"], rows, "lrr"))
    else:
        lines.append(
            markdown_table(list(target), [[number(value) for value in target.values()]], "r" * 6)
        )
    return "\n".join(lines)


def _gate_markdown(gate: Mapping[str, Any] | None) -> str:
    if gate is None:
        return "## Gate\n\nNot evaluated yet: `evaluate` adds the gate's decision."
    against = gate["against_champion"]
    lines = [
        f"## Gate: {gate['decision']}",
        "",
        f"Against {'champion v' + str(against) if against is not None else 'no champion'} "
        f"on {gate['holdout_rows']} holdout rows, by {gate['primary_metric']}.",
    ]
    if gate["bootstrap_interval"] is not None:
        low, high = gate["bootstrap_interval"]
        lines.append(
            f"Paired bootstrap interval of candidate minus champion: [{low:+.4f}, {high:+.4f}]."
        )
    lines += ["", *[f"- {cell(reason, 500)}" for reason in gate["reasons"]]]
    return "\n".join(lines)


def _profile_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [
            cell(name),
            seen["kind"],
            f"{seen['missing_rate']:.1%}",
            number(seen.get("min")) if "min" in seen else "",
            number(seen.get("max")) if "max" in seen else "",
            seen.get("categories", ""),
        ]
        for name, seen in summary.items()
    ]
    header = ["feature", "kind", "missing", "min", "max", "categories"]
    return markdown_table(header, rows, "llrrrr")


# Where cards are kept


def log(registry: Registry, card: Mapping[str, Any]) -> None:
    """Log the card (JSON and Markdown) as artifacts of its version's run, replacing any before."""
    run_id = card["lineage"]["run_id"]
    registry.client.log_dict(run_id, dict(card), CARD_JSON)
    registry.client.log_text(run_id, markdown(card), CARD_MARKDOWN)


def read(registry: Registry, version: int) -> dict[str, Any] | None:
    """The card logged with `version`, or None for a version trained before model cards."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = registry.client.get_model_version(registry.model_name, str(version)).run_id
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{CARD_JSON}")
    except (MlflowException, OSError):
        return None


def write_report(reports_dir: Path, card: Mapping[str, Any]) -> Path:
    return reports.write_report(reports_dir, REPORT, dict(card), markdown(card))
