"""The MLflow model registry as the single source of truth for which model serves.

Three aliases (registry stages are deprecated in MLflow): `champion` serves, `challenger` is the latest
trained candidate, `previous` is where a rollback goes. Every alias move is written to an audit trail on
the registered model (who, what, when, why), so `history` can show how production got where it is.
Alias moves hold the registry's lock (`registry_lock`): two runs never interleave theirs.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import integrity, registry_lock
from .errors import RegistryError, StateError
from .settings import Settings

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
_AUDIT_PREFIX = "audit."


def _locked(method: Callable) -> Callable:
    """A Registry method that moves aliases: it runs holding the registry's lock."""

    @functools.wraps(method)
    def holding_the_lock(self: Registry, *args, **kwargs):
        with self._alias_lock():
            return method(self, *args, **kwargs)

    return holding_the_lock


def describe(version: int | None) -> str:
    """A version as messages name it: `v3`, or `none` when an alias points nowhere."""
    return "none" if version is None else f"v{version}"


def _configure(settings: Settings) -> None:
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


def model_uri(name: str, version: int) -> str:
    return f"models:/{name}/{version}"


def recorded_digest(client: MlflowClient, name: str, version: int) -> str | None:
    """The digest of `name` v`version`'s files, as tagged at registration."""
    return client.get_model_version(name, str(version)).tags.get(integrity.DIGEST_TAG)


@dataclass(frozen=True)
class VerifiedModel:
    """A registered model's files, downloaded and checked by `integrity`, and the model they hold."""

    model: Any
    folder: Path  # the files, whose digest is `digest`: another process may load them again
    digest: str
    what: str  # `name vN`, as errors name it


def download_verified(client: MlflowClient, name: str, version: int, folder: str) -> VerifiedModel:
    """Download `name` v`version` into `folder` and load it through `integrity.load_model`, never
    through MLflow (which trusts the model's own MLmodel): the files must have the digest recorded
    at registration before any is read. Takes a client, not a Registry: a Spark job has no params.
    """
    expected = recorded_digest(client, name, version)
    what = f"{name} v{version}"
    local = mlflow.artifacts.download_artifacts(model_uri(name, version), dst_path=folder)
    model = integrity.load_model(local, expected, what)
    return VerifiedModel(model, Path(local), str(expected), what)


def feature_profile(name: str, version: int) -> dict[str, dict]:
    """What training saw of each feature of `name` v`version` (its MLmodel metadata, `profile`)."""
    metadata = mlflow.models.get_model_info(model_uri(name, version)).metadata or {}
    return metadata.get("feature_profile") or {}


