"""The feature profile: what training saw of each feature, written by training, enforced by the
service, read by monitoring.

Training records `feature_profile` (and, for a regression, `prediction_buckets`) in the MLmodel file;
the service refuses values beyond `hard_bounds` as input errors and finds the rest of what training
never saw with `ProfileCheck` (its out_of_profile policy flags or refuses them: a number beyond the
range, a category training never met); monitoring treats a feature with at most
PROFILE_MAX_CATEGORIES values as categorical.

Imports only numpy at module level: the serving process loads it, and pandas is training's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# A numeric feature with at most this many distinct values is profiled as categorical.
PROFILE_MAX_CATEGORIES = 10
# Values further than this many training ranges beyond the training min or max are refused as input
# errors whatever the out_of_profile policy: no real feature is that far, and the model's arithmetic
# may overflow (StandardScaler on 1e308 does).
HARD_BOUND_RANGES = 10


def prediction_buckets(target: pd.Series, shares: int = 10) -> list[float]:
    """Bounds that cut the training target into `shares` equal parts: buckets of the service's
    histogram of regression predictions, so a shift of the predictions shows in every part."""
    inner = np.linspace(0, 1, shares + 1)[1:-1]
    return np.unique(np.quantile(target.to_numpy(dtype=np.float64), inner)).tolist()


def categorical_columns(features: pd.DataFrame) -> list[str]:
    """The features the model takes as categories: text columns (object, string or category dtype).

    Decided here once, for training, the profile and every reader of the profile (`is_categorical`).
    Booleans and numbers stay numeric; a numeric column of few values is still profiled with its
    `categories`, so the service and monitoring treat its values as such.
    """
    import pandas as pd

    return [
        str(name) for name in features.columns if not pd.api.types.is_numeric_dtype(features[name])
    ]


def as_model_input(features: pd.DataFrame, categorical: Iterable[str]) -> pd.DataFrame:
    """`features` as the model takes them: each category as text, each gap of a category as NaN.

    scikit-learn's encoders take None (a gap as JSON and Arrow give it) and NaN (as pandas reads it
    from a file) for two different categories, and 3 and "3" for two more. Training, batch scoring
    and the service all pass their rows through here.
    """
    as_text = {
        name: features[name].astype(str).where(features[name].notna()) for name in categorical
    }
    return features.assign(**as_text) if as_text else features


def is_categorical(stats: Mapping[str, Any]) -> bool:
    """Whether a feature of a profile holds text categories (rather than numbers)."""
    return stats.get("kind") == "categorical"


def categorical_features(profile: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The features a model's profile records as categories, in its order."""
    return [name for name, stats in profile.items() if is_categorical(stats)]


def feature_profile(features: pd.DataFrame, numbers_nullable: bool) -> dict[str, dict]:
    """What the model saw of each feature: its kind, whether it may be missing, and its values.

    Numeric: range, mean, spread, missing share, and categories (a few distinct values). Categorical:
    missing share, every category seen (sorted) and its share of the rows that have one; always
    nullable, as the model fills a gap with the category "missing". `numbers_nullable`: the model
    fills missing numbers (or its estimator takes them). Recorded with the model at training; the
    service judges requests against it (out_of_profile) and monitoring compares served traffic with it.
    """
    import pandas as pd

    categorical = set(categorical_columns(features))
    profile = {}
    for name in features.columns:
        if name in categorical:
            present = features[name].dropna().astype(str)
            shares = present.value_counts(normalize=True).sort_index()
            profile[str(name)] = {
                "kind": "categorical",
                "nullable": True,
                "missing_rate": float(features[name].isna().mean()),
                "categories": shares.index.tolist(),
                "shares": {str(category): float(share) for category, share in shares.items()},
            }
            continue
        column = pd.to_numeric(features[name], errors="coerce")
        present = column.dropna()
        distinct = np.unique(present.to_numpy(dtype=np.float64))
        profile[str(name)] = {
            "kind": "numeric",
            "nullable": numbers_nullable,
            "min": float(present.min()),
            "max": float(present.max()),
            "mean": float(present.mean()),
            "std": float(present.std(ddof=0)),
            "missing_rate": float(column.isna().mean()),
            "categories": distinct.tolist() if len(distinct) <= PROFILE_MAX_CATEGORIES else None,
        }
    return profile


