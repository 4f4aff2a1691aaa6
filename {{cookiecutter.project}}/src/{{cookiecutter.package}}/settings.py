"""Every setting of the pipeline, typed and validated in one place.

Two sources, nothing else: `params.yaml` (reviewed in pull requests: data, model, gate, serving) and the
environment (what differs per machine: the MLflow tracking server, the Prometheus of a cluster, API
tokens, AWS credentials and endpoints, which boto3 and MLflow read themselves).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import SettingsError

Task = Literal["classification", "regression"]
API_TOKEN_VARIABLE = "SERVICE_API_TOKEN"  # what clients send; the service reads SERVICE_API_TOKENS

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
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


class ValidationParams(_Section):
    suite: str


class ModelParams(_Section):
    # A short name of `training.ESTIMATORS` or a dotted path to any scikit-learn-compatible class.
    estimator: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    # How missing numeric values are filled before scaling (none: the estimator takes them as they are).
    impute: Literal["median", "mean", "most_frequent", "none"] = "median"
    scale_features: bool = True
    # Categories rarer than this share of the training rows are grouped (one-hot encoding).
    min_category_share: float = Field(0.01, ge=0, lt=1)
    random_state: int = 42


class GateParams(_Section):
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


class RegistryParams(_Section):
    model_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    experiment: str


class ServingParams(_Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
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


class BatchParams(_Section):
    input: str
    output: str
    chunk_rows: int = Field(10_000, ge=1)


class RolloutChecks(_Section):
    """What the candidate must stay within at every step; any breach rolls traffic back."""

    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_p95_latency_ms: float = Field(500, gt=0)
    max_disagreement_rate: float = Field(0.05, ge=0, le=1)  # shadow only
    min_requests: int = Field(50, ge=1)  # fewer candidate requests in a step: not enough to judge


class RolloutParams(_Section):
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


class MonitoringParams(_Section):
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
    # Retraining is dispatched when drift or decay persists for this many windows in a row.
    retrain_after_windows: int = Field(2, ge=1)


class AwsParams(_Section):
    region: str = "us-east-1"


class Params(_Section):
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

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> Params:
        known = METRIC_GREATER_IS_BETTER[self.task]
        for name in [self.gate.primary_metric, *self.gate.guards]:
            if name not in known:
                raise ValueError(
                    f"gate metric {name!r} is not a {self.task} metric; choose from {sorted(known)}"
                )
        return self


class ServiceArgs(_Section):
    """What a bento is built with and serves by, so that it needs no params.yaml."""

    model_tag: str  # the stored model
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # the registry's digest of its files
    serving: ServingParams  # params.yaml's sections as they were at build time
    monitoring: MonitoringParams


def _variable(name: str, default: Any = None) -> Any:
    """A field read from the environment variable `name` (its field name works too, in code)."""
    return Field(default, validation_alias=name)


# Set: "true" only, as the workflows write it (GITHUB_ACTIONS, SKIP_IMAGE); any value (ACT).
Flag = Annotated[bool, BeforeValidator(lambda value: value is True or value == "true")]
Present = Annotated[bool, BeforeValidator(bool)]


class _Variables(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class GitHubContext(_Variables):
    """What GitHub Actions (and the workflows' own `env:`) tell a step; every field None elsewhere."""

    actions: Flag = _variable("GITHUB_ACTIONS", False)
    act: Present = _variable("ACT", False)  # a local run of the workflows by `act`
    sha: str | None = _variable("GITHUB_SHA")
    actor: str | None = _variable("GITHUB_ACTOR")
    run_id: str | None = _variable("GITHUB_RUN_ID")
    server_url: str | None = _variable("GITHUB_SERVER_URL")
    repository: str | None = _variable("GITHUB_REPOSITORY")
    output: Path | None = _variable("GITHUB_OUTPUT")
    step_summary: Path | None = _variable("GITHUB_STEP_SUMMARY")
    # Passed by the workflows:
    pr_head_sha: str | None = _variable("PR_HEAD_SHA")
    pr_head_repo: str | None = _variable("PR_HEAD_REPO")
    artifact_url: str | None = _variable("ARTIFACT_URL")
    base_ref: str | None = _variable("BASE_REF")
    base_sha: str | None = _variable("BASE_SHA")
    baseline_outcome: str | None = _variable("BASELINE_OUTCOME")
    champion_mode: str | None = _variable("CHAMPION_MODE")
    aws_role_arn: str | None = _variable("AWS_ROLE_ARN")
    skip_image: Flag = _variable("SKIP_IMAGE", False)

    @property
    def run_url(self) -> str | None:
        if not (self.server_url and self.repository and self.run_id):
            return None
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


class Environment(_Variables):
    """Every environment variable the pipeline reads, read once (`Environment.read`).

    boto3 and MLflow read their own (AWS_*, MLFLOW_TRACKING_TOKEN); the serving process reads its
    tokens and log location where BentoML starts it (`serving`).
    """

    tracking_uri: str | None = _variable("MLFLOW_TRACKING_URI")
    reports_dir: Path | None = _variable("REPORTS_DIR")
    # The Prometheus that scrapes the service's pods: a Kubernetes rollout judges each step on it.
    prometheus_url: str | None = _variable("PROMETHEUS_URL")
    api_token: str | None = _variable(API_TOKEN_VARIABLE)  # what this machine's clients send
    bentoml_home: Path | None = _variable("BENTOML_HOME")
    batch_input: str | None = _variable("BATCH_INPUT")  # overrides batch.input
    batch_output: str | None = _variable("BATCH_OUTPUT")  # overrides batch.output
    # What local servers get (`deploy.server`): the tokens they accept, where they log predictions.
    service_tokens: str | None = _variable("SERVICE_API_TOKENS")
    service_tokens_file: str | None = _variable("SERVICE_API_TOKENS_FILE")
    prediction_log: str | None = _variable("PREDICTION_LOG")
    github: GitHubContext = GitHubContext()

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The environment (os.environ by default); workflows pass an unset variable as an empty
        string, which counts as not set."""
        variables = os.environ if environ is None else environ
        present = {name: value.strip() for name, value in variables.items() if value.strip()}
        return cls.model_validate({**present, "github": GitHubContext.model_validate(present)})


class Settings(BaseModel):
    """Params plus the environment, with every relative path resolved against the project folder."""

    model_config = ConfigDict(frozen=True)

    params: Params
    params_file: Path  # where params came from: a process started for this command reads it too
    env: Environment = Environment()

    @property
    def project_dir(self) -> Path:
        """The params file's folder: relative locations in params resolve against it."""
        return self.params_file.parent

    @property
    def tracking_uri(self) -> str:
        """$MLFLOW_TRACKING_URI, else a sqlite file in the project."""
        return self.env.tracking_uri or f"sqlite:///{self.project_dir / 'mlflow.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.env.reports_dir or self.project_dir / "reports"

    @property
    def bentoml_home(self) -> Path:
        """$BENTOML_HOME, else `<project>/.bentoml`: bentos stay with the project they serve."""
        return (self.env.bentoml_home or self.project_dir / ".bentoml").resolve()

    def resolve(self, location: str) -> str:
        """A params location as something `data.read_table` opens: s3:// URIs pass unchanged."""
        if "://" in location:
            return location
        return str((self.project_dir / location).resolve())

    @property
    def greater_is_better(self) -> dict[str, bool]:
        return METRIC_GREATER_IS_BETTER[self.params.task]

    def api_token(self) -> str:
        """The bearer token this machine's clients send to the service.

        $SERVICE_API_TOKEN (a secret in CI and production), else a random token kept in
        `.runtime/api-token` and created on first use: `serve` hands it to local servers, so local
        servers are protected like deployed ones without anybody choosing a token.
        """
        if self.env.api_token:
            return self.env.api_token
        path = self.project_dir / ".runtime" / "api-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside, then linked into place: whoever finds the file finds the whole token
            # (two servers start in threads at once), and of two creators, both read the winner's.
            staged = path.with_name(f".api-token-{secrets.token_hex(8)}")
            staged.touch(mode=0o600)
            staged.write_text(secrets.token_urlsafe(32))
            try:
                os.link(staged, path)
            except FileExistsError:
                pass
            finally:
                staged.unlink()
        return path.read_text().strip()

    def client_headers(self) -> dict[str, str]:
        """Headers for requests to the service's APIs."""
        return {"Authorization": f"Bearer {self.api_token()}"}


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


def load_settings(
    params_path: Path | str = "params.yaml", environ: Mapping[str, str] | None = None
) -> Settings:
    """The params file (relative paths resolve against its folder) and the environment, read once."""
    params_path = Path(params_path).resolve()
    return Settings(
        params=load_params(params_path), params_file=params_path, env=Environment.read(environ)
    )
