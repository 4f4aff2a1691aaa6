"""The Spark engine: score data that outgrows one machine on a Spark cluster (or `local[*]`).

Not `mlflow.pyfunc.spark_udf`: it loads the model with MLflow's own loader, which trusts the
model's MLmodel (pickle included) rather than the digest recorded at registration, and a pyfunc
returns one column, the prediction, never the classes' probabilities. Instead the driver downloads
the registered files and loads them through `integrity` (digest, then skops only); the same folder
goes to every executor with `SparkContext.addFile`, where each Python worker loads it once, through
`integrity` again, and scores each Arrow batch of `DataFrame.mapInArrow` with the chunked engine's
`score_chunk`: one model call gives the prediction and every class's probability, and the output
has exactly the chunked engine's columns and types.

Input: CSV or Parquet, a local path or any URI Spark's Hadoop file systems read (`s3a://`, EMR's
`s3://`, `gs://`, `abfss://`, `dbfs:/`), handed to Spark as it is. A CSV's columns are typed as the
chunked engine types them, read from the file's first lines (`chunked.csv_types`); a value that
does not parse fails the job (FAILFAST) rather than becoming a gap.

Output: a folder of Parquet part files, published whole. Spark writes it to a staged folder beside
the destination (`_staged-<id>-<name>`, which readers of the parent skip); then the old output is
moved aside, the staged folder renamed into place, `_SUCCESS` written in it last, and the old output
deleted. On a local disk or HDFS each rename is atomic; on an object store a rename is a copy, file
by file, so readers wait for `_SUCCESS` (docs/batch.md).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from .. import data, integrity
from ..errors import DataError, SettingsError
from . import chunked

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from ..registry import VerifiedModel

PACKAGE = __package__.split(".")[0]
SAMPLE_LINES = 1000  # a CSV's first lines, from which its other columns' types are inferred
SUCCESS = "_SUCCESS"  # written last in a published output


def start_session(master: str | None, conf: Mapping[str, str | int | float | bool]) -> SparkSession:
    """A Spark session on `master` (None: the one spark-submit was given) with the users' `conf`.

    Python workers run this interpreter unless PYSPARK_PYTHON says otherwise (else they start the
    system Python, which fails on the version), and Spark binds to 127.0.0.1 unless SPARK_LOCAL_IP
    says otherwise. Logs at WARN.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SettingsError(
            "batch.engine spark needs pyspark: install the project's spark extra (in the "
            "project: uv sync --extra spark, or pip install '.[spark]') and Java 17"
        ) from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):  # what Spark's launcher looks for
        raise SettingsError(
            "batch.engine spark needs Java 17 (java on PATH or JAVA_HOME): Debian/Ubuntu "
            "apt-get install openjdk-17-jre-headless; macOS brew install openjdk@17"
        )
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(f"{PACKAGE} batch")
    builder = builder.config("spark.ui.showConsoleProgress", "false").config(
        "spark.log.level", "WARN"
    )
    if master:
        builder = builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@dataclass(frozen=True)
class ShippedModel:
    """What an executor needs to load the verified model from its copy of the files, and use it."""

    folder_name: str  # the folder's name among SparkFiles
    digest: str
    what: str
    version: int
    features: list[str]
    categorical: list[str]


_LOADED: dict[str, Any] = {}  # digest -> model: loaded once per Python worker process


