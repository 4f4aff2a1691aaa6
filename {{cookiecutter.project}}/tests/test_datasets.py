"""The data behind a training run, as MLflow datasets read back through the client (real sqlite
tracking store; a moto S3 server with bucket versioning for an S3 source)."""

from __future__ import annotations

import io
import json

import boto3
import pandas as pd
import pytest
from mlflow.entities import DatasetInput
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }} import data, datasets, model_card, storage, training
from {{ cookiecutter.package }}.errors import DataError
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import Settings, load_settings

from .conftest import write_params


def inputs(settings: Settings, run_id: str) -> dict[str, tuple[DatasetInput, dict[str, str]]]:
    """The run's dataset inputs by context, each with its tags as a dict."""
    run = MlflowClient(settings.tracking_uri).get_run(run_id)
    found = {}
    for dataset_input in run.inputs.dataset_inputs:
        tags = {tag.key: tag.value for tag in dataset_input.tags}
        found[tags["mlflow.data.context"]] = (dataset_input, tags)
    return found


def test_a_training_run_records_its_training_rows_and_holdout(settings, registry, frame):
    result = training.train(settings, registry, frame)
    x_train, _, x_holdout, _ = data.train_holdout_split(frame, settings.params.data)

    logged = inputs(settings, result.run_id)
    assert sorted(logged) == [datasets.HOLDOUT, datasets.TRAINING]
    for context, index in ((datasets.TRAINING, x_train.index), (datasets.HOLDOUT, x_holdout.index)):
        dataset_input, tags = logged[context]
        dataset, rows = dataset_input.dataset, frame.loc[index]
        assert tags[datasets.FINGERPRINT_TAG] == data.fingerprint(rows)
        assert dataset.digest == data.fingerprint(rows)[: datasets.MLFLOW_DIGEST_LENGTH]
        assert (dataset.source_type, json.loads(dataset.source)) == (
            "local",
            {"uri": settings.params.data.source},
        )
        assert json.loads(dataset.profile)["num_rows"] == len(rows)
        columns = [column["name"] for column in json.loads(dataset.schema)["mlflow_colspec"]]
        assert columns == [str(name) for name in frame.columns]
        assert datasets.S3_VERSION_TAG not in tags
    assert result.card["training_data"]["s3_version_id"] is None


@pytest.mark.integration
def test_an_s3_source_records_the_object_version_training_read(project, bucket, frame):
    """The version id finds the exact rows again after the key is overwritten."""
    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    source = f"s3://{bucket}/data/train.csv"
    data.write_table(frame, source)
    write_params(project, data={"source": source})
    settings = load_settings(project / "params.yaml")
    result = training.train(settings, Registry(settings), data.read_table(source))
    data.write_table(frame.head(100), source)  # the key moves on after training

    dataset_input, tags = inputs(settings, result.run_id)[datasets.TRAINING]
    assert (dataset_input.dataset.source_type, json.loads(dataset_input.dataset.source)) == (
        "s3",
        {"uri": source},
    )
    version = tags[datasets.S3_VERSION_TAG]
    assert version != storage.version_id(source)
    assert result.card["training_data"]["s3_version_id"] == version  # the card names it too
    assert f"(S3 version `{version}`)" in model_card.markdown(result.card)
    body = s3.get_object(Bucket=bucket, Key="data/train.csv", VersionId=version)["Body"].read()
    assert data.fingerprint(pd.read_csv(io.BytesIO(body))) == result.data_fingerprint

    s3.create_bucket(Bucket=f"{bucket}-plain")
    data.write_table(frame, f"s3://{bucket}-plain/train.csv")
    assert storage.version_id(f"s3://{bucket}-plain/train.csv") is None
    with pytest.raises(DataError, match=f"s3://{bucket}/nowhere.csv: cannot read from S3"):
        storage.version_id(f"s3://{bucket}/nowhere.csv")