def hard_bounds(stats: Mapping[str, Any]) -> tuple[float, float]:
    """The lowest and highest value a feature may take at all (HARD_BOUND_RANGES), from its profile."""
    spread = (stats["max"] - stats["min"]) or abs(stats["max"]) or 1.0
    return stats["min"] - HARD_BOUND_RANGES * spread, stats["max"] + HARD_BOUND_RANGES * spread


def takes_null(stats: Mapping[str, Any]) -> bool:
    """Whether the model takes a missing value for a feature (profiles before issue 17: no)."""
    return bool(stats.get("nullable", False))


class ProfileCheck:
    """Which values of a batch of rows lie outside the training profile: beyond a numeric feature's
    range, or not one of its categories (numbers or, for a categorical feature, strings). A missing
    value is never outside. The profile is turned into arrays once, so a request of numbers only
    pays a few vector comparisons."""

    def __init__(self, features: list[str], profile: Mapping[str, Mapping[str, Any]]) -> None:
        self.features = features
        self.numeric = [i for i, name in enumerate(features) if not is_categorical(profile[name])]
        self.lowest = np.array([profile[features[i]]["min"] for i in self.numeric])
        self.highest = np.array([profile[features[i]]["max"] for i in self.numeric])
        self.numeric_categories = {
            position: np.array(profile[features[index]]["categories"])
            for position, index in enumerate(self.numeric)
            if profile[features[index]].get("categories")
        }
        self.text_categories = {
            index: frozenset(profile[name]["categories"])
            for index, name in enumerate(features)
            if is_categorical(profile[name])
        }

    def outside(self, rows: np.ndarray) -> dict[int, list[str]]:
        """The rows (by position) holding values training never saw, and the features concerned.

        `rows` as the service holds them: float64 when every feature is a number, else dtype object.
        Only rows with any such value are listed: walking every row of a 1,000-row batch in Python
        would cost about a millisecond, more than the model takes.
        """
        outside = self._numbers_outside(rows)
        for index, categories in self.text_categories.items():
            outside[:, index] = [
                isinstance(value, str) and value not in categories for value in rows[:, index]
            ]
        return {
            int(row): [self.features[index] for index in np.flatnonzero(outside[row])]
            for row in np.flatnonzero(outside.any(axis=1))
        }

    def _numbers_outside(self, rows: np.ndarray) -> np.ndarray:
        """Which values of the numeric features lie outside, as a mask the shape of `rows`."""
        numbers = rows[:, self.numeric].astype(np.float64) if self.text_categories else rows
        beyond = (numbers < self.lowest) | (numbers > self.highest)  # NaN compares as False
        for position, categories in self.numeric_categories.items():
            column = numbers[:, position]
            unseen = ~np.isclose(column[:, None], categories).any(axis=1)
            beyond[:, position] |= unseen & ~np.isnan(column)
        if not self.text_categories:
            return beyond
        outside = np.zeros(rows.shape, dtype=bool)
        outside[:, self.numeric] = beyond
        return outside


def outside_problem(value: Any, stats: Mapping[str, Any]) -> str:
    """Why a value ProfileCheck found is outside the profile, naming what training saw instead."""
    if is_categorical(stats):
        return f"{value!r} is not a category training saw ({', '.join(stats['categories'])})"
    categories = f", categories {stats['categories']}" if stats.get("categories") else ""
    return (
        f"{value:g} is outside what training saw ({stats['min']:g} to {stats['max']:g}{categories})"
    )
