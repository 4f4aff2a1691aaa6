"""What the service needs to know of a stored MLflow model before loading it.

Read from the model's files directly: importing mlflow here would add seconds to the start of the
serving process, which only needs the names (the workers import mlflow to load the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NUMERIC_TYPES = {"double", "float", "long", "integer"}


@dataclass(frozen=True)
class ModelMeta:
    """The training columns in order, their profile, and what training saved for the service."""

    features: list[str]
    profile: dict[str, dict[str, Any]]
    # The training target's deciles saved with a regression model: its prediction histogram's buckets.
    prediction_buckets: tuple[float, ...] | None
    # The first row of the input example saved with the model: the example on the /docs page.
    example: dict[str, float] | None


def read_model_meta(model_dir: Path) -> ModelMeta:
    """The model's MLmodel file (signature and metadata) and input example, checked for serving."""
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    inputs = (meta.get("signature") or {}).get("inputs")
    specs = json.loads(inputs) if inputs else []
    if not specs or any("name" not in spec for spec in specs):
        raise RuntimeError(f"{model_dir}: the MLflow model has no column-based input signature")
    for spec in specs:
        if spec.get("type") not in NUMERIC_TYPES:
            raise RuntimeError(
                f"feature {spec['name']!r} is {spec.get('type')}; only numbers serve"
            )
    columns = [spec["name"] for spec in specs]
    metadata = meta.get("metadata") or {}
    profile = metadata.get("feature_profile") or {}
    unprofiled = [column for column in columns if column not in profile]
    if unprofiled:
        raise RuntimeError(f"{model_dir}: no training profile for features {unprofiled}")
    buckets = metadata.get("prediction_buckets")
    return ModelMeta(
        features=columns,
        profile=profile,
        prediction_buckets=tuple(buckets) if buckets else None,
        example=example_row(model_dir),
    )


def example_row(model_dir: Path) -> dict[str, float] | None:
    """The first row of the input example saved with the model, if any."""
    path = model_dir / "input_example.json"
    if not path.exists():
        return None
    example = json.loads(path.read_text())
    return dict(zip(example["columns"], example["data"][0], strict=True))
