"""Small test models that misbehave on purpose, for the rollout tests.

`Misbehaving` wraps a trained model and answers exactly like it, except that every `fail_every`-th
call to `predict` or `predict_proba` raises (the service answers HTTP 500) and every call first sleeps `delay_seconds`
(the service's APIs run on its event loop, so the whole server slows down, as a heavy model would).
`register` logs it as a real registered model version, pickled by value with cloudpickle so that the
server needs none of the test code; it is then built into a real bento and served by the real
service. The rollout meets real misbehaving servers behind real nginx, not patched functions.

Every loader refuses pickled models by default (they run code on load): `allow_pickled_models` sets
the one opt-in, ALLOW_PICKLED_MODELS=1, for the test process and the servers it starts.
"""

from __future__ import annotations

import itertools
import sys
import time

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator

from {{ cookiecutter.package }} import integrity, profile
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import Settings


class Misbehaving(BaseEstimator):
    def __init__(self, model, fail_every: int = 0, delay_seconds: float = 0.0) -> None:
        self.model = model
        self.fail_every = fail_every
        self.delay_seconds = delay_seconds

    def _misbehave(self) -> None:
        if not hasattr(self, "_calls"):
            self._calls = itertools.count(1)
        time.sleep(self.delay_seconds)
        if self.fail_every and next(self._calls) % self.fail_every == 0:
            raise RuntimeError("a deliberate failure of the misbehaving test model")

    @property
    def classes_(self):
        return self.model.classes_

    # The service calls one of the two per batch of rows (predict_proba for a classifier).
    def predict(self, features):
        self._misbehave()
        return self.model.predict(features)

    def predict_proba(self, features):
        self._misbehave()
        return self.model.predict_proba(features)


def allow_pickled_models(monkeypatch) -> None:
    """Let this test load and serve the pickled models of `register` (its servers inherit it)."""
    monkeypatch.setenv(integrity.PICKLED_MODELS_VARIABLE, "1")


def register(settings: Settings, model: Misbehaving, features: pd.DataFrame) -> int:
    """Register `model` as a new version of the project's model; return the version."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    registry = Registry(settings)
    registry.configure()  # the run goes to the project's experiment
    sample = features.head(20)
    with mlflow.start_run(run_name="misbehaving test model"):
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            signature=infer_signature(sample, model.model.predict(sample)),
            registered_model_name=settings.params.registry.model_name,
            pip_requirements=["scikit-learn", "cloudpickle"],
            metadata={"feature_profile": profile.feature_profile(features, numbers_nullable=True)},
        )
    version = int(logged.registered_model_version)
    registry.record_digest(version)  # as training does: every loader verifies it
    return version
