"""A registered model as a BentoML bento: the stores, the build, and the archive CI moves between jobs.

`build` turns one registry version into a bento (model, package source, pinned runtime packages);
`export_bento` and `import_bento` carry it between machines as one file. The BentoML home (model and
bento stores) is $BENTOML_HOME, else `<project>/.bentoml`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from importlib.metadata import version as installed_version
from pathlib import Path

from mlflow.exceptions import MlflowException

{% if cookiecutter.feature_store == "feast" -%}
from .. import feature_store, integrity, model_card
{% else -%}
from .. import integrity, model_card
{% endif -%}
from ..errors import DeploymentError, SecurityError
from ..registry import Registry
{%- if cookiecutter.feature_store == "feast" %}
from ..serving.entities import key_types
from ..settings import FallbackModel, OnlineFeatures, ServiceArgs, Settings
{%- else %}
from ..settings import FallbackModel, ServiceArgs, Settings
{%- endif %}

# The project's package, one level above this one: the bento packs all of it and serves its service.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
SERVICE_MODULE = f"{PACKAGE_DIR.name}.serving.service"
SERVICE = f"{SERVICE_MODULE}:ModelService"
# What the service imports at run time, pinned to the versions that trained and tested the model.
# mlflow-skinny, not mlflow: the server only loads a model, and the full package adds a web UI stack.
RUNTIME_PACKAGES = (
    "bentoml",
    "mlflow-skinny",
    "scikit-learn",
    "skops",
    "pandas",
    "numpy",
    "scipy",
    "pydantic",
    "pyyaml",
    "limits",
    "pyarrow",
    "boto3",
{%- if cookiecutter.feature_store == "feast" %}
    "feast",  # /predict_entity reads the online store
{%- endif %}
)


@contextlib.contextmanager
def bentoml_stores(home: Path) -> Iterator[None]:
    """Point BentoML's model and bento stores at `home` for the duration of the block.

    BentoML reads BENTOML_HOME once per process and caches its stores, so setting the variable is too
    late once anything touched them, and one process that builds for two projects (the tests) would
    write both into the first. Patching the providers scopes the stores to this call instead.
    """
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer as container
    from bentoml._internal.models import ModelStore

    folders = {name: home / name for name in ("bentos", "models", "tmp", "envs")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    overrides = [
        (container.bentoml_home, str(home)),
        (container.bento_store_dir, str(folders["bentos"])),
        (container.model_store_dir, str(folders["models"])),
        (container.tmp_bento_store_dir, str(folders["tmp"])),
        (container.env_store_dir, str(folders["envs"])),
        (container.bento_store, BentoStore(str(folders["bentos"]))),
        (container.tmp_bento_store, BentoStore(str(folders["tmp"]))),
        (container.model_store, ModelStore(str(folders["models"]))),
        (container.bento_arguments, {}),  # build() sets them process-wide; restore on the way out
    ]
    with contextlib.ExitStack() as stack:
        for provider, value in overrides:
            stack.enter_context(provider.patch(value))
        yield


logger = logging.getLogger(__name__)

# The container's base image, one FROM line that Dependabot keeps current (pin it by digest).
BASE_IMAGE_FILE = "deploy/docker/Dockerfile"


def docker_options(settings: Settings) -> dict[str, str]:
    """BentoML's Docker options: the base image from BASE_IMAGE_FILE when the project has one."""
    path = settings.project_dir / BASE_IMAGE_FILE
    if not path.is_file():
        return {}
    images = [
        line.split()[1]
        for line in path.read_text().splitlines()
        if line.strip().upper().startswith("FROM ") and len(line.split()) > 1
    ]
    if len(images) != 1:
        raise DeploymentError(f"{path}: expected exactly one FROM line, found {len(images)}")
    return {"base_image": images[0]}


def pinned_by_digest(image: str) -> bool:
    """Whether an image reference names its content (`name@sha256:<64 hex>`), not a movable tag."""
    return re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image) is not None


