"""The MLflow model registry as the single source of truth for which model serves.

Three aliases (registry stages are deprecated in MLflow): `champion` serves, `challenger` is the latest
trained candidate, `previous` is where a rollback goes. Every alias move is written to an audit trail on
the registered model (who, what, when, why), so `history` can show how production got where it is.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from datetime import UTC, datetime
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import integrity
from .errors import RegistryError
from .settings import Settings

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
_AUDIT_PREFIX = "audit."


def configure(settings: Settings) -> None:
    """Point MLflow at the tracking store and the project's experiment (created on first use)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep CI logs readable
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    name = settings.params.registry.experiment
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=_local_artifact_root(settings))
    mlflow.set_experiment(name)


def _local_artifact_root(settings: Settings) -> str | None:
    """Next to a local sqlite store, artifacts go to ./mlartifacts of the project, not the cwd."""
    if urlparse(settings.tracking_uri).scheme == "sqlite":
        return (settings.project_dir / "mlartifacts").as_uri()
    return None  # a tracking server decides where artifacts go


def client(settings: Settings) -> MlflowClient:
    configure(settings)
    return MlflowClient()


def alias_version(settings: Settings, alias: str) -> int | None:
    """The version behind an alias, or None when the model or the alias does not exist yet."""
    try:
        aliases = client(settings).get_registered_model(settings.params.registry.model_name).aliases
    except MlflowException:
        return None
    return int(aliases[alias]) if alias in aliases else None


def aliases(settings: Settings) -> dict[str, int]:
    return {
        alias: version
        for alias in (CHAMPION, CHALLENGER, PREVIOUS)
        if (version := alias_version(settings, alias)) is not None
    }


def model_uri(settings: Settings, version: int) -> str:
    return f"models:/{settings.params.registry.model_name}/{version}"


def load_model(settings: Settings, version: int):
    """The registered scikit-learn pipeline itself (native flavour: predict_proba, no pyfunc layer)."""
    configure(settings)
    return mlflow.sklearn.load_model(model_uri(settings, version))


def holdout_metric(settings: Settings, version: int, metric: str) -> float:
    """What `version` scored on the frozen holdout at training, as logged on its run."""
    registry_client = client(settings)
    run_id = registry_client.get_model_version(
        settings.params.registry.model_name, str(version)
    ).run_id
    metrics = registry_client.get_run(run_id).data.metrics
    if f"holdout_{metric}" not in metrics:
        raise RegistryError(f"v{version} (run {run_id}) has no holdout_{metric} metric logged")
    return metrics[f"holdout_{metric}"]


def tag_version(settings: Settings, version: int, tags: dict[str, str]) -> None:
    registry_client = client(settings)
    for key, value in tags.items():
        registry_client.set_model_version_tag(
            settings.params.registry.model_name, str(version), key, value
        )


def record_digest(settings: Settings, version: int) -> str:
    """Digest the registered files of `version` as the registry hands them out; tag the version.

    The build verifies this tag before packing the model, and the service before serving it, so a
    model file changed in the artifact store after registration is never served.
    """
    configure(settings)
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(model_uri(settings, version), dst_path=folder)
        digest = integrity.artifact_digest(local)
    tag_version(settings, version, {integrity.DIGEST_TAG: digest})
    return digest


def recorded_digest(settings: Settings, version: int) -> str | None:
    name = settings.params.registry.model_name
    return client(settings).get_model_version(name, str(version)).tags.get(integrity.DIGEST_TAG)


def _actor(settings: Settings) -> str:
    return settings.env.github.actor or getpass.getuser()


def _record(settings: Settings, action: str, **details) -> dict:
    registry_client = client(settings)
    name = settings.params.registry.model_name
    sequence = len(history(settings)) + 1
    entry = {
        "sequence": sequence,
        "action": action,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": _actor(settings),
        "run": settings.env.github.run_id or "local",
        **details,
    }
    registry_client.set_registered_model_tag(
        name, f"{_AUDIT_PREFIX}{sequence:06d}", json.dumps(entry)
    )
    return entry


def history(settings: Settings) -> list[dict]:
    """Every recorded alias move, oldest first."""
    try:
        tags = client(settings).get_registered_model(settings.params.registry.model_name).tags
    except MlflowException:
        return []
    return [json.loads(tags[key]) for key in sorted(tags) if key.startswith(_AUDIT_PREFIX)]


