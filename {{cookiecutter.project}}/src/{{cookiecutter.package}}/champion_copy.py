"""The registry's champion, copied into a pull request's throwaway store (`import-champion`).

A pull request runs code nobody has reviewed yet, so its model job never writes to the team's
registry: its candidate is trained, registered and evaluated in a local store. In server mode the
champion it is compared with is still the registry's own: read with a read-only token, its files are
checked against the digest the registry recorded at registration, then registered in the local store
as `champion` with its run's holdout metrics and its version's tags. `evaluate` and the comment then
work exactly as they would against the registry.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import integrity
from .errors import RegistryError, SecurityError
from .registry import CHAMPION, Registry


def where(uri: str) -> str:
    """The source registry as a report may name it: scheme and host, never a user or password."""
    parsed = urlparse(uri)
    return f"{parsed.scheme}://{parsed.hostname or ''}" if parsed.hostname else parsed.scheme


def source_champion(client: MlflowClient, model_name: str, source: str) -> ModelVersion | None:
    """The source registry's champion version; None when it has none yet (or no such model)."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryError(
            f"cannot read the champion of {model_name} at {source}: {error.message} (a pull "
            "request reads it with the `pull-request` environment's MLFLOW_TRACKING_TOKEN; "
            "docs/setup.md)"
        ) from None


def download_verified(source_uri: str, found: ModelVersion, folder: Path) -> Path:
    """The champion's files, downloaded from the source, checked against its recorded digest.

    Nothing is deserialised before the check: files changed in the artifact store since their
    registration are refused here, before `evaluate` would load them.
    """
    client = MlflowClient(tracking_uri=source_uri, registry_uri=source_uri)
    uri = client.get_model_version_download_uri(found.name, found.version)
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(folder), tracking_uri=source_uri)
    model = Path(local)
    (model / integrity.REGISTRY_NOTE).unlink(missing_ok=True)  # not part of the model
    what = f"the registry's champion {found.name} v{found.version}"
    integrity.verify_artifacts(model, found.tags.get(integrity.DIGEST_TAG), what)
    return model


def register_copy(registry: Registry, found: ModelVersion, model: Path, metrics: dict) -> int:
    """Register the verified files in the local store as its champion, with their metadata."""
    with mlflow.start_run(run_name=f"champion-v{found.version}-from-the-registry") as run:
        mlflow.set_tags({"copied_from": f"{found.name} v{found.version}"})
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(model), artifact_path="model")
    registered = mlflow.register_model(f"runs:/{run.info.run_id}/model", registry.model_name)
    version = int(registered.version)
    registry.tag_version(version, {**found.tags, "copied_from_version": str(found.version)})
    if registry.record_digest(version) != found.tags[integrity.DIGEST_TAG]:
        raise SecurityError(f"the local copy of v{found.version} does not match its digest")
    registry.move_alias(CHAMPION, version, why=f"copy of the registry's champion v{found.version}")
    return version


def import_champion(registry: Registry, source_uri: str) -> dict:
    """Copy the source registry's champion into `registry` (the local store); what was done."""
    registry.configure()  # the local store first: a store that cannot be written fails before any read
    source = MlflowClient(tracking_uri=source_uri, registry_uri=source_uri)
    result = {"registry": where(source_uri), "registry_version": None, "champion": None}
    found = source_champion(source, registry.model_name, result["registry"])
    if found is None:
        return result
    run = source.get_run(found.run_id).data.metrics if found.run_id else {}
    metrics = {key: value for key, value in run.items() if key.startswith("holdout_")}
    with tempfile.TemporaryDirectory() as folder:
        model = download_verified(source_uri, found, Path(folder))
        version = register_copy(registry, found, model, metrics)
    return {**result, "registry_version": int(found.version), "champion": version}
