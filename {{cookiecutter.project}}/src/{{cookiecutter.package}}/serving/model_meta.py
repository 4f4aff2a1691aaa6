"""What the service needs to know of a stored MLflow model before loading it.

Read from the model's files directly: importing mlflow here would add seconds to the start of the
serving process, which only needs the names (the workers import mlflow to load the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..profile import as_model_input, categorical_features, is_categorical
from .row_values import rows_dtype

NUMERIC_TYPES = {"double", "float", "long", "integer"}
TEXT_TYPE = "string"  # the signature's type of a categorical feature


@dataclass(frozen=True)
class ModelMeta:
    """The training columns in order, their profile, and what training saved for the service."""

    features: list[str]
    profile: dict[str, dict[str, Any]]
    # The training target's deciles saved with a regression model: its prediction histogram's buckets.
    prediction_buckets: tuple[float, ...] | None
    # The first row of the input example saved with the model: the example on the /docs page.
    example: dict[str, Any] | None

    @cached_property  # read on every model call
    def categorical(self) -> list[str]:
        """The features whose values are text categories, in training order."""
        return categorical_features(self.profile)

    def example_input(self) -> Any | None:
        """The input example's first row as the model is called with it, if one was saved."""
        if self.example is None:
            return None
        dtype = rows_dtype(self.features, self.profile)
        return self.model_input(np.array([[self.example[name] for name in self.features]], dtype))

    def model_input(self, rows: np.ndarray) -> Any:
        """What the model is called with: the rows themselves when every feature is a number, else
        a DataFrame of the training columns, numbers as float64 and categories as
        `profile.as_model_input` makes them for training (its encoders pick them by name)."""
        categorical = self.categorical
        if not categorical:
            return rows
        import pandas as pd

        frame = pd.DataFrame(rows, columns=self.features)
        numeric = [name for name in self.features if name not in categorical]
        frame[numeric] = frame[numeric].astype(np.float64)
        return as_model_input(frame, categorical)


def read_model_meta(model_dir: Path) -> ModelMeta:
    """The model's MLmodel file (signature and metadata) and input example, checked for serving."""
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    inputs = (meta.get("signature") or {}).get("inputs")
    specs = json.loads(inputs) if inputs else []
    if not specs or any("name" not in spec for spec in specs):
        raise RuntimeError(f"{model_dir}: the MLflow model has no column-based input signature")
    columns = [spec["name"] for spec in specs]
    metadata = meta.get("metadata") or {}
    profile = metadata.get("feature_profile") or {}
    unprofiled = [column for column in columns if column not in profile]
    if unprofiled:
        raise RuntimeError(f"{model_dir}: no training profile for features {unprofiled}")
    for spec in specs:
        expected = {TEXT_TYPE} if is_categorical(profile[spec["name"]]) else NUMERIC_TYPES
        if spec.get("type") not in expected:
            raise RuntimeError(
                f"feature {spec['name']!r} is {spec.get('type')} in the signature, but its "
                f"profile says {' or '.join(sorted(expected))}"
            )
    buckets = metadata.get("prediction_buckets")
    return ModelMeta(
        features=columns,
        profile=profile,
        prediction_buckets=tuple(buckets) if buckets else None,
        example=example_row(model_dir),
    )


def example_row(model_dir: Path) -> dict[str, Any] | None:
    """The first row of the input example saved with the model, if any."""
    path = model_dir / "input_example.json"
    if not path.exists():
        return None
    example = json.loads(path.read_text())
    return dict(zip(example["columns"], example["data"][0], strict=True))