def move_alias(
    settings: Settings, alias: str, version: int | None, why: str, action: str = "move"
) -> dict:
    """Point `alias` at `version` (None removes it) and record the move as `action`."""
    registry_client = client(settings)
    name = settings.params.registry.model_name
    before = alias_version(settings, alias)
    if version is None:
        if before is not None:
            registry_client.delete_registered_model_alias(name, alias)
    else:
        try:
            registry_client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"{name} has no version {version}; nothing changed") from None
        registry_client.set_registered_model_alias(name, alias, str(version))
    return _record(settings, action, alias=alias, before=before, after=version, why=why)


def promote(settings: Settings, version: int, expected_champion: int | None, why: str) -> dict:
    """Make `version` the champion, if the champion is still the one the evaluation compared against.

    Compare-and-set: if another run moved `champion` since the evaluation, promoting now would skip a
    comparison, so it is refused. The old champion becomes `previous`.
    """
    current = alias_version(settings, CHAMPION)
    if current != expected_champion:
        raise RegistryError(
            f"champion moved since the evaluation (expected v{expected_champion}, found v{current}); "
            "evaluate again before promoting"
        )
    if current == version:
        raise RegistryError(f"v{version} is already the champion")
    previous = alias_version(settings, PREVIOUS)
    if current is not None:
        move_alias(settings, PREVIOUS, current, why=f"v{version} promoted over it")
    try:
        move_alias(settings, CHAMPION, version, why=why, action="promote")
    except MlflowException as error:
        move_alias(settings, PREVIOUS, previous, why=f"promotion of v{version} failed")
        raise RegistryError(f"promotion of v{version} failed, nothing changed: {error}") from error
    return {"champion": version, "previous": current, "replaced_previous": previous}


def revert_promotion(settings: Settings, promotion: dict, why: str) -> dict:
    """Undo what `promote` returned: champion and previous point where they did before it.

    Unlike `rollback`, this works for a first promotion too: the champion alias is removed again.
    """
    failed = promotion["champion"]
    move_alias(
        settings, CHAMPION, promotion["previous"], why=f"from v{failed}: {why}", action="rollback"
    )
    move_alias(settings, PREVIOUS, promotion["replaced_previous"], why=f"rollback of v{failed}")
    return {"champion": promotion["previous"], "rolled_back_from": failed}


def _previous_before(settings: Settings, version: int | None) -> int | None:
    """The champion that `version` replaced, read from the audit trail (None if it was the first)."""
    for entry in reversed(history(settings)):
        if entry["action"] == "promote" and entry["after"] == version:
            return entry["before"]
    return None


def rollback(settings: Settings, why: str, to_version: int | None = None) -> dict:
    """Move `champion` back to `previous` (or to `to_version`), and `previous` one step further back.

    Walking the audit trail means repeated rollbacks keep going back in history instead of bouncing
    between the last two versions.
    """
    current = alias_version(settings, CHAMPION)
    target = to_version if to_version is not None else alias_version(settings, PREVIOUS)
    if current is None:
        raise RegistryError("there is no champion to roll back")
    if target is None:
        raise RegistryError(f"v{current} is the first champion; there is no previous version")
    if target == current:
        raise RegistryError(f"v{target} is already the champion")
    move_alias(settings, CHAMPION, target, why=f"from v{current}: {why}", action="rollback")
    before_target = _previous_before(settings, target)
    move_alias(
        settings, PREVIOUS, None if before_target == current else before_target, why="rollback"
    )
    return {"champion": target, "rolled_back_from": current}


def log_evaluation(settings: Settings, version: int, comparison, plots: list) -> None:
    """Attach the gate's numbers, verdict and plots to the candidate's training run and version."""
    registry_client = client(settings)
    name = settings.params.registry.model_name
    run_id = registry_client.get_model_version(name, str(version)).run_id
    metrics = {f"eval_candidate_{k}": v for k, v in comparison.candidate_metrics.items()}
    metrics |= {f"eval_champion_{k}": v for k, v in comparison.champion_metrics.items()}
    for key, value in metrics.items():
        registry_client.log_metric(run_id, key, value)
    for path in plots:
        registry_client.log_artifact(run_id, str(path), artifact_path="evaluation")
    tag_version(
        settings,
        version,
        {
            "gate_decision": comparison.decision,
            "gate_reasons": "; ".join(comparison.reasons)[:4000],
            "evaluated_against": str(comparison.champion_version or "none"),
        },
    )
