"""The Spark batch engine against the pandas one: the same rows, predictions, probabilities, columns
and types; the spark-submit entry point run for real; a tampered model refused.

Real parts: a sqlite MLflow registry with a local artifact store, Spark on `local[2]` (one JVM on
this machine: a cluster, EMR, Databricks or Dataproc cannot run here, nor S3 through Spark, whose
S3A jars pyspark does not ship). Skipped without the spark extra; without Java, failed under CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import batch, cli, data
from {{ cookiecutter.package }}.batch import spark, spark_submit
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params

pytestmark = pytest.mark.spark
SITE = "site"  # the text category added to the bundled data


@pytest.fixture(autouse=True)
def spark_installed() -> None:
    """Skip without the spark extra (optional: `make test` in ci.yml does not install it; `make
    test-spark` does). With it but without Java: skip, and fail under CI, which must have both."""
    if importlib.util.find_spec("pyspark") is None:
        pytest.skip("the spark extra is not installed: make test-spark installs it and runs these")
    if shutil.which("java") is None:
        message = "the Spark engine needs Java 17 (apt-get install openjdk-17-jre-headless)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def trained(project: Path, frame: pd.DataFrame) -> Path:
    """The bundled data with a text category ("01" must stay text) and gaps, registered as v1."""
    rng = np.random.default_rng(3)
    frame = frame.assign(**{SITE: rng.choice(["north", "south", "01"], len(frame))})
    frame.loc[rng.random(len(frame)) < 0.1, SITE] = None
    first_feature = frame.columns[0]
    frame.loc[rng.random(len(frame)) < 0.1, first_feature] = np.nan
    source = project / "data" / "sites.csv"
    data.write_table(frame, str(source))
    write_params(
        project,
        data={"source": "data/sites.csv"},
        validation={"suite": "validation/sites.json"},
        # Small input splits: the file is scored in several partitions, on both workers.
        batch={
            "input": "data/sites.csv",
            "spark_master": "local[2]",
            "spark_conf": {"spark.sql.files.maxPartitionBytes": source.stat().st_size // 3},
        },
        feature_store=None,  # a file with the features in it
    )
    assert run("suggest-suite", "--use") == cli.EXIT_OK
    assert run("train") == cli.EXIT_OK
    return source


def test_both_engines_score_the_same_rows_alike(project, frame):
    trained(project, frame)
    outputs = {engine: project / "reports" / f"{engine}.parquet" for engine in ("pandas", "spark")}
    for engine, output in outputs.items():
        assert run("batch", "--version", "1", "--engine", engine, "--output", str(output)) == 0
    pandas_rows, spark_rows = (pd.read_parquet(output) for output in outputs.values())
    assert len(spark_rows) == len(frame) and len(list(outputs["spark"].glob("part-*"))) > 1
    assert (outputs["spark"] / "_SUCCESS").exists()
    assert not list(outputs["spark"].parent.glob("_staged-*"))
    assert list(spark_rows.columns) == list(pandas_rows.columns)
    assert spark_rows[batch.SCORED_AT].notna().all()
    # Labels and inputs alike; numbers to the last bits BLAS may round differently for batches of
    # other sizes (a regression's predictions: 3 of 442 rows differed, by less than 1e-12).
    pd.testing.assert_frame_equal(
        spark_rows.drop(columns=batch.SCORED_AT),
        pandas_rows.drop(columns=batch.SCORED_AT),
        check_exact=False,
        rtol=1e-12,
        atol=0,
    )
    assert spark_rows[SITE].isna().any() and "01" in set(spark_rows[SITE])
    if load_settings(project / "params.yaml").params.task == "classification":
        probabilities = [name for name in spark_rows if name.startswith(batch.PROBABILITY_PREFIX)]
        assert len(probabilities) == 2
    assert json.loads((project / "reports" / "batch.json").read_text())["engine"] == "spark"


def test_a_value_that_is_not_a_number_fails_the_job_and_keeps_the_old_output(
    project, frame, monkeypatch, capsys
):
    """Past the lines the types are read from, Spark's parser meets the value (FAILFAST)."""
    source = trained(project, frame)
    monkeypatch.setattr(spark, "SAMPLE_LINES", 50)
    output = project / "reports" / "spark.parquet"
    assert run("batch", "--version", "1", "--engine", "spark", "--output", str(output)) == 0
    before = sorted(output.iterdir())
    damaged = data.read_table(str(source))
    feature = damaged.columns[1]  # the first one has gaps
    damaged = damaged.astype({feature: object})
    damaged.loc[len(damaged) - 5, feature] = "n/a?"
    data.write_table(damaged, str(source))
    assert run("batch", "--version", "1", "--engine", "spark", "--output", str(output)) == 2
    assert 'For input string: "n/a?"' in capsys.readouterr().err
    assert sorted(output.iterdir()) == before
    assert not list(output.parent.glob("_staged-*"))


def test_the_spark_submit_entry_point_replaces_an_output_whole(project, frame):
    """spark-submit as a cluster runs it: no params.yaml, the registry from MLFLOW_TRACKING_URI."""
    source = trained(project, frame)
    output = project / "scored.parquet"
    output.mkdir()
    (output / "part-00000-old.parquet").write_text("the previous run's output")
    settings = load_settings(project / "params.yaml")
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    model_name = settings.params.registry.model_name
    command = [
        str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
        spark_submit.__file__, "--input", str(source), "--output", str(output),
        "--model-name", model_name, "--version", "1",
    ]  # fmt: skip
    finished = subprocess.run(
        command, env=environment, cwd=project.parent, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["rows"] == len(frame) and summary["model_version"] == 1
    assert not (output / "part-00000-old.parquet").exists()
    scored = pd.read_parquet(output)
    assert set(scored[batch.MODEL_VERSION]) == {1} and len(scored) == len(frame)


def test_a_tampered_model_is_refused_before_spark_starts(project, frame, monkeypatch, capsys):
    trained(project, frame)
    settings = load_settings(project / "params.yaml")
    registry = Registry(settings)
    uri = registry.client.get_model_version_download_uri(registry.model_name, "1")
    with (Path(uri.removeprefix("file://")) / "model.skops").open("ab") as weights:
        weights.write(b"\0")
    output = project / "reports" / "spark.parquet"
    assert run("batch", "--version", "1", "--engine", "spark", "--output", str(output)) == 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    arguments = ["--input", "x.csv", "--output", str(output), "--model-name", registry.model_name]
    assert spark_submit.main([*arguments, "--version", "1"]) == 2
    assert capsys.readouterr().err.count("changed since registration") == 2
    assert not output.exists()