def runtime_requirements() -> list[str]:
    """The service's runtime packages, pinned to the versions installed here."""
    return [f"{name}=={installed_version(name)}" for name in RUNTIME_PACKAGES]


def _package_copy(destination: Path) -> None:
    """The package source, without caches: the bento's code is what runs here, not a repo checkout."""
    shutil.copytree(
        PACKAGE_DIR,
        destination / PACKAGE_DIR.name,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def _import_checked(name: str, uri: str, digest: str | None, **info: dict):
    """The registry's model in the BentoML store, its files checked (digest, format, types) before
    anything packs them; nothing of it is kept when they fail."""
    import bentoml
    import bentoml.mlflow

    try:
        stored = bentoml.mlflow.import_model(name, uri, **info)
    except Exception as error:
        raise DeploymentError(f"cannot import {uri} into the BentoML store: {error}") from error
    try:
        integrity.checked_model_file(stored.path_of(integrity.MLFLOW_MODEL_FOLDER), digest, uri)
    except SecurityError as error:
        bentoml.models.delete(stored.tag)
        raise DeploymentError(str(error)) from None
    return stored


def fallback_version(version: int, champion: int | None, previous: int | None) -> int | None:
    """The version a bento of `version` falls back on: the one it replaces.

    The champion when the build is of a candidate (CD builds before promoting), else `previous` when
    `version` is already the champion (the pipeline promotes first; a rollback builds the champion
    it restored); none on the first deploy.
    """
    for replaced in (champion, previous):
        if replaced is not None and replaced != version:
            return replaced
    return None


def _packed_fallback(registry: Registry, version: int, stored) -> FallbackModel | None:
    """The replaced champion in the BentoML store, checked by the same loader, pinned for the service.

    None when it takes other features than `version` (`stored`): it could not answer the same rows.
    """
    import bentoml

    from ..registry import CHAMPION, PREVIOUS
    from ..serving.model_meta import read_model_meta

    fallback = fallback_version(
        version, registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)
    )
    if fallback is None:
        return None
    uri = registry.model_uri(fallback)
    try:
        digest = registry.recorded_digest(fallback)
    except MlflowException as error:
        raise DeploymentError(
            f"cannot read the fallback {uri} from the registry: {error}"
        ) from error
    name = stored.info.labels["registered_model"]
    labels = {"registered_model": name, "registered_version": str(fallback), "role": "fallback"}
    packed = _import_checked(name.lower(), uri, digest, labels=labels)
    features = [
        read_model_meta(Path(model.path_of(integrity.MLFLOW_MODEL_FOLDER))).features
        for model in (stored, packed)
    ]
    if features[0] != features[1]:
        logger.warning(
            "not packing fallback v%s: its features differ from v%s's", fallback, version
        )
        bentoml.models.delete(packed.tag)
        return None
    return FallbackModel(model_tag=str(packed.tag), model_sha256=digest, version=fallback)


{%- if cookiecutter.feature_store == "feast" %}


def online_features(settings: Settings) -> OnlineFeatures | None:
    """Where /predict_entity reads its rows, with the keys' types from Feast; None without a
    feature_store section in params (data.source holds the features: no endpoint by key)."""
    params = settings.params.feature_store
    if params is None:
        return None
    repo = feature_store.repo_of(settings)
    return OnlineFeatures(
        repo=str(repo),
        feature_service=params.feature_service,
        entity_keys=key_types(feature_store.open_store(repo), params.entity_keys),
    )
{%- endif %}


