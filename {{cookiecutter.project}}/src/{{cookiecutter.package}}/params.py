"""The schema of params.yaml: one typed, frozen section per concern, checked when the file is read.

`settings.Settings` holds the params with the environment; `load_params` reads the file and names
every problem by its place in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SettingsError

Task = Literal["classification", "regression"]

# Metric name -> True when a larger value is better. The gate and the evaluation read this one table.
METRIC_GREATER_IS_BETTER: dict[Task, dict[str, bool]] = {
    "classification": {
        "accuracy": True,
        "f1": True,
        "precision": True,
        "recall": True,
        "roc_auc": True,
        "log_loss": False,
    },
    "regression": {"r2": True, "rmse": False, "mae": False},
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    source: str
    target: str
    # The model's inputs: None for every column but the target and `drop`.
    features: list[str] | None = Field(None, min_length=1)
    # Columns that are not features: ids, free text, anything known only after the fact.
    drop: list[str] = Field(default_factory=list)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    # Rows without a target are left out of training and evaluation (counted in their reports);
    # above this share of the rows, the data is refused instead.
    max_missing_target_share: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _roles_do_not_overlap(self) -> DataParams:
        if self.target in {*(self.features or ()), *self.drop}:
            raise ValueError(f"the target {self.target!r} cannot be a feature or dropped")
        if overlap := sorted(set(self.features or ()) & set(self.drop)):
            raise ValueError(f"{overlap} are both in data.features and data.drop")
        return self


class ValidationParams(Section):
    suite: str


class ModelParams(Section):
    # A short name of `training.ESTIMATORS` or a dotted path to any scikit-learn-compatible class.
    estimator: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    # How missing numeric values are filled before scaling (none: the estimator takes them as they are).
    impute: Literal["median", "mean", "most_frequent", "none"] = "median"
    scale_features: bool = True
    # Categories rarer than this share of the training rows are grouped (one-hot encoding).
    min_category_share: float = Field(0.01, ge=0, lt=1)
    random_state: int = 42


class GateParams(Section):
    primary_metric: str
    min_improvement: float = Field(ge=0)
    guards: dict[str, float] = Field(default_factory=dict)
    bootstrap_samples: int = Field(1000, ge=100)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    require_significance: bool = False
    # The class f1, precision, recall, roc_auc count as positive on a binary target. None: 1 (or
    # True) when it is a label, else the greater of the two labels in sorted order ("yes" of no/yes).
    positive_label: str | int | bool | None = None
    # How precision, recall, f1 and roc_auc (one-vs-rest) average over the classes of a multiclass target.
    average: Literal["macro", "weighted"] = "macro"


class RegistryParams(Section):
    model_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    experiment: str
    # Alias moves hold a lock in the registry (registry_lock.py): how long one waits for another's
    # to be released, and when a lock left by a crashed run expires.
    lock_wait_seconds: float = Field(60, ge=0, le=3600)
    lock_expiry_seconds: float = Field(300, gt=0, le=86400)


class ServingParams(Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    # The gRPC server beside HTTP (serving/grpc), or null for none. Every worker listens on it: gRPC
    # binds with SO_REUSEPORT on Linux, so the kernel spreads connections over the workers.
    grpc_port: int | None = Field(3001, ge=1, le=65535)
    ready_timeout_seconds: float = Field(90, gt=0)
    max_batch_rows: int = Field(1000, ge=1)
    # Worker processes per server; scale out with replicas first (deploy/k8s).
    workers: int = Field(1, ge=1, le=64)
    # false only for local development: the service then warns at every start.
    require_auth: bool = True
    # Requests per client (its token, else its address) in the `limits` notation, or null for none.
    rate_limit: str | None = "1000/second"
    max_body_bytes: int = Field(2_000_000, ge=1_024)
    # A value outside what training saw: reject (422 naming the feature), flag (answer, and name the
    # features in the answer and the metrics) or off.
    out_of_profile: Literal["reject", "flag", "off"] = "flag"
    # BentoML's per-request OpenTelemetry spans and access log; each costs a share of requests/s.
    tracing: bool = False
    access_log: bool = False
    # When the served model raises: the previous champion packed in the bento answers (fallback), or 503.
    on_model_error: Literal["fallback", "unavailable"] = "fallback"
    # A request whose expected wait for the model exceeds this gets 503 with Retry-After at once;
    # null: requests queue without bound.
    queue_deadline_ms: int | None = Field(1000, ge=1)

    @field_validator("rate_limit")
    @classmethod
    def _limits_notation(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate limit like '100/second' or '10/second;1000/hour'"
                ) from None
        return value


S3_PREFIX = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"


class EmrServerlessParams(Section):
    """Where `batch-submit` runs the Spark entry point: an EMR Serverless application whose image
    holds this project (docs/emr-serverless.md)."""

    application_id: str = Field(pattern=r"^[0-9a-z]{16}$")
    # The role the job runs as: reads the input and code, writes the output and logs.
    execution_role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
    # The entry point (batch/spark_submit.py) is uploaded under this prefix, named by its digest.
    code: str = Field(pattern=S3_PREFIX)
    # Driver and executor logs; None: EMR Serverless keeps them itself, for 30 days.
    logs: str | None = Field(None, pattern=S3_PREFIX)
    # The interpreter of the application's image that has this project installed (the image's own
    # python3 is older than this project's Python), e.g. /usr/bin/python3.12.
    python: str = Field(pattern=r"^/\S+$")
    # Added to every run's spark-submit parameters: executor sizes, dynamic allocation...
    spark_submit_parameters: str = ""
    # EMR Serverless stops the run after this long, and `batch-submit` cancels it (batch.yml waits 90 min).
    timeout_minutes: int = Field(60, ge=1, le=1440)
    poll_seconds: float = Field(15, gt=0, le=300)


class BatchParams(Section):
    input: str
    output: str
    engine: Literal["pandas", "spark"] = "pandas"  # pandas: batch/chunked.py; spark: batch/spark.py
    chunk_rows: int = Field(10_000, ge=1)  # the pandas engine's
    spark_master: str = Field("local[*]", min_length=1)
    spark_conf: dict[str, str | int | float | bool] = Field(default_factory=dict)  # builder.config
    # None: `batch` scores on this machine; set: batch.yml submits to EMR Serverless instead.
    emr_serverless: EmrServerlessParams | None = None


class RolloutChecks(Section):
    """What the candidate must stay within at every step; any breach rolls traffic back."""

    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_p95_latency_ms: float = Field(500, gt=0)
    max_disagreement_rate: float = Field(0.05, ge=0, le=1)  # shadow only
    min_requests: int = Field(50, ge=1)  # fewer candidate requests in a step: not enough to judge


class RolloutParams(Section):
    strategy: Literal["canary", "shadow", "blue-green"] = "canary"
    canary_steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100], min_length=1)
    step_seconds: float = Field(300, gt=0)
    shadow_seconds: float = Field(900, gt=0)
    # Regression predictions agree when within this share of the champion's (at least of 1.0).
    regression_tolerance: float = Field(0.05, ge=0)
    checks: RolloutChecks = RolloutChecks()
    # Local traffic target: nginx in front of the champion and candidate servers on serving.host.
    proxy_port: int = Field(8080, ge=1, le=65535)

    @model_validator(mode="after")
    def _steps_climb_to_100(self) -> RolloutParams:
        steps = self.canary_steps
        if any(not 0 < step <= 100 for step in steps) or steps != sorted(set(steps)):
            raise ValueError(f"canary_steps {steps} must rise strictly, each in 1..100")
        if steps[-1] != 100:
            raise ValueError(f"canary_steps {steps} must end at 100")
        return self


class MonitoringParams(Section):
    # Where the service logs a sample of what it served (Parquet, a folder a day): local or s3://.
    prediction_log: str = "logs/predictions"
    # Share of requests logged, chosen by a hash of the request id (0 turns the log off).
    sample_rate: float = Field(1.0, ge=0, le=1)
    # The service writes what it sampled at most this often, off the request path.
    flush_seconds: float = Field(10, gt=0)
    # Ground truth that arrives later: CSV or Parquet files with request_id, row, label.
    labels: str = "logs/labels"
    # `drift` and `performance` judge the last window of this many hours.
    window_hours: float = Field(24, gt=0)
    # Data drift: the window drifts when at least this share of the features drifted.
    drift_share: float = Field(0.5, gt=0, le=1)
    # Concept drift: how far the primary metric may fall below the champion's offline metric.
    performance_tolerance: float = Field(0.05, ge=0)
    # Fewer rows than this in a window: too few to judge, reported as such.
    min_window_rows: int = Field(50, ge=1)
    # `ab-test` calls no winner until each of the two versions has this many labelled rows.
    ab_min_labelled_rows: int = Field(200, ge=1)
    # Retraining is dispatched when drift or decay persists for this many windows in a row.
    retrain_after_windows: int = Field(2, ge=1)


class AwsParams(Section):
    region: str = "us-east-1"
{%- if cookiecutter.feature_store == "feast" %}


class FeatureStoreParams(Section):
    """Where the features come from (feature_store.py; docs/feature-store.md): data.source holds the
    entity keys, the time each label became known and the target; Feast adds the features."""

    repo: str = "feature_repo"  # the Feast repository, relative to params.yaml
    # What the model reads: training joins it to data.source, the service fetches it by key.
    feature_service: str = Field(min_length=1)
    entity_keys: list[str] = Field(min_length=1)
    event_timestamp: str = "event_timestamp"
{%- endif %}


class Params(Section):
    task: Task
    data: DataParams
    validation: ValidationParams
    model: ModelParams
    gate: GateParams
    registry: RegistryParams
    serving: ServingParams = ServingParams()
    batch: BatchParams
    rollout: RolloutParams = RolloutParams()
    monitoring: MonitoringParams = MonitoringParams()
    aws: AwsParams = AwsParams()
{%- if cookiecutter.feature_store == "feast" %}
    # None: data.source holds the features itself, as without the option.
    feature_store: FeatureStoreParams | None = None

    @model_validator(mode="after")
    def _entity_columns_are_not_features(self) -> Params:
        store, data = self.feature_store, self.data
        if store is None:
            return self
        named = {*store.entity_keys, store.event_timestamp}
        if clash := sorted(named & {data.target, *(data.features or ()), *data.drop}):
            raise ValueError(
                f"{clash}: feature_store's entity keys and event timestamp are set aside by the "
                "join; they cannot be the target, a feature or dropped"
            )
        return self
{%- endif %}

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> Params:
        known = METRIC_GREATER_IS_BETTER[self.task]
        for name in [self.gate.primary_metric, *self.gate.guards]:
            if name not in known:
                raise ValueError(
                    f"gate metric {name!r} is not a {self.task} metric; choose from {sorted(known)}"
                )
        return self


def load_params(path: Path) -> Params:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: params file not found") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML: {error}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '(top level)'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise SettingsError(f"{path}: {problems}") from None
