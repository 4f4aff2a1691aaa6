"""Load the data set, split it the same way every time, and fingerprint its content."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import boto3
import numpy as np
import pandas as pd

from .errors import DataError

_READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet}


def suffix(location: str) -> str:
    found = PurePosixPath(urlparse(location).path).suffix.lower()
    if found not in _READERS:
        raise DataError(f"{location}: unsupported file type {found!r}; use .csv or .parquet")
    return found


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc or not parsed.path.strip("/"):
        raise DataError(f"{uri}: an S3 location needs a bucket and a key, s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client() -> Any:
    """A boto3 S3 client for the AWS_* settings as they are now, made once per setting.

    Making a client takes tens of milliseconds, and a day of prediction log is thousands of small
    files; boto3 clients may be shared between threads.
    """
    aws = tuple(
        sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_"))
    )
    return _s3_client_for(aws)


@functools.lru_cache(maxsize=4)
def _s3_client_for(aws_settings: tuple[tuple[str, str], ...]) -> Any:
    return boto3.client("s3")


def s3_object(location: str) -> bytes:
    """The content of an s3:// object (boto3, so AWS_* settings apply); DataError naming it if not."""
    bucket, key = _split_s3(location)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        raise DataError(f"{location}: cannot read from S3: {error}") from error


def read_table(location: str) -> pd.DataFrame:
    """Read a CSV or Parquet file from a local path or an s3:// URI (boto3, so AWS_* settings apply)."""
    reader = _READERS[suffix(location)]
    if location.startswith("s3://"):
        return reader(io.BytesIO(s3_object(location)))
    try:
        return reader(location)
    except FileNotFoundError:
        raise DataError(f"{location}: file not found") from None


def write_table(frame: pd.DataFrame, location: str) -> None:
    """Write CSV or Parquet to a local path (creating folders) or an s3:// URI."""
    file_type = suffix(location)
    buffer = io.BytesIO()
    if file_type == ".csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    if location.startswith("s3://"):
        bucket, key = _split_s3(location)
        s3_client().put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


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


def publish_file(local: Path, location: str) -> None:
    """Move a finished local file to its destination: an s3:// URI (upload) or a local path."""
    if location.startswith("s3://"):
        bucket, key = _split_s3(location)
        s3_client().upload_file(str(local), bucket, key)
        return
    destination = Path(location)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, destination)
