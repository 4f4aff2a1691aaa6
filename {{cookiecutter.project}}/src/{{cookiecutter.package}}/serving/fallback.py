"""When the served model raises: the fallback answers, or nobody does (503).

The build packs the champion it replaces beside the served model (`deploy.bento`, `ServiceArgs.fallback`);
the service loads both through the one loader, digests checked. A call the served model raises on
goes to the fallback under `serving.on_model_error: fallback`, and its answer names the fallback's
version; under `unavailable`, with no fallback packed, or when the fallback raises too, the call
fails as `Unavailable` (503), never a 500 with a traceback. Runs in the model thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import Unavailable
from ..integrity import MLFLOW_MODEL_FOLDER, load_model
from ..settings import FallbackModel
from .batcher import Scores, warnings_ignored

logger = logging.getLogger("bentoml.service")
FALLBACK, UNAVAILABLE = "fallback", "unavailable"  # serving.on_model_error
# A burst of errors ends after this many seconds without one: a model that raises on every
# request logs one line per burst, not one per request.
QUIET_SECONDS = 60.0


class BurstLog:
    """Logs the first error of each burst, and how many followed it once the next burst starts."""

    def __init__(
        self, quiet_seconds: float = QUIET_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.quiet_seconds, self.clock = quiet_seconds, clock
        self.last_at: dict[str, float] = {}
        self.unlogged: dict[str, int] = {}

    def error(self, what: str, error: BaseException) -> bool:
        """Count an error of `what`; log it (and return True) when it starts a burst."""
        now = self.clock()
        last = self.last_at.get(what)
        self.last_at[what] = now
        if last is not None and now - last <= self.quiet_seconds:
            self.unlogged[what] = self.unlogged.get(what, 0) + 1
            return False
        earlier = self.unlogged.pop(what, 0)
        logger.error(
            "%s: %s: %s (logged once per burst; %d more in the previous burst)",
            what,
            type(error).__name__,
            error,
            earlier,
        )
        return True


@dataclass(frozen=True)
class Loaded:
    """A loaded model and the registered version it is."""

    model: Any
    version: int


def predicted(
    model: Any, model_input: Any, with_probability: bool
) -> tuple[list, np.ndarray | None]:
    """Predictions (and every class's probabilities) of one model call.

    A classifier runs once: its prediction is the class of highest probability, which is how
    scikit-learn's classifiers predict (a forest would otherwise walk every tree twice).
    """
    if not with_probability:
        return model.predict(model_input).tolist(), None
    probabilities = model.predict_proba(model_input)
    return model.classes_.take(probabilities.argmax(axis=1)).tolist(), probabilities


def warm_up(model: Any, model_input: Any | None, with_probability: bool) -> None:
    """One call of the model on its input example, before the server is ready. A model's first call
    pays one-off costs (lazy imports, first allocations): on the first request they would delay its
    answer and, measured, make the shedder take them for the model's pace and refuse the requests
    queued behind it. A failure is logged only: requests get what `on_model_error` says."""
    if model_input is None:
        return
    try:
        with warnings_ignored():
            predicted(model, model_input, with_probability)
    except Exception as error:
        logger.warning("warm-up: the model failed on its input example (%r)", error)


class Answering:
    """Which model answers a call: the served one, else (when it raises) the fallback or nobody."""

    def __init__(
        self,
        served: Loaded,
        fallback: Loaded | None,
        on_model_error: str,
        with_probability: bool,
        burst_log: BurstLog | None = None,
    ) -> None:
        self.served, self.with_probability = served, with_probability
        self.fallback = fallback if on_model_error == FALLBACK else None
        self.why_not = (
            "no fallback is packed" if fallback is None else "on_model_error is unavailable"
        )
        self.burst_log = burst_log or BurstLog()

    def scores(self, model_input: Any) -> Scores:
        """The served model's scores; the fallback's when it raised; Unavailable when none answers."""
        try:
            return Scores(*self._call(self.served, model_input), self.served.version)
        except Exception as error:
            self.burst_log.error(f"model v{self.served.version} raised", error)
        if self.fallback is None:
            raise Unavailable(f"model v{self.served.version} raised and {self.why_not}")
        try:
            return Scores(*self._call(self.fallback, model_input), self.fallback.version)
        except Exception as error:
            self.burst_log.error(f"fallback v{self.fallback.version} raised too", error)
            raise Unavailable(
                f"model v{self.served.version} and fallback v{self.fallback.version} raised"
            ) from None

    def _call(self, loaded: Loaded, model_input: Any) -> tuple[list, np.ndarray | None]:
        return predicted(loaded.model, model_input, self.with_probability)


def fallback_fits(
    served: Any, fallback: Any, features: list[str], with_probability: bool
) -> str | None:
    """Why the fallback cannot answer for the served model (other features or classes, or no
    probabilities where the service answers them), or None."""
    trained_on = [str(name) for name in getattr(fallback, "feature_names_in_", features)]
    if trained_on != features:
        return f"the fallback's features {trained_on} differ from the served model's {features}"
    classes = [str(label) for label in getattr(served, "classes_", [])]
    if classes != [str(label) for label in getattr(fallback, "classes_", [])]:
        return f"the fallback's classes differ from the served model's {classes}"
    if with_probability and not hasattr(fallback, "predict_proba"):
        return "the fallback has no predict_proba"
    return None


def load_fallback(
    packed: FallbackModel | None,
    name: str,
    served: Any,
    features: list[str],
    with_probability: bool,
) -> Loaded | None:
    """The packed fallback loaded by the one loader, digest checked like the served model; None
    when the build packed none. RuntimeError when it could not answer for the served model."""
    if packed is None:
        return None
    import bentoml

    folder = bentoml.models.get(packed.model_tag).path_of(MLFLOW_MODEL_FOLDER)
    what = f"{name} v{packed.version} (fallback, {packed.model_tag})"
    model = load_model(folder, packed.model_sha256, what)
    if problem := fallback_fits(served, model, features, with_probability):
        raise RuntimeError(f"{what}: {problem}")
    return Loaded(model, packed.version)
