"""Batch scoring submitted to EMR Serverless (`batch-submit`), offline.

A moto server stands in for AWS (S3 and EMR Serverless): nothing runs Spark here, and moto reports
every job run SUCCESS at once, so these tests check what is submitted, where the entry point lands,
and what is reported; that the Spark job itself works is the other engine's tests' business. The
registry is a real MLflow server (the job, far away, could not reach a sqlite file).
"""

from __future__ import annotations

import json
import re
from importlib import resources

import boto3
import pytest
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }} import cli
from {{ cookiecutter.package }}.batch import emr
from {{ cookiecutter.package }}.errors import BatchJobFailed, SettingsError
from {{ cookiecutter.package }}.params import EmrServerlessParams

from .conftest import write_params
from .test_s3 import mlflow_server  # noqa: F401 (a fixture)

ROLE = "arn:aws:iam::123456789012:role/emr-batch"


@pytest.fixture
def application(bucket, moto_endpoint, monkeypatch) -> str:
    """An EMR Serverless application in moto, with the package's client pointed at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EMR_SERVERLESS", moto_endpoint)
    emr.client.cache_clear()
    made = boto3.client("emr-serverless").create_application(
        name="batch", releaseLabel="emr-7.5.0", type="SPARK"
    )
    yield made["applicationId"]
    emr.client.cache_clear()


def emr_params(bucket: str, application: str, **changes) -> dict:
    return {
        "application_id": application,
        "execution_role_arn": ROLE,
        "code": f"s3://{bucket}/code",
        "logs": f"s3://{bucket}/emr-logs",
        "python": "/usr/bin/python3.12",
        "spark_submit_parameters": "--conf spark.executor.cores=2",
        **changes,
    }


@pytest.mark.integration
def test_batch_submit_runs_the_champion_on_emr_serverless_and_reports_it(
    project,
    settings,
    bucket,
    application,
    mlflow_server,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # Both URIs: MLflow's process-wide registry URI may still be an earlier test's.
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = settings.params.registry.model_name
    client.create_registered_model(name)
    for _ in range(2):  # the job never loads the model: any source will do
        client.create_model_version(name, f"s3://{bucket}/models/unused")
    client.set_registered_model_alias(name, "champion", "2")
    source, destination = f"s3://{bucket}/in/rows.csv", f"s3://{bucket}/out/scored.parquet"
    write_params(
        project,
        batch={"output": destination, "emr_serverless": emr_params(bucket, application)},
    )

    assert cli.main(["batch-submit", "--input", source]) == cli.EXIT_OK

    report = json.loads((project / "reports" / "batch.json").read_text())
    assert (report["state"], report["model_version"]) == ("SUCCESS", 2)
    assert (report["input"], report["output"]) == (source, destination)
    shipped = resources.files(emr.__package__).joinpath(emr.ENTRY_POINT).read_bytes()
    code = boto3.client("s3").get_object(Bucket=bucket, Key=report["entry_point"].split("/", 3)[3])
    assert report["entry_point"].startswith(f"s3://{bucket}/code/spark_submit-")
    assert code["Body"].read() == shipped
    run = boto3.client("emr-serverless").get_job_run(
        applicationId=application, jobRunId=report["job_run_id"]
    )["jobRun"]
    assert run["executionRole"] == ROLE and run["executionTimeoutMinutes"] == 60
    submitted = run["jobDriver"]["sparkSubmit"]
    assert submitted["entryPoint"] == report["entry_point"]
    assert submitted["entryPointArguments"] == [
        "--input", source, "--output", destination,
        "--model-name", name, "--version", "2",
    ]  # fmt: skip
    parameters = submitted["sparkSubmitParameters"]
    assert f"spark.emr-serverless.driverEnv.MLFLOW_TRACKING_URI={mlflow_server}" in parameters
    assert "spark.executorEnv.PYSPARK_PYTHON=/usr/bin/python3.12" in parameters
    assert parameters.endswith("--conf spark.executor.cores=2")
    logs = run["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]
    assert logs == {"logUri": f"s3://{bucket}/emr-logs/"}

    summary = project / "step-summary.md"  # where GitHub (and act, running this suite) wants it
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert cli.main(["summary", "--sections", "batch"]) == cli.EXIT_OK
    shown = summary.read_text()
    assert "### Batch scoring on EMR Serverless: SUCCESS with v2" in shown
    assert f"job run `{report['job_run_id']}`" in shown


@pytest.mark.integration
def test_a_cancelled_run_is_an_error_naming_the_job_run(bucket, application):
    """Cancelled in moto between the start and the wait, as someone in the AWS console would."""
    params = EmrServerlessParams(**emr_params(bucket, application))
    driver = emr.job_driver(params, f"s3://{bucket}/code/x.py", RUN, "https://mlflow.example.com")
    job_run_id = emr.start(emr.client(), params, driver, "cancelled")
    boto3.client("emr-serverless").cancel_job_run(applicationId=application, jobRunId=job_run_id)

    state, _ = emr.wait(emr.client(), application, job_run_id, timeout_seconds=60, poll_seconds=1)

    assert state == "CANCELLED"
    with pytest.raises(BatchJobFailed, match=f"job run {job_run_id} .* ended CANCELLED"):
        emr.require_success({"job_run_id": job_run_id, "application_id": application,
                             "state": state, "state_details": ""})  # fmt: skip


RUN = {
    "input": "s3://b/in.csv",
    "output": "s3://b/out.parquet",
    "model_name": "m",
    "model_version": 3,
}


class StuckThenFailing:
    """A stand-in client, the one here: moto ends every run SUCCESS at once and cannot make one fail
    or run on, so FAILED and the timeout are played by this object, the rest by moto above."""

    def __init__(self, states: list[str]) -> None:
        self.states, self.cancelled = states, []

    def get_job_run(self, applicationId: str, jobRunId: str) -> dict:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"jobRun": {"state": state, "stateDetails": f"{state.lower()}: executor lost"}}

    def cancel_job_run(self, applicationId: str, jobRunId: str) -> None:
        self.cancelled.append(jobRunId)


def test_failed_and_timed_out_runs_end_in_errors_with_their_details():
    failing = StuckThenFailing(["SCHEDULED", "RUNNING", "FAILED"])
    assert emr.wait(failing, "app", "run-1", 60, 0.01) == ("FAILED", "failed: executor lost")
    assert failing.cancelled == []

    stuck = StuckThenFailing(["RUNNING"])
    state, details = emr.wait(stuck, "app", "run-2", timeout_seconds=0.05, poll_seconds=0.01)
    assert (state, stuck.cancelled) == ("CANCELLED", ["run-2"])
    assert details == "no end after 0 s (was RUNNING): cancelled"
    report = {
        "job_run_id": "run-2",
        "application_id": "app",
        "state": state,
        "state_details": details,
    }
    with pytest.raises(
        BatchJobFailed, match="job run run-2 of application app ended CANCELLED: no end"
    ):
        emr.require_success(report)


def test_what_emr_cannot_use_is_refused_by_name(project, capsys):
    assert cli.main(["batch-submit"]) == cli.EXIT_ERROR  # params.yaml's default: null
    assert "batch.emr_serverless is not set; `batch` scores here" in capsys.readouterr().err
    bad = emr_params("bucket", "00f1abcd2ef3gh4i", execution_role_arn="emr-batch")
    write_params(project, batch={"emr_serverless": bad})
    assert cli.main(["batch-submit"]) == cli.EXIT_ERROR
    assert "batch.emr_serverless.execution_role_arn" in capsys.readouterr().err

    with pytest.raises(
        SettingsError, match=re.escape("batch input data/rows.csv: EMR Serverless reads")
    ):
        emr.require_reachable("data/rows.csv", "s3://b/out.parquet", "https://mlflow.example.com")
    with pytest.raises(
        SettingsError, match=re.escape("MLFLOW_TRACKING_URI sqlite:///mlflow.db: EMR")
    ):
        emr.require_reachable("s3://b/in.csv", "s3://b/out.parquet", "sqlite:///mlflow.db")