def build(settings: Settings, registry: Registry, version: int, with_fallback: bool = True) -> str:
    """Import registered `version` into the BentoML model store and build its bento; return the tag.

    The service learns which stored model to serve and the digest its files must have from the bento
    arguments, what it is (name, version, task) from labels on the stored model and its model card
    from the stored model's metadata, so the bento runs without params.yaml. The digest is the
    registry's, read now; the imported files are checked against it (and for format and types,
    `integrity.checked_model_file`) before the build packs them, and the service checks them again
    at every start. The champion it replaces is packed too, checked alike (`_packed_fallback`),
    unless `with_fallback` is False (a local canary: its own failures must show).
    """
    import bentoml

    params = settings.params
    name = params.registry.model_name
    uri = registry.model_uri(version)
    try:
        digest = registry.recorded_digest(version)
        card = model_card.read(registry, version)
    except MlflowException as error:
        raise DeploymentError(f"cannot read {uri} from the registry: {error}") from error
    labels = {"registered_model": name, "registered_version": str(version), "task": params.task}
    # The version's model card travels with the model for GET /model_card (none: trained before cards).
    metadata = {} if card is None else {model_card.BENTO_METADATA_KEY: json.dumps(card)}
    with bentoml_stores(settings.bentoml_home), tempfile.TemporaryDirectory() as context:
        stored = _import_checked(name.lower(), uri, digest, labels=labels, metadata=metadata)
        fallback = _packed_fallback(registry, version, stored) if with_fallback else None
        _package_copy(Path(context))
        # The service reads its model at import; a module cached from an earlier build in this
        # process would pack that build's model instead.
        sys.modules.pop(SERVICE_MODULE, None)
        try:
            bento = bentoml.build(
                SERVICE,
                name=name.lower(),
                build_ctx=context,
                description=f"{name} v{version} ({params.task}) from {uri}",
                labels={"model_name": name, "model_version": str(version), "task": params.task},
                args=ServiceArgs(
                    model_tag=str(stored.tag),
                    model_sha256=digest,
                    serving=params.serving,
                    monitoring=params.monitoring,
                    fallback=fallback,
{%- if cookiecutter.feature_store == "feast" %}
                    online_features=online_features(settings),
{%- endif %}
                ).model_dump(mode="json"),
                python={"packages": runtime_requirements(), "lock_packages": False},
                docker=docker_options(settings),
            )
        except Exception as error:
            raise DeploymentError(f"bento build for {uri} failed: {error}") from error
        finally:
            sys.modules.pop(SERVICE_MODULE, None)
    return str(bento.tag)


def export_bento(settings: Settings, bento_tag: str, path: Path | str) -> str:
    """Write a bento, with the models it serves, to one archive file: the artifact CI moves between
    jobs, and (unpacked) a Docker build context with its Dockerfile at `env/docker/Dockerfile`."""
    import bentoml

    path = Path(path).resolve()  # bentoml reads a relative path as relative to the filesystem root
    path.parent.mkdir(parents=True, exist_ok=True)
    with bentoml_stores(settings.bentoml_home):
        try:
            return bentoml.export_bento(bento_tag, str(path))
        except Exception as error:
            raise DeploymentError(f"cannot export bento {bento_tag} to {path}: {error}") from error


def import_bento(settings: Settings, path: Path | str) -> tuple[str, int]:
    """Import an archive written by `export_bento` (a no-op when the store already holds that bento);
    return its tag and the model version it serves."""
    import bentoml
    import yaml

    path = Path(path).resolve()
    try:
        with tarfile.open(path) as archive:
            names = {name.removeprefix("./"): name for name in archive.getnames()}
            with archive.extractfile(names["bento.yaml"]) as info:
                described = yaml.safe_load(info)
        tag = f"{described['name']}:{described['version']}"
    except (OSError, KeyError, TypeError, tarfile.TarError, yaml.YAMLError) as error:
        raise DeploymentError(f"{path} is not a bento archive: {error}") from error
    with bentoml_stores(settings.bentoml_home):
        try:
            bento = bentoml.get(tag)
        except bentoml.exceptions.NotFound:
            try:
                bento = bentoml.import_bento(str(path))
            except Exception as error:
                raise DeploymentError(f"cannot import a bento from {path}: {error}") from error
        return str(bento.tag), int(bento.info.labels["model_version"])
