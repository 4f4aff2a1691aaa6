"""Load the data set, split it the same way every time, and fingerprint its content."""

from __future__ import annotations

import hashlib
import io
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from . import storage
from .errors import DataError
from .params import DataParams
from .profile import as_model_input, categorical_columns

if TYPE_CHECKING:
    from .settings import Settings

_READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet}


def suffix(location: str) -> str:
    found = PurePosixPath(urlparse(location).path).suffix.lower()
    if found not in _READERS:
        raise DataError(f"{location}: unsupported file type {found!r}; use .csv or .parquet")
    return found


def read_table(location: str) -> pd.DataFrame:
    """Read a CSV or Parquet file from a local path or an s3:// URI (`storage`)."""
    reader = _READERS[suffix(location)]
    return reader(io.BytesIO(storage.read_bytes(location)))


def training_table(settings: Settings) -> pd.DataFrame:
    """The rows validation, training, evaluation and drift read: data.source as it is
{%- if cookiecutter.feature_store == "feast" %}, or, with
    a feature store in params, its labels joined point-in-time with their features
    (`feature_store.training_table`).{% else %}.{% endif %}"""
{%- if cookiecutter.feature_store == "feast" %}
    if settings.params.feature_store is not None:
        from . import feature_store  # Feast takes seconds to import: only what reads the data pays

        return feature_store.training_table(settings)
{%- endif %}
    return read_table(settings.resolve(settings.params.data.source))


def training_source(settings: Settings) -> str:
    """Where `training_table` comes from, as reports name it."""
{%- if cookiecutter.feature_store == "feast" %}
    if (store := settings.params.feature_store) is not None:
        return (
            f"{settings.params.data.source} joined with Feast feature service "
            f"{store.feature_service} ({store.repo})"
        )
{%- endif %}
    return settings.params.data.source


def write_table(frame: pd.DataFrame, location: str) -> None:
    """Write CSV or Parquet to a local path (creating folders) or an s3:// URI (`storage`)."""
    file_type = suffix(location)
    buffer = io.BytesIO()
    if file_type == ".csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    storage.write_bytes(location, buffer.getvalue())


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the content (column names, dtypes, values), whatever file format it came from."""
    digest = hashlib.sha256()
    digest.update(repr([(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def holdout_mask(features: pd.DataFrame, fraction: float) -> np.ndarray:
    """True for rows in the frozen holdout, decided by a stable hash of each row's feature values.

    A row's side never depends on its position or on the other rows, so appending data never moves an
    old row into training, and two models evaluated on the same data see exactly the same holdout.
    """
    buckets = pd.util.hash_pandas_object(features, index=False).to_numpy() % 10_000
    return buckets < round(fraction * 10_000)


def feature_roles(columns: list[str], params: DataParams, source: str) -> dict[str, list[str]]:
    """{"features": [...], "dropped": [...]}: what the model reads and what it leaves out, checked
    against the columns of `source` (a column params names that is not there is a DataError)."""
    if params.target not in columns:
        raise DataError(
            f"data.target {params.target!r} is not a column of {source}; columns are {columns}"
        )
    for field, listed in (("data.features", params.features or []), ("data.drop", params.drop)):
        if missing := [name for name in listed if name not in columns]:
            raise DataError(
                f"{field} lists {missing}, not columns of {source}; columns are {columns}"
            )
    left_out = {params.target, *params.drop}
    features = params.features or [name for name in columns if name not in left_out]
    if not features:
        raise DataError(
            f"{source} has no feature left once data.target and data.drop are set aside"
        )
    dropped = [name for name in columns if name not in features and name != params.target]
    return {"features": features, "dropped": dropped}


def missing_targets(frame: pd.DataFrame, params: DataParams, source: str) -> int:
    """How many rows have no target; a DataError above data.max_missing_target_share."""
    missing = int(frame[params.target].isna().sum()) if params.target in frame.columns else 0
    if missing > params.max_missing_target_share * len(frame):
        raise DataError(
            f"{missing} of {len(frame)} rows of {source} have no {params.target!r} "
            f"(data.target): more than data.max_missing_target_share "
            f"({params.max_missing_target_share:.0%})"
        )
    return missing


def split_features_target(
    frame: pd.DataFrame, params: DataParams, source: str = "the data"
) -> tuple[pd.DataFrame, pd.Series]:
    """The feature columns (`feature_roles`), as the model takes them, and the target, without the
    rows that have no target."""
    roles = feature_roles([str(name) for name in frame.columns], params, source)
    labelled = frame[frame[params.target].notna()]
    return model_input(labelled[roles["features"]]), labelled[params.target]


def model_input(features: pd.DataFrame) -> pd.DataFrame:
    """Columns read from a file as a model takes them (`profile.as_model_input`)."""
    return as_model_input(features, categorical_columns(features))


def train_holdout_split(
    frame: pd.DataFrame, params: DataParams, source: str = "the data"
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """(X_train, y_train, X_holdout, y_holdout), the same for the same rows on every run."""
    features, labels = split_features_target(frame, params, source)
    mask = holdout_mask(features, params.holdout_fraction)
    if mask.all() or not mask.any():
        raise DataError(
            f"{len(features)} rows are too few for a holdout of {params.holdout_fraction:.0%}"
        )
    return features[~mask], labels[~mask], features[mask], labels[mask]
