"""/predict_entity: the request names an entity by its keys; Feast's online store has the features.

Where the Feast repository is travels with the bento (`settings.OnlineFeatures`, absolute from the
build); $FEATURE_REPO overrides it where the bento runs: a container mounts its own
feature_store.yaml, pointing at Redis or DynamoDB (Feast expands ${VARIABLES} in it). The service
only reads the store: `materialize` applies the definitions and loads it. The row it fetches goes the
way of a /predict row (profile checks, prediction log, metrics), so they all see fetched features.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import JSONResponse

from ..errors import SettingsError
from .http_errors import error_body
from .row_values import misplaced_values, rows_dtype, value_kinds

if TYPE_CHECKING:
    from feast import FeatureStore

REPO_VARIABLE = "FEATURE_REPO"
# A key's JSON type -> what the body takes: strictly, never a float or a boolean, which Feast would
# silently turn into another entity's key (1.5 and true into 1), nor text for a number.
KEY_TYPES: dict[str, Any] = {
    "integer": Annotated[int, Field(ge=-(2**63), le=2**63 - 1)],  # Feast's widest integer key
    "string": str,
}


def key_types(store: FeatureStore, keys: list[str]) -> dict[str, str]:
    """Each of `keys` with the JSON type (of KEY_TYPES) of its entity's values in Feast: the build
    documents the body with them, a worker checks that its store still has them."""
    from feast import ValueType

    integers = {ValueType.INT32, ValueType.INT64}
    join_keys = {
        entity.join_key: "integer" if entity.value_type in integers else "string"
        for entity in store.list_entities()
    }
    if unknown := [name for name in keys if name not in join_keys]:
        raise SettingsError(
            f"feature_store.entity_keys {unknown} are no join keys of the entities in "
            f"{store.repo_path}; they are {sorted(join_keys)}"
        )
    return {name: join_keys[name] for name in keys}


def key_model(keys: Mapping[str, str]) -> type[BaseModel]:
    """The /predict_entity body: each entity key once, of its type (`key_types`), no other field."""
    return create_model(
        "EntityKey",
        __config__=ConfigDict(extra="forbid", strict=True),
        __doc__="The entity to score, by its keys: the online store has its features.",
        **{
            f"key_{index}": (KEY_TYPES[kind], Field(alias=name, title=name))
            for index, (name, kind) in enumerate(keys.items())
        },
    )


def _error(status: int, message: str, details: list[Any] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, details=details), status_code=status)


class OnlineRows:
    """One worker's reader of the online store: opened once when the worker starts, then read per
    request (blocking I/O: call `row` in a thread). Fails at start, naming what is missing, when the
    store cannot give the model its features."""

    def __init__(
        self,
        repo: str,
        service: str,
        keys: Mapping[str, str],
        features: list[str],
        profile: Mapping[str, Mapping[str, Any]],
    ) -> None:
        from feast import FeatureStore
        from feast.errors import FeatureServiceNotFoundException

        if not (Path(repo) / "feature_store.yaml").is_file():
            raise RuntimeError(
                f"{repo}: no feature_store.yaml (the bento's Feast repository; ${REPO_VARIABLE} "
                "names another)"
            )
        self.store = FeatureStore(repo_path=repo)
        try:
            self.service = self.store.get_feature_service(service)
        except FeatureServiceNotFoundException:
            raise RuntimeError(
                f"feature service {service!r} is not in the Feast registry of {repo}: "
                "`materialize` applies the definitions and loads the online store"
            ) from None
        fetched = {
            feature.name
            for view in self.service.feature_view_projections
            for feature in view.features
        }
        if missing := [name for name in features if name not in fetched]:
            raise RuntimeError(f"feature service {service!r} lacks the model's features {missing}")
        if (found := key_types(self.store, list(keys))) != dict(keys):
            raise RuntimeError(f"the bento takes entity keys {dict(keys)}, {repo} has {found}")
        self.features = features
        self.dtype, self.kinds = rows_dtype(features, profile), value_kinds(features, profile)

    def row(self, key: dict[str, Any]) -> np.ndarray | JSONResponse:
        """The entity's features as one row in the model's order, or the error to answer: 404 for an
        entity the store does not hold, 422 for a row with gaps the model does not take."""
        response = self.store.get_online_features(features=self.service, entity_rows=[key])
        fetched = response.to_dict()
        values = [fetched[name][0] for name in self.features]
        named = ", ".join(f"{name}={value!r}" for name, value in key.items())
        if all(value is None for value in values):
            return _error(
                404,
                f"no features for {named} in the online store: an unknown entity, or one "
                "`materialize` has not loaded yet (it loads the store with the latest values)",
            )
        row = np.array([values], dtype=self.dtype)
        if misplaced := misplaced_values(row, self.features, *self.kinds):
            return _error(
                422,
                f"the online store's features for {named} have gaps the model does not take",
                details=[{"field": name, "problem": problem} for _, name, problem in misplaced],
            )
        return row