def score_batches(
    shipped: ShippedModel, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """mapInArrow's function, run on the executors: each batch with the chunked engine's columns."""
    model = _LOADED.get(shipped.digest)
    if model is None:
        from pyspark import SparkFiles

        folder = SparkFiles.get(shipped.folder_name)
        model = _LOADED[shipped.digest] = integrity.load_model(folder, shipped.digest, shipped.what)
    for batch in batches:
        table = pa.Table.from_batches([batch])
        scored = chunked.score_chunk(
            model, table, shipped.features, shipped.version, shipped.categorical
        )
        yield from scored.to_batches()


def csv_schema(
    session: SparkSession, source: str, features: list[str], categorical: list[str]
) -> StructType:
    """The CSV's columns typed as the chunked engine types them, from its first lines."""
    from pyspark.sql.pandas.types import from_arrow_schema

    lines = [row.value for row in session.read.text(source).limit(SAMPLE_LINES).collect()]
    if len(lines) < 2:
        raise DataError(f"{source}: no rows to score")
    sample = "\n".join(lines).encode()
    try:
        table = pa_csv.read_csv(
            io.BytesIO(sample), convert_options=chunked.csv_types(features, categorical)
        )
    except pa.ArrowInvalid as error:
        raise DataError(f"{source}: {error}") from None
    return from_arrow_schema(table.schema)


def read_input(
    session: SparkSession, source: str, features: list[str], categorical: list[str]
) -> DataFrame:
    """The rows to score, from a CSV or Parquet file (or folder of them); DataError when unusable."""
    from pyspark.errors import AnalysisException

    try:
        if data.suffix(source) == ".parquet":
            frame = session.read.parquet(source)
        else:
            schema = csv_schema(session, source, features, categorical)
            frame = session.read.schema(schema).csv(source, header=True, mode="FAILFAST")
    except AnalysisException as error:
        raise DataError(f"{source}: {error.getMessage()}") from None
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise DataError(f"{source}: lacks the model's feature columns {missing}")
    return frame


def staged_beside(location: str, label: str) -> str:
    """A unique sibling of `location` that readers of its parent skip (its name starts with _)."""
    parent, _, name = location.rstrip("/").rpartition("/")
    return f"{parent}/_{label}-{uuid.uuid4().hex[:12]}-{name}"


def publish(session: SparkSession, staged: str, destination: str) -> None:
    """Put the staged output in the destination's place, old output aside first, `_SUCCESS` last."""
    context = session.sparkContext
    hadoop_path = context._jvm.org.apache.hadoop.fs.Path
    target = hadoop_path(destination)
    files = target.getFileSystem(context._jsc.hadoopConfiguration())
    files.delete(hadoop_path(f"{staged}/{SUCCESS}"), False)  # rewritten once in place
    replaced = hadoop_path(staged_beside(destination, "replaced"))
    replacing = files.exists(target)
    if replacing and not files.rename(target, replaced):
        raise DataError(f"{destination}: could not move the previous output aside")
    if not files.rename(hadoop_path(staged), target):
        raise DataError(f"{destination}: could not move the output from {staged} into place")
    files.create(hadoop_path(f"{destination}/{SUCCESS}"), True).close()
    if replacing:
        files.delete(replaced, True)


def discard(session: SparkSession, staged: str) -> None:
    """Delete what a failed job staged: the destination was never touched."""
    context = session.sparkContext
    hadoop_path = context._jvm.org.apache.hadoop.fs.Path(staged)
    hadoop_path.getFileSystem(context._jsc.hadoopConfiguration()).delete(hadoop_path, True)


def first_row(frame: DataFrame) -> pa.Table:
    """The frame's first row as Arrow, with the types Spark hands mapInArrow. Through pandas, not
    `DataFrame.toArrow`, which Spark 3.5 lacks (EMR 7's Spark)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    rows = frame.limit(1).toPandas()
    return pa.Table.from_pandas(rows, schema=to_arrow_schema(frame.schema), preserve_index=False)


def score_file(
    session: SparkSession,
    verified: VerifiedModel,
    version: int,
    categorical: list[str],
    source: str,
    destination: str,
) -> dict:
    """Score `source` into the Parquet folder `destination` and return a summary for the report."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql.pandas.types import from_arrow_schema

    if destination.lower().endswith(".csv"):
        raise DataError(f"{destination}: the spark engine writes Parquet; name a .parquet output")
    features = list(verified.model.feature_names_in_)
    frame = read_input(session, source, features, categorical)
    session.sparkContext.addFile(str(verified.folder), recursive=True)
    shipped = ShippedModel(
        verified.folder.name, verified.digest, verified.what, version, features, categorical
    )
    staged = staged_beside(destination, "staged")
    try:
        first = first_row(frame)  # its scored form gives the output's types
        if first.num_rows == 0:
            raise DataError(f"{source}: no rows to score")
        schema = chunked.score_chunk(verified.model, first, features, version, categorical).schema
        scored = frame.mapInArrow(
            functools.partial(score_batches, shipped), from_arrow_schema(schema)
        )
        scored.write.parquet(staged)
    except (PySparkException, Py4JJavaError) as error:
        discard(session, staged)
        raise DataError(f"{source}: scoring failed: {_gist(error)}") from None
    except BaseException:
        discard(session, staged)
        raise
    publish(session, staged, destination)
    return {
        "input": source,
        "output": destination,
        "rows": session.read.parquet(destination).count(),
        "model_version": version,
    }


def _gist(error: Exception) -> str:
    """What went wrong, without the JVM's stack: a Python worker's exception (a model refused, a
    missing column), else the Java error's last causes (a value that is not a number)."""
    from pyspark.errors import PythonException

    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if isinstance(error, PythonException):
        return lines[-1]
    causes = list(
        dict.fromkeys(
            line.removeprefix("Caused by: ").removeprefix(": ")
            for line in lines
            if line.startswith(("Caused by:", ": "))
        )
    )
    return " <- ".join(reversed(causes[-2:])) if causes else lines[0]