class Registry:
    """The project's registered model, for one command: make it once, pass it to whoever needs it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.model_name = settings.params.registry.model_name
        self._github = settings.env.github  # who and which run the audit trail records
        self._client: MlflowClient | None = None
        self._lock_held = False  # promote holds the lock across the moves it makes

    def configure(self) -> MlflowClient:
        """Configure MLflow on first use, once for this registry; the client bound to the store.

        MLflow's global configuration is needed besides the client: `mlflow.start_run`,
        `mlflow.sklearn.log_model`, `download_artifacts` and BentoML's import of a `models:/` URI
        read it. Waiting for the first use leaves the store untouched by a command that fails before
        it needs the registry (invalid data).
        """
        if self._client is None:
            _configure(self._settings)
            uri = self._settings.tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    @property
    def client(self) -> MlflowClient:
        return self.configure()

    @contextmanager
    def _alias_lock(self) -> Iterator[None]:
        """Hold the registry's lock on the aliases, once for moves that nest (promote, rollback)."""
        if self._lock_held:
            yield
            return
        params = self._settings.params.registry
        holder = f"{self._github.actor or getpass.getuser()}, run {self._github.run_id or 'local'}"
        with registry_lock.held(
            self.client,
            self.model_name,
            holder,
            params.lock_wait_seconds,
            params.lock_expiry_seconds,
        ):
            self._lock_held = True
            try:
                yield
            finally:
                self._lock_held = False

    def alias_version(self, alias: str) -> int | None:
        """The version behind an alias, or None when the model or the alias does not exist yet."""
        try:
            aliases = self.client.get_registered_model(self.model_name).aliases
        except MlflowException:
            return None
        return int(aliases[alias]) if alias in aliases else None

    def aliases(self) -> dict[str, int]:
        return {
            alias: version
            for alias in (CHAMPION, CHALLENGER, PREVIOUS)
            if (version := self.alias_version(alias)) is not None
        }

    def version_or_champion(self, version: int | None) -> int:
        """`version` when given, else the champion's; StateError when there is no champion yet."""
        version = version or self.alias_version(CHAMPION)
        if version is None:
            raise StateError("there is no champion yet: promote a model or pass --version")
        return version

    def rollout_pair(self, version: int | None) -> tuple[int, int]:
        """The champion, and the candidate to roll out beside it (`version`, else the challenger)."""
        champion = self.alias_version(CHAMPION)
        candidate = version or self.alias_version(CHALLENGER)
        if champion is None or candidate is None or champion == candidate:
            raise StateError(
                f"a rollout needs a champion and another candidate (champion {describe(champion)}, "
                f"candidate {describe(candidate)}); the first model is promoted without one"
            )
        return champion, candidate

    def model_uri(self, version: int) -> str:
        return model_uri(self.model_name, version)

    def load_model(self, version: int):
        """The registered scikit-learn pipeline itself (predict_proba, no pyfunc layer).

        Loaded by `integrity.load_model`, never by MLflow (which trusts the model's own MLmodel):
        the downloaded files must have the digest recorded at registration before any is read.
        """
        with tempfile.TemporaryDirectory() as folder:
            return self.download_verified(version, folder).model

    def download_verified(self, version: int, folder: str) -> VerifiedModel:
        """`version`'s files in `folder`, digest checked, and its model (`download_verified`)."""
        return download_verified(self.client, self.model_name, version, folder)

    def feature_profile(self, version: int) -> dict[str, dict]:
        """What training saw of each feature of `version` (its MLmodel metadata, `profile`)."""
        self.configure()
        return feature_profile(self.model_name, version)

    def holdout_metric(self, version: int, metric: str) -> float:
        """What `version` scored on the frozen holdout at training, as logged on its run."""
        run_id = self.client.get_model_version(self.model_name, str(version)).run_id
        metrics = self.client.get_run(run_id).data.metrics
        if f"holdout_{metric}" not in metrics:
            raise RegistryError(f"v{version} (run {run_id}) has no holdout_{metric} metric logged")
        return metrics[f"holdout_{metric}"]

    def tag_version(self, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, value)

    def record_digest(self, version: int) -> str:
        """Digest the registered files of `version` as the registry hands them out; tag the version.

        Every load verifies the files against this tag (`load_model`); the build reads it when it
        packs the model and pins it into the bento, so a model file changed in the artifact store
        after registration is never loaded nor served.
        """
        self.configure()
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(self.model_uri(version), dst_path=folder)
            digest = integrity.artifact_digest(local)
        self.tag_version(version, {integrity.DIGEST_TAG: digest})
        return digest

    def recorded_digest(self, version: int) -> str | None:
        return recorded_digest(self.client, self.model_name, version)

    def gate_decision(self, version: int) -> str | None:
        """The gate's verdict on `version`, as `log_evaluation` recorded it (None if never evaluated)."""
        return self.client.get_model_version(self.model_name, str(version)).tags.get(
            "gate_decision"
        )

    def _record(self, action: str, **details) -> dict:
        sequence = len(self.history()) + 1
        entry = {
            "sequence": sequence,
            "action": action,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": self._github.actor or getpass.getuser(),
            "run": self._github.run_id or "local",
            **details,
        }
        self.client.set_registered_model_tag(
            self.model_name, f"{_AUDIT_PREFIX}{sequence:06d}", json.dumps(entry)
        )
        return entry

    def history(self) -> list[dict]:
        """Every recorded alias move, oldest first."""
        try:
            tags = self.client.get_registered_model(self.model_name).tags
        except MlflowException:
            return []
        return [json.loads(tags[key]) for key in sorted(tags) if key.startswith(_AUDIT_PREFIX)]

    @_locked
    def move_alias(self, alias: str, version: int | None, why: str, action: str = "move") -> dict:
        """Point `alias` at `version` (None removes it) and record the move as `action`."""
        before = self.alias_version(alias)
        if version is None:
            if before is not None:
                self.client.delete_registered_model_alias(self.model_name, alias)
        else:
            try:
                self.client.get_model_version(self.model_name, str(version))
            except MlflowException:
                raise RegistryError(
                    f"{self.model_name} has no version {version}; nothing changed"
                ) from None
            self.client.set_registered_model_alias(self.model_name, alias, str(version))
        return self._record(action, alias=alias, before=before, after=version, why=why)

    @_locked
    def promote(self, version: int, expected_champion: int | None, why: str) -> dict:
        """Make `version` the champion, if the champion is still the one the evaluation compared against.

        Compare-and-set: if another run moved `champion` since the evaluation, promoting now would skip
        a comparison, so it is refused. The champion is read holding the registry's lock, so of two
        promotions against the same champion only the first passes. The old champion becomes `previous`.
        """
        current = self.alias_version(CHAMPION)
        if current != expected_champion:
            raise RegistryError(
                f"champion moved since the evaluation (expected v{expected_champion}, "
                f"found v{current}); evaluate again before promoting"
            )
        if current == version:
            raise RegistryError(f"v{version} is already the champion")
        previous = self.alias_version(PREVIOUS)
        if current is not None:
            self.move_alias(PREVIOUS, current, why=f"v{version} promoted over it")
        try:
            self.move_alias(CHAMPION, version, why=why, action="promote")
        except MlflowException as error:
            self.move_alias(PREVIOUS, previous, why=f"promotion of v{version} failed")
            raise RegistryError(
                f"promotion of v{version} failed, nothing changed: {error}"
            ) from error
        return {"champion": version, "previous": current, "replaced_previous": previous}

    @_locked
    def revert_promotion(self, promotion: dict, why: str) -> dict:
        """Undo what `promote` returned: champion and previous point where they did before it.

        Unlike `rollback`, this works for a first promotion too: the champion alias is removed again.
        """
        failed = promotion["champion"]
        self.move_alias(
            CHAMPION, promotion["previous"], why=f"from v{failed}: {why}", action="rollback"
        )
        self.move_alias(PREVIOUS, promotion["replaced_previous"], why=f"rollback of v{failed}")
        return {"champion": promotion["previous"], "rolled_back_from": failed}

    def _previous_before(self, version: int | None) -> int | None:
        """The champion that `version` replaced, read from the audit trail (None if it was the first)."""
        for entry in reversed(self.history()):
            if entry["action"] == "promote" and entry["after"] == version:
                return entry["before"]
        return None

    @_locked
    def rollback(self, why: str, to_version: int | None = None) -> dict:
        """Move `champion` back to `previous` (or to `to_version`), and `previous` one step further back.

        Walking the audit trail means repeated rollbacks keep going back in history instead of
        bouncing between the last two versions.
        """
        current = self.alias_version(CHAMPION)
        target = to_version if to_version is not None else self.alias_version(PREVIOUS)
        if current is None:
            raise RegistryError("there is no champion to roll back")
        if target is None:
            raise RegistryError(f"v{current} is the first champion; there is no previous version")
        if target == current:
            raise RegistryError(f"v{target} is already the champion")
        self.move_alias(CHAMPION, target, why=f"from v{current}: {why}", action="rollback")
        before_target = self._previous_before(target)
        self.move_alias(
            PREVIOUS, None if before_target == current else before_target, why="rollback"
        )
        return {"champion": target, "rolled_back_from": current}

    @_locked
    def undo_promotion_if_champion(
        self, version: int, why: str, to_version: int | None = None
    ) -> dict:
        """Undo the promotion of `version`, and only that: what a deploy does when a later step failed.

        If the champion is no longer `version` (never promoted, or moved since), nothing changes and
        the result says `skipped`. If `version` was the first champion, the alias is removed again, as
        `pipeline` does after a failed first deployment. Otherwise this is a `rollback`.
        """
        current = self.alias_version(CHAMPION)
        if current != version:
            return {
                "skipped": True,
                "champion": current,
                "why": f"the champion is {describe(current)}, not v{version}: nothing to roll back",
            }
        if to_version is None and self.alias_version(PREVIOUS) is None:
            first = {"champion": version, "previous": None, "replaced_previous": None}
            return self.revert_promotion(first, why=why)
        return self.rollback(why=why, to_version=to_version)

    def log_evaluation(self, version: int, comparison, plots: list) -> None:
        """Attach the gate's numbers, verdict and plots to the candidate's training run and version."""
        run_id = self.client.get_model_version(self.model_name, str(version)).run_id
        metrics = {f"eval_candidate_{k}": v for k, v in comparison.candidate_metrics.items()}
        metrics |= {f"eval_champion_{k}": v for k, v in comparison.champion_metrics.items()}
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        for path in plots:
            self.client.log_artifact(run_id, str(path), artifact_path="evaluation")
        self.tag_version(
            version,
            {
                "gate_decision": comparison.decision,
                "gate_reasons": "; ".join(comparison.reasons)[:4000],
                "evaluated_against": str(comparison.champion_version or "none"),
            },
        )
