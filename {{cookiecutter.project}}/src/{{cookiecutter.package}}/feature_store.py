"""The features from Feast (feature_repo/): the table training reads, joined point-in-time; the rows the
service fetches by entity key; the online store kept loaded.

data.source is the *entity frame*: each label with its entity keys and the time it became known
(feature_store.event_timestamp in params). Feast joins to each row the newest feature values known at
that time and never later ones, so no feature from after the label leaks into training: the most
common silent leak of a model in production. The definitions live in feature_repo/features.py and are
applied (as `feast apply` does) before every read, so the registry never lags behind the code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import data
from .errors import DataError, SettingsError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from .params import FeatureStoreParams
    from .settings import Settings

# Where an online store that was never loaded starts: every entity's latest values, whatever their age.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.cache
def open_store(repo: Path) -> FeatureStore:
    """The Feast store of `repo` (its feature_store.yaml), its definitions applied: once per process."""
    if not (repo / "feature_store.yaml").is_file():
        raise SettingsError(f"{repo}: no feature_store.yaml (feature_store.repo in params)")
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    store.apply(definitions(repo))
    return store


def definitions(repo: Path) -> list[Any]:
    """The Feast objects (entities, sources, views, services) of every Python file in `repo`, as
    `feast apply` collects them."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, FeatureService)
    found: list[Any] = []
    for path in sorted(repo.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"feature_repo_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, kinds) and all(value is not seen for seen in found)
        ]
    if not found:
        raise SettingsError(f"{repo}: no Feast definitions in its Python files")
    return found


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        known = [service.name for service in store.list_feature_services()]
        raise SettingsError(
            f"feature_store.feature_service {name!r} is not defined in "
            f"{store.repo_path}; its feature services are {known}"
        ) from None


def repo_of(settings: Settings) -> Path:
    if settings.params.feature_store is None:
        raise SettingsError(
            f"{settings.params_file}: no feature_store section: data.source holds the features"
        )
    return Path(settings.resolve(settings.params.feature_store.repo))


def entity_frame(frame: pd.DataFrame, params: FeatureStoreParams, source: str) -> pd.DataFrame:
    """`frame` with its event timestamps as UTC datetimes; a DataError naming what is missing or
    which rows hold no time."""
    columns = [str(name) for name in frame.columns]
    needed = [*params.entity_keys, params.event_timestamp]
    if missing := [name for name in needed if name not in columns]:
        raise DataError(
            f"{source} has no column {missing} (feature_store.entity_keys and event_timestamp "
            f"in params); columns are {columns}"
        )
    times = pd.to_datetime(frame[params.event_timestamp], utc=True, errors="coerce")
    if bad := [int(row) for row in frame.index[times.isna()][:5]]:
        raise DataError(
            f"{source}: {int(times.isna().sum())} rows have no readable "
            f"{params.event_timestamp!r} (rows {bad}...)"
        )
    return frame.assign(**{params.event_timestamp: times})


def training_table(settings: Settings) -> pd.DataFrame:
    """data.source joined point-in-time with the feature service's features, without the entity keys
    and timestamps (the model never reads them), in the same row order on every run."""
    params = settings.params.feature_store
    source = settings.resolve(settings.params.data.source)
    entities = entity_frame(data.read_table(source), params, source)
    store = open_store(repo_of(settings))
    service = feature_service(store, params.feature_service)
    keys = [*params.entity_keys, params.event_timestamp]
    # Feast is asked for each (entity, time) once, and every label is joined back to its answer:
    # the file offline store leaves out a label whose entity had no value yet at its time (and
    # merges labels of the same entity and time), where a label must keep its row, with gaps.
    moments = entities[keys].drop_duplicates()
    joined = store.get_historical_features(entity_df=moments, features=service).to_df()
    joined[params.event_timestamp] = joined[params.event_timestamp].astype(
        entities[params.event_timestamp].dtype
    )
    table = entities.merge(joined, on=keys, how="left", validate="many_to_one")
    table = table.sort_values(keys, kind="stable").reset_index(drop=True)
    # The features, then the entity frame's own columns (the target) with the types it gave them.
    own = [name for name in entities.columns if name not in keys]
    features = [name for name in joined.columns if name not in keys]
    return table[features + own]


def lineage(settings: Settings) -> dict[str, str]:
    """Which features made a model, as tags of its run and version: the feature service, and each
    of its views with the registry's version and a digest of its definition."""
    store = open_store(repo_of(settings))
    service = feature_service(store, settings.params.feature_store.feature_service)
    views = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        digest = hashlib.sha256(view.to_proto().spec.SerializeToString(deterministic=True))
        number = view.current_version_number
        version = "latest" if number is None else f"v{number}"
        views.append(f"{view.name}@{version}:{digest.hexdigest()[:12]}")
    return {"feast_feature_service": service.name, "feast_feature_views": ",".join(views)}


@dataclass(frozen=True)
class Materialized:
    view: str
    start: datetime
    end: datetime


def materialize(settings: Settings, end: datetime | None = None) -> list[Materialized]:
    """Load the online store with the values up to `end` (default now): each view from where its
    last load ended, or from the start of its data when it was never loaded."""
    store = open_store(repo_of(settings))
    end = end or datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)  # a time without a zone is UTC
    loaded = []
    for view in store.list_feature_views():
        start = view.most_recent_end_time or EPOCH
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        store.materialize(start, end, feature_views=[view.name])
        loaded.append(Materialized(view.name, start, end))
    return loaded
