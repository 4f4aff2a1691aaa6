"""The data behind a run as MLflow datasets: which rows of which file (and which S3 object version)
made a model, found in the MLflow UI or through `MlflowClient().get_run(run_id).inputs`.

A dataset's digest is the project's own fingerprint (`data.fingerprint`) of its rows, cut to the 36
characters MLflow stores; the whole fingerprint is the input's `fingerprint` tag. With an s3:// source
in a versioned bucket, the object's version id is the `s3_version_id` tag: the exact bytes can be read
again after the key is overwritten.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pandas as pd

from . import data, storage
from .params import DataParams

if TYPE_CHECKING:
    from mlflow.data.pandas_dataset import PandasDataset

TRAINING, HOLDOUT = "training", "holdout"  # the inputs' contexts
FINGERPRINT_TAG = "fingerprint"
S3_VERSION_TAG = "s3_version_id"
MLFLOW_DIGEST_LENGTH = 36  # the longest digest MLflow's stores accept


def dataset(rows: pd.DataFrame, source: str, target: str, fingerprint: str) -> PandasDataset:
    """`rows` of the file `source` (as params name it) as an MLflow dataset: schema and row count
    (MLflow's profile) of their own, our fingerprint of them as the digest."""
    import mlflow

    return mlflow.data.from_pandas(
        rows,
        source=source,
        targets=target,
        name=source.rsplit("/", 1)[-1],
        digest=fingerprint[:MLFLOW_DIGEST_LENGTH],
    )


def input_tags(fingerprint: str, version_id: str | None) -> dict[str, str]:
    """The rows' whole fingerprint, and the S3 object's version when there is one."""
    tags = {FINGERPRINT_TAG: fingerprint}
    if version_id:
        tags[S3_VERSION_TAG] = version_id
    return tags


def source_version(source: str) -> str | None:
    """The version id of an s3:// source in a versioned bucket; None for a local file."""
    return storage.version_id(source) if storage.in_s3(source) else None


def log_training_data(
    frame: pd.DataFrame,
    train_index: pd.Index,
    holdout_index: pd.Index,
    params: DataParams,
    version_id: str | None,
) -> None:
    """Log the training rows and the holdout rows of `frame` (read from `data.source`, at S3 version
    `version_id` if any: `source_version`) as inputs of the active run, each with every column."""
    import mlflow

    source, target = params.source, params.target
    with warnings.catch_warnings():
        # MLflow warns that a local path fits two of its source types (the same class), and that
        # integer columns cannot take missing values in a model signature: neither applies here.
        warnings.simplefilter("ignore", UserWarning)
        for context, index in ((TRAINING, train_index), (HOLDOUT, holdout_index)):
            rows = frame.loc[index]
            fingerprint = data.fingerprint(rows)
            mlflow.log_input(
                dataset(rows, source, target, fingerprint),
                context=context,
                tags=input_tags(fingerprint, version_id),
            )
