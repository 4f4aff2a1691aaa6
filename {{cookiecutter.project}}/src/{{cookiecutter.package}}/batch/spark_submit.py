"""The Spark engine as a job on a cluster, where there is no params.yaml:

    MLFLOW_TRACKING_URI=... spark-submit spark_submit.py --input URI --output URI --model-name NAME [--version N]

The version defaults to the champion. The master and Spark's settings are spark-submit's (or the
cluster's); the executors need this package installed (the wheel, e.g. `--py-files`). Prints the
summary as JSON; exits 2 with one line on bad input, as the CLI does. docs/batch.md shows EMR,
Databricks and Dataproc.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

# Absolute imports: spark-submit runs this file as a script, outside its package.
from {{ cookiecutter.package }} import registry
from {{ cookiecutter.package }}.batch import spark
from {{ cookiecutter.package }}.errors import PipelineError, SettingsError, StateError
from {{ cookiecutter.package }}.profile import categorical_features
from {{ cookiecutter.package }}.settings import Environment


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--input", required=True, help="CSV or Parquet: a path or URI")
    arguments.add_argument("--output", required=True, help="the Parquet output folder")
    arguments.add_argument("--model-name", required=True, help="the registered model")
    arguments.add_argument("--version", type=int, help="default: the champion")
    return arguments


def run(source: str, destination: str, model_name: str, version: int | None) -> dict:
    """Score `source` into `destination` with `model_name` v`version` (or its champion)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking_uri = Environment.read().tracking_uri
    if not tracking_uri:
        raise SettingsError("MLFLOW_TRACKING_URI is not set: the job reads the registry there")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if version is None:
        try:
            version = int(client.get_model_version_by_alias(model_name, registry.CHAMPION).version)
        except MlflowException:
            raise StateError(f"{model_name} has no champion: pass --version") from None
    with tempfile.TemporaryDirectory() as folder:
        verified = registry.download_verified(client, model_name, version, folder)
        categorical = categorical_features(registry.feature_profile(model_name, version))
        session = spark.start_session(None, {})
        return spark.score_file(session, verified, version, categorical, source, destination)


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        result = run(options.input, options.output, options.model_name, options.version)
    except PipelineError as error:
        print(f"spark_submit: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
