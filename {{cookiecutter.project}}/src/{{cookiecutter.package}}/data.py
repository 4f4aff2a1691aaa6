"""Load the data set, split it the same way every time, and fingerprint its content."""

from __future__ import annotations

import hashlib
import io
from pathlib import PurePosixPath
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from . import storage
from .errors import DataError

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


def split_features_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    if target not in frame.columns:
        raise DataError(f"target column {target!r} not found; columns are {list(frame.columns)}")
    return frame.drop(columns=[target]), frame[target]


def train_holdout_split(
    frame: pd.DataFrame, target: str, fraction: float
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """(X_train, y_train, X_holdout, y_holdout), the same for the same rows on every run."""
    features, labels = split_features_target(frame, target)
    mask = holdout_mask(features, fraction)
    if mask.all() or not mask.any():
        raise DataError(f"{len(frame)} rows are too few for a holdout of {fraction:.0%}")
    return features[~mask], labels[~mask], features[mask], labels[mask]
