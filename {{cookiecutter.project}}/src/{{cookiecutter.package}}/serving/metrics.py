"""The service's own Prometheus series on /metrics, beside BentoML's, each labelled with the model
version: every API answer by endpoint and status (`model_requests_total`,
`model_request_duration_seconds`), the predictions made (`model_predictions_total` by class, or the
`model_prediction_value` histogram), the values outside the training profile, the answers of the
fallback model and the requests shed under overload."""

from __future__ import annotations

import functools
from collections import Counter

import bentoml

# Seconds; the rollout's and the alerts' latency limit (500 ms) falls on a bound.
REQUEST_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The series of one served model; `prediction_buckets` only matter for a regression."""

    def __init__(
        self, task: str, model_version: int, prediction_buckets: tuple[float, ...] | None
    ) -> None:
        self.classification = task == "classification"
        self.version = str(model_version)
        self.requests = bentoml.metrics.Counter(
            name="model_requests",
            documentation="API answers (refusals included) by endpoint, HTTP status, model version",
            labelnames=["endpoint", "status", "model_version"],
        )
        self.request_seconds = bentoml.metrics.Histogram(
            name="model_request_duration_seconds",
            documentation="Seconds from a request's arrival to the last byte of its answer",
            labelnames=["endpoint", "model_version"],
            buckets=REQUEST_SECONDS_BUCKETS,
        )
        if self.classification:
            self.predicted_classes = bentoml.metrics.Counter(
                name="model_predictions",
                documentation="Predictions made, by predicted class",
                labelnames=["model_version", "prediction"],
            )
        else:
            self.predicted_values = bentoml.metrics.Histogram(
                name="model_prediction_value",
                documentation="Predicted values; the buckets cut the training target in ten shares",
                labelnames=["model_version"],
                **({"buckets": prediction_buckets} if prediction_buckets else {}),
            )
        self.out_of_profile_values = bentoml.metrics.Counter(
            name="out_of_profile_values",
            documentation="Values outside the training profile, by feature (flagged or refused)",
            labelnames=["feature", "model_version"],
        )

        self.fallback_answers = bentoml.metrics.Counter(
            name="model_fallback_answers",
            documentation="Answers made by the fallback model because the served one raised",
            labelnames=["endpoint", "model_version"],
        )
        self.shed_requests = bentoml.metrics.Counter(
            name="model_shed_requests",
            documentation="Requests refused (503) at once: their wait for the model passed the deadline",
            labelnames=["endpoint", "model_version"],
        )

    def answer(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(
            endpoint=endpoint, status=str(status), model_version=self.version
        ).inc()
        self.request_seconds.labels(endpoint=endpoint, model_version=self.version).observe(seconds)

    def predictions(self, predictions: list) -> None:
        if self.classification:
            for label, count in Counter(predictions).items():
                self.predicted_classes.labels(
                    model_version=self.version, prediction=str(label)
                ).inc(count)
        else:
            histogram = self.predicted_values.labels(model_version=self.version)
            for value in predictions:
                histogram.observe(value)

    def answered_by(self, model_version: int, endpoint: str) -> None:
        """Counts an answer of `endpoint` made by another version than the served one: the fallback.

        Endpoints are labelled by their route, as in model_requests_total (`predict` -> `/predict`).
        """
        if str(model_version) != self.version:
            self.fallback_answers.labels(endpoint=f"/{endpoint}", model_version=self.version).inc()

    def shed(self, endpoint: str) -> None:
        self.shed_requests.labels(endpoint=f"/{endpoint}", model_version=self.version).inc()

    def out_of_profile(self, feature: str) -> None:
        self.out_of_profile_values.labels(feature=feature, model_version=self.version).inc()


@functools.cache
def for_model(
    task: str, model_version: int, prediction_buckets: tuple[float, ...] | None
) -> Metrics:
    """The series, made on first use (by ModelService.__init__, before any request), not at import.

    Builds import the service module too, sometimes twice in one process (`deploy.bento.build` drops
    it from sys.modules), and a series registered twice is an error: so they are made only in a
    serving worker, once, and cached here, in a module that a build does not drop.
    """
    return Metrics(task, model_version, prediction_buckets)
