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
from typing import Annotated, Any{% if cookiecutter.feature_store == "feast" %}, Literal{% endif %}

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from .params import (
    METRIC_GREATER_IS_BETTER,
    MonitoringParams,
    Params,
    Section,
    ServingParams,
    load_params,
)

API_TOKEN_VARIABLE = "SERVICE_API_TOKEN"  # what clients send; the service reads SERVICE_API_TOKENS


class FallbackModel(Section):
    """The champion a build replaces, packed beside the served model to answer when it raises."""

    model_tag: str
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    version: int = Field(ge=1)


{%- if cookiecutter.feature_store == "feast" %}


class OnlineFeatures(Section):
    """Where /predict_entity fetches a row: the Feast repository (absolute, from the build; its
    feature_store.yaml names the online store; $FEATURE_REPO replaces it where the bento runs, see
    serving.entities), the feature service the model reads and the entity keys a request names."""

    repo: str
    feature_service: str
    entity_keys: dict[str, Literal["integer", "string"]]  # each key's JSON type, from Feast
{%- endif %}


class ServiceArgs(Section):
    """What a bento is built with and serves by, so that it needs no params.yaml."""

    model_tag: str  # the stored model
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # the registry's digest of its files
    serving: ServingParams  # params.yaml's sections as they were at build time
    monitoring: MonitoringParams
    fallback: FallbackModel | None = None  # none on the first deploy
{%- if cookiecutter.feature_store == "feast" %}
    # None: params had no feature_store section, and the service has no /predict_entity.
    online_features: OnlineFeatures | None = None
{%- endif %}


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


def load_settings(
    params_path: Path | str = "params.yaml", environ: Mapping[str, str] | None = None
) -> Settings:
    """The params file (relative paths resolve against its folder) and the environment, read once."""
    params_path = Path(params_path).resolve()
    return Settings(
        params=load_params(params_path), params_file=params_path, env=Environment.read(environ)
    )
