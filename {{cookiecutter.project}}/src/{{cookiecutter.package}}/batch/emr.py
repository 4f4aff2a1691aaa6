"""Batch scoring on AWS EMR Serverless: the Spark entry point submitted to an application, waited for.

The application's image holds this project and its dependencies (docs/emr-serverless.md); each run
gets the entry point (`batch/spark_submit.py` of the installed package), uploaded under
`batch.emr_serverless.code` and named by its digest, so a run always names the exact file it ran.
The champion's version is resolved here, before the run starts: the job scores that version even if
the champion moves while it runs. The functions take a boto3 `emr-serverless` client (`client()`);
nothing here reads the environment.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from .. import storage
from ..errors import BatchJobFailed, SettingsError
from ..params import EmrServerlessParams

ENTRY_POINT = "spark_submit.py"
SUCCESS = "SUCCESS"
TERMINAL = frozenset({SUCCESS, "FAILED", "CANCELLED"})


@functools.cache
def client() -> Any:
    """The process's boto3 EMR Serverless client, made as `storage.s3_client` is: boto3 reads the
    AWS_* settings (AWS_ENDPOINT_URL for a stand-in server) when it is made."""
    import boto3

    return boto3.client("emr-serverless")


def upload_entry_point(code_prefix: str) -> str:
    """The installed package's Spark entry point, uploaded under `code_prefix`; its s3:// location."""
    content = resources.files(__package__).joinpath(ENTRY_POINT).read_bytes()
    digest = hashlib.sha256(content).hexdigest()[:16]
    location = storage.join(code_prefix, f"spark_submit-{digest}.py")
    storage.write_bytes(location, content)
    return location


def require_reachable(source: str, destination: str, tracking_uri: str) -> None:
    """SettingsError unless the job, far from this machine, can reach its input, output and registry."""
    for what, location in (("input", source), ("output", destination)):
        if not storage.in_s3(location):
            raise SettingsError(
                f"batch {what} {location}: EMR Serverless reads and writes S3 only; give an s3:// URI"
            )
    if not tracking_uri.startswith(("http://", "https://")):
        raise SettingsError(
            f"MLFLOW_TRACKING_URI {tracking_uri}: EMR Serverless cannot reach this registry; "
            "set it to the tracking server's URL"
        )


def job_driver(
    emr: EmrServerlessParams,
    entry_point: str,
    run: dict[str, Any],
    tracking_uri: str,
) -> dict[str, Any]:
    """`start_job_run`'s jobDriver: the entry point, its arguments, and spark-submit parameters that
    give the driver the registry's URL and make the driver and executors run the image's Python."""
    arguments = ["--input", run["input"], "--output", run["output"]]
    arguments += ["--model-name", run["model_name"], "--version", str(run["model_version"])]
    parameters = [
        f"--conf spark.emr-serverless.driverEnv.MLFLOW_TRACKING_URI={tracking_uri}",
        f"--conf spark.emr-serverless.driverEnv.PYSPARK_PYTHON={emr.python}",
        f"--conf spark.executorEnv.PYSPARK_PYTHON={emr.python}",
        emr.spark_submit_parameters,
    ]
    return {
        "sparkSubmit": {
            "entryPoint": entry_point,
            "entryPointArguments": arguments,
            "sparkSubmitParameters": " ".join(part for part in parameters if part.strip()),
        }
    }


def start(emr_client: Any, emr: EmrServerlessParams, driver: dict[str, Any], name: str) -> str:
    """Start the run; its job run id."""
    request: dict[str, Any] = {
        "applicationId": emr.application_id,
        "executionRoleArn": emr.execution_role_arn,
        "jobDriver": driver,
        "name": name,
        "executionTimeoutMinutes": emr.timeout_minutes,
    }
    if emr.logs:
        logs = {"s3MonitoringConfiguration": {"logUri": emr.logs.rstrip("/") + "/"}}
        request["configurationOverrides"] = {"monitoringConfiguration": logs}
    return emr_client.start_job_run(**request)["jobRunId"]


def wait(
    emr_client: Any,
    application_id: str,
    job_run_id: str,
    timeout_seconds: float,
    poll_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, str]:
    """(state, state details) once the run ends; past the timeout, the run is cancelled and its state
    is CANCELLED with the timeout as its details."""
    deadline = clock() + timeout_seconds
    while True:
        run = emr_client.get_job_run(applicationId=application_id, jobRunId=job_run_id)["jobRun"]
        if run["state"] in TERMINAL:
            return run["state"], run.get("stateDetails") or ""
        if clock() >= deadline:
            emr_client.cancel_job_run(applicationId=application_id, jobRunId=job_run_id)
            return (
                "CANCELLED",
                f"no end after {timeout_seconds:.0f} s (was {run['state']}): cancelled",
            )
        time.sleep(min(poll_seconds, max(deadline - clock(), 0)))


def submit(
    emr_client: Any, emr: EmrServerlessParams, run: dict[str, Any], tracking_uri: str
) -> dict[str, Any]:
    """Upload the entry point, start the run, wait for it; the batch report (whatever its end).

    `run` holds input, output, model_name and model_version.
    """
    require_reachable(run["input"], run["output"], tracking_uri)
    entry_point = upload_entry_point(emr.code)
    driver = job_driver(emr, entry_point, run, tracking_uri)
    name = f"batch-{run['model_name']}-v{run['model_version']}"
    started = time.monotonic()
    job_run_id = start(emr_client, emr, driver, name)
    state, details = wait(
        emr_client, emr.application_id, job_run_id, emr.timeout_minutes * 60, emr.poll_seconds
    )
    return {
        "engine": "emr-serverless",
        "application_id": emr.application_id,
        "job_run_id": job_run_id,
        "state": state,
        "state_details": details,
        "seconds": round(time.monotonic() - started, 1),
        "entry_point": entry_point,
        **{key: run[key] for key in ("input", "output", "model_name", "model_version")},
    }


def require_success(report: dict[str, Any]) -> None:
    """BatchJobFailed naming the job run, unless it succeeded."""
    if report["state"] != SUCCESS:
        raise BatchJobFailed(
            f"EMR Serverless job run {report['job_run_id']} of application "
            f"{report['application_id']} ended {report['state']}: "
            f"{report['state_details'] or 'no details'} (its logs: the application's job runs)"
        )
