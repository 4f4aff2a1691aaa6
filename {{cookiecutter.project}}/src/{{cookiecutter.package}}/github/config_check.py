"""Is this repository configured for what the workflow is about to do? (`check-config --for ...`)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..reports import cell, markdown_table
from ..settings import Environment

VARIABLES_PAGE = "Settings > Secrets and variables > Actions"
DOCS = "docs/setup.md"
S3_PREFIX = "s3://"


@dataclass
class ConfigCheck:
    purpose: str
    configured: bool
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, what to set)
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def require(self, kind: str, name: str, what: str) -> None:
        """Something the workflow needs that the repository does not have yet."""
        self.configured = False
        self.missing.append((kind, name, what))

    def summary(self) -> str:
        if self.configured:
            lines = [f"### {self.purpose.upper()} configuration: ready"]
            lines += [f"- {note}" for note in self.notes]
            return "\n".join(lines)
        lines = [
            f"## {self.purpose.upper()} is not configured yet: nothing was changed",
            "",
            "This run ended without error on purpose. To turn it on, set the following under "
            f"**{VARIABLES_PAGE}** of this repository (step by step: `{DOCS}`), then run it again:",
            "",
            markdown_table(["kind", "name", "what to set"], [list(item) for item in self.missing]),
        ]
        lines += ["", *[f"- {note}" for note in self.notes]] if self.notes else []
        return "\n".join(lines)


def _uses_s3(*locations: str | None) -> bool:
    return any(location and location.startswith(S3_PREFIX) for location in locations)


def _needs_aws(purpose: str, locations: Mapping[str, str]) -> bool:
    """Whether the workflow reads or writes S3 (then it needs the OIDC role)."""
    used = {
        "cd": ("data",),
        "batch": ("data", "input", "output"),
        "monitor": ("data", "prediction_log", "labels"),
    }.get(purpose, ())
    return _uses_s3(*(locations.get(name) for name in used))


def check(
    purpose: str,
    env: Environment,
    locations: Mapping[str, str],
    project_dir: Path,
    emr_application: str | None = None,
) -> ConfigCheck:
    """What `purpose` (ci, cd, rollback, batch, monitor) needs from the repository's variables and
    secrets.

    `env` holds what the workflow passed from `vars` (MLFLOW_TRACKING_URI, AWS_ROLE_ARN, SKIP_IMAGE)
    and, for pull requests, PR_HEAD_REPO. `locations` are the locations of params.yaml (data, batch
    input and output, prediction log and labels) that decide whether AWS credentials are needed.
    `emr_application` (batch.emr_serverless's) sends batch scoring to EMR Serverless: output
    `emr_serverless` says which way the workflow goes, and AWS credentials are needed either way.
    CI needs nothing: with no tracking server (or for a pull request from a fork, which gets no
    secrets), the champion is a model trained from the base branch in the same job, in a local store.
    """
    if purpose == "ci":
        return _check_ci(env, project_dir)
    uri, github = env.tracking_uri or "", env.github
    check = ConfigCheck(purpose, configured=True)
    if not uri:
        check.require(
            "variable",
            "MLFLOW_TRACKING_URI",
            "URL of your MLflow tracking server, e.g. `https://mlflow.example.com`",
        )
        check.notes.append(
            "If the tracking server needs a token, add the secret `MLFLOW_TRACKING_TOKEN` "
            "(MLflow sends it as a bearer token)."
        )
    log = locations.get("prediction_log") or ""
    if purpose == "monitor" and not (_uses_s3(log) or (project_dir / log).is_dir()):
        # The servers write the log; a runner sees it only in a bucket (or on a self-hosted runner).
        check.require(
            "params.yaml",
            "monitoring.prediction_log",
            f"an s3:// location the service writes to (now `{cell(log, 100)}`, not on this runner)",
        )
    on_emr = purpose == "batch" and emr_application is not None
    if (on_emr or _needs_aws(purpose, locations)) and not github.aws_role_arn:
        check.require(
            "variable",
            "AWS_ROLE_ARN",
            "ARN of the IAM role GitHub's OIDC provider may assume (trust and S3 policies: "
            f"`{DOCS}`)",
        )
    if uri.startswith("sqlite:") and github.actions and not github.act:
        check.notes.append(
            "MLFLOW_TRACKING_URI is a sqlite file: it does not outlive the job on GitHub's "
            "runners, so every run starts from an empty registry. Use a tracking server."
        )
    if check.configured and github.skip_image and purpose == "cd":
        check.notes.append(
            "SKIP_IMAGE is true: no container image is built or pushed; staging smoke-tests the bento."
        )
    check.outputs = {"configured": str(check.configured).lower()}
    if purpose == "batch":
        check.outputs["emr_serverless"] = str(on_emr).lower()
        where = f"EMR Serverless application `{emr_application}`" if on_emr else "this runner"
        check.notes.append(f"batch scoring runs on {where} (batch.emr_serverless in params.yaml)")
    return check


def _check_ci(env: Environment, project_dir: Path) -> ConfigCheck:
    """CI is always configured: the champion is the registry's, or the base branch's model.

    Either way the pull request's stages write to a throwaway local store (`tracking_uri`), never to
    the team's registry: in server mode the champion is copied from `registry_uri` into it, read-only.
    """
    uri, github = env.tracking_uri or "", env.github
    check = ConfigCheck("ci", configured=True)
    head, repository = github.pr_head_repo or "", github.repository or ""
    # A head that is not this repository is a fork's, and so is no head at all (the fork was deleted).
    fork = bool(repository) and head != repository
    local = f"sqlite:///{(project_dir / 'mlflow.db').resolve()}"
    if uri and not fork:
        check.outputs = {"mode": "server", "tracking_uri": local, "registry_uri": uri}
        check.notes.append(
            "champion: the registry's `champion` on the tracking server, copied into this job's "
            "own store (the pull request writes nothing to the registry)"
        )
    else:
        check.outputs = {"mode": "baseline", "tracking_uri": local}
        why = (
            "a pull request from a fork gets no secrets"
            if uri and fork
            else "no MLFLOW_TRACKING_URI variable is set"
        )
        check.notes.append(f"champion: a model trained from the base branch in this job ({why})")
    check.outputs["configured"] = "true"
    return check
