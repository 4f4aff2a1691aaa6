"""What each feature takes, and how the service holds rows: the one check every row source shares.

A row reaches the model from a request model (JSON), a table, Arrow, or an online store; each turns
it into an array of `rows_dtype` and names what its features do not take with `misplaced_values`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..profile import is_categorical, takes_null


def rows_dtype(features: list[str], profile: Mapping[str, Mapping[str, Any]]) -> type:
    """How the service holds rows: float64 when every feature is a number (a null as NaN), else
    object (numbers as float, categories as str, a null as None)."""
    return object if any(is_categorical(profile[name]) for name in features) else np.float64


def value_kinds(
    features: list[str], profile: Mapping[str, Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: does it hold text, does the model take it null (once per model, not per table)."""
    text = np.array([is_categorical(profile[name]) for name in features], dtype=bool)
    nullable = np.array([takes_null(profile[name]) for name in features], dtype=bool)
    return text, nullable


def misplaced_values(
    rows: np.ndarray, features: list[str], text: np.ndarray, nullable: np.ndarray
) -> list[tuple[int, str, str]]:
    """(row, feature, problem) for each value its feature does not take (`value_kinds`): text for a
    number, a number for a category, an infinite number, a null where none is taken; float64 rows in
    one vector step. The model trusts the rows it gets to be finite (`batcher.trust_checked_rows`)."""
    if rows.dtype == np.float64:
        wrong = (np.isnan(rows) & ~nullable) | np.isinf(rows)
    else:
        missing = np.vectorize(lambda value: value is None, otypes=[bool])(rows)
        is_text = np.vectorize(lambda value: isinstance(value, str), otypes=[bool])(rows)
        infinite = np.vectorize(
            lambda value: isinstance(value, float) and math.isinf(value), otypes=[bool]
        )(rows)
        wrong = np.where(text, ~is_text & ~missing, is_text | infinite) | (missing & ~nullable)
    problems = []
    for row, index in zip(*np.nonzero(wrong), strict=True):
        expected = ("text" if text[index] else "a finite number") + (
            " or null" if nullable[index] else ""
        )
        problem = f"{features[index]}: should be {expected}, not {_shown(rows[row, index])}"
        problems.append((int(row), features[index], problem))
    return problems


def _shown(value: Any) -> str:
    """A value of a row as JSON would say it (infinity as Python does: JSON has none)."""
    if value is None or value != value:
        return "null"
    return repr(float(value)) if isinstance(value, np.floating) else repr(value)
