"""The smoke test: a running server checked against the registry, one named check after another.

The checks: ready; a request without a token is refused (always: a server that answers it fails, even
one built with serving.require_auth: false, which is never what staging or production should run);
metadata names the expected model and version; a row with a missing feature and one with a value
of the wrong kind are refused with a 4xx naming the feature (a 5xx means the server broke); `predict`
row by row, `predict_batch`, `predict_columns` and `predict_arrow` on the sample rows (gaps kept
where the model takes null) equal `registry.load_model(...).predict`; every answer carries the
expected version. Given the server's gRPC address, gRPC health answers SERVING and Predict (row by
row) and PredictBatch equal the registry's predictions too. With a `LoadTest`, a
bounded load test of /predict runs last, only when everything else passed.
{%- if cookiecutter.feature_store == "feast" %} `predict_entity` for
data.source's first entity answers as `predict` for the features the online store holds for it.
{%- endif %}

Every check runs and none raises: a check that cannot finish fails with the reason. Each result is
`{"name", "passed", "detail"}`; `markdown` renders the report for people.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
import httpx
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

{% if cookiecutter.feature_store == "feast" -%}
from .. import data, feature_store, loadtest
{% else -%}
from .. import loadtest
{% endif -%}
from ..errors import DeploymentError
from ..registry import Registry
from ..reports import cell, markdown_table
from ..serving.arrow import ARROW_STREAM
from ..serving.grpc.client import ModelClient, label
from ..settings import Settings
from .payloads import as_arrow, as_records, as_table, sample_rows

# What a check raises when the server answers something it cannot read: the check fails, the rest run.
CHECK_ERRORS = (httpx.HTTPError, grpc.RpcError, ValueError, KeyError, TypeError)


@dataclass
class Probe:
    """What the checks share: the server, the expected model, and its predictions on the sample rows."""

    settings: Settings
    url: str
    version: int
    rows: pd.DataFrame
    expected: np.ndarray  # the registry model's predictions for `rows`
    records: list[dict[str, Any]]  # `rows` as /predict bodies
    versions: list[Any] = field(default_factory=list)  # model_version of every prediction answer
    load: dict[str, Any] | None = None  # the load test's numbers, when it ran
    grpc_address: str | None = None  # host:port of the server's gRPC, when it is checked too

    @property
    def feature(self) -> str:
        """The feature the refusal checks leave out or spoil."""
        return str(self.rows.columns[0])

    @property
    def batch(self) -> pd.DataFrame:
        """The rows one batch request may carry."""
        return self.rows.head(self.settings.params.serving.max_batch_rows)


class Check(NamedTuple):
    name: str
    run: Callable[[httpx.Client, Probe], tuple[bool, str]]  # (passed, detail)


def _compare(task: str, served: list, expected: np.ndarray) -> tuple[bool, str]:
    """Exact for labels; np.allclose for regression, whose floats went through JSON."""
    served_array = np.asarray(served)
    if served_array.shape != expected.shape:
        return False, f"{len(served)} predictions for {len(expected)} rows"
    if task == "classification":
        different = np.flatnonzero(served_array != expected)
    else:
        close = np.isclose(served_array.astype(float), expected.astype(float))
        different = np.flatnonzero(~close)
    if different.size == 0:
        return (
            True,
            f"{len(expected)} of {len(expected)} rows equal the registry model's predictions",
        )
    first = different[0]
    return False, (
        f"{different.size} of {len(expected)} rows differ from the registry model; first: row "
        f"{first} served {served_array[first]!r}, registry {expected[first]!r}"
    )


def ready(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    status = http.get("/readyz").status_code
    return status == 200, f"/readyz answered HTTP {status}"


def refuses_without_token(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    # A bare request, not `http`: that client sends the token.
    status = httpx.post(f"{probe.url}/predict", json=probe.records[0], timeout=30).status_code
    open_server = " (the server runs without authentication)" if status < 400 else ""
    return status == 401, f"a request without a token: HTTP {status}{open_server}"


def metadata_version(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    name = probe.settings.params.registry.model_name
    answer = http.post("/metadata", json={}).raise_for_status().json()
    served = f"{answer['model_name']} v{answer['model_version']}"
    return (answer["model_name"], answer["model_version"]) == (name, probe.version), (
        f"serves {served}, expected {name} v{probe.version}"
    )


def _refused(http: httpx.Client, probe: Probe, body: dict[str, Any], what: str) -> tuple[bool, str]:
    """A 4xx whose body names the feature at fault."""
    answer = http.post("/predict", json=body)
    named = probe.feature in answer.text
    passed = 400 <= answer.status_code < 500 and named
    return passed, f"{what}: HTTP {answer.status_code}" + (
        "" if named else f", body does not name {probe.feature!r}"
    )


def rejects_missing_feature(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    missing = {key: value for key, value in probe.records[0].items() if key != probe.feature}
    return _refused(http, probe, missing, f"row without {probe.feature!r}")


def rejects_wrong_type(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    """Text for a numeric feature, or a number for a categorical one (an object column)."""
    text = probe.rows[probe.feature].dtype == object
    wrong_type = {**probe.records[0], probe.feature: 1.5 if text else "not-a-number"}
    what = "a number" if text else "a string"
    return _refused(http, probe, wrong_type, f"{probe.feature!r} as {what}")


def predict_matches_registry(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    answers = [
        http.post("/predict", json=record).raise_for_status().json() for record in probe.records
    ]
    probe.versions.extend(answer["model_version"] for answer in answers)
    served = [answer["prediction"] for answer in answers]
    return _compare(probe.settings.params.task, served, probe.expected)


def _batch_answer(probe: Probe, answer: httpx.Response, rows: int) -> tuple[bool, str]:
    """Compare a batch endpoint's answer for the first `rows` rows, and record its version."""
    answered = answer.raise_for_status().json()
    probe.versions.append(answered["model_version"])
    return _compare(probe.settings.params.task, answered["predictions"], probe.expected[:rows])


def predict_batch_matches_registry(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    batch = as_records(probe.batch)
    return _batch_answer(probe, http.post("/predict_batch", json={"rows": batch}), len(batch))


def predict_columns_matches_registry(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    table = as_table(probe.batch)
    return _batch_answer(probe, http.post("/predict_columns", json=table), len(table["data"]))


def predict_arrow_matches_registry(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    media_type = {"Content-Type": ARROW_STREAM}
    answer = http.post("/predict_arrow", content=as_arrow(probe.batch), headers=media_type)
    return _batch_answer(probe, answer, len(probe.batch))


{%- if cookiecutter.feature_store == "feast" %}


def predict_entity_matches_predict(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    """/predict_entity for data.source's first entity answers as /predict for the features the
    online store holds for it now (what `materialize` loaded: not necessarily training's)."""
    settings = probe.settings
    params = settings.params.feature_store
    if params is None:
        return True, "no feature_store in params: the service has no /predict_entity"
    source = data.read_table(settings.resolve(settings.params.data.source))
    key = source[params.entity_keys].head(1).to_dict(orient="records")[0]
    store = feature_store.open_store(feature_store.repo_of(settings))
    service = feature_store.feature_service(store, params.feature_service)
    online = store.get_online_features(features=service, entity_rows=[key]).to_dict()
    row = {str(name): online[str(name)][0] for name in probe.rows.columns}
    by_key = http.post("/predict_entity", json=key).raise_for_status().json()
    whole = http.post("/predict", json=row).raise_for_status().json()
    probe.versions.append(by_key["model_version"])
    named = ", ".join(f"{name}={value!r}" for name, value in key.items())
    return by_key == whole, (
        f"{named}: /predict_entity answered {by_key['prediction']!r}, /predict with its online "
        f"features {whole['prediction']!r}" + ("" if by_key == whole else f": {by_key} != {whole}")
    )
{%- endif %}


def responses_carry_version(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    """Every prediction answer of the checks before this one named the expected version."""
    wrong = [served for served in probe.versions if served != probe.version]
    if not probe.versions or wrong:
        return (
            False,
            f"{len(wrong)} of {len(probe.versions)} answers name another version: {wrong[:3]}",
        )
    return True, f"all {len(probe.versions)} prediction answers carry model_version {probe.version}"


def grpc_health(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    with ModelClient(str(probe.grpc_address), probe.settings.api_token()) as client:
        status = client.health()
    return status == "SERVING", f"gRPC health at {probe.grpc_address}: {status}"


def grpc_predict_matches_registry(http: httpx.Client, probe: Probe) -> tuple[bool, str]:
    """Predict row by row, then PredictBatch, over gRPC with the token in the metadata."""
    with ModelClient(str(probe.grpc_address), probe.settings.api_token()) as client:
        single = [client.predict(record) for record in probe.records]
        batch = client.predict_batch(as_records(probe.batch))
    probe.versions.extend(reply.model_version for reply in [*single, batch])
    task = probe.settings.params.task
    passed, detail = _compare(task, [label(reply.prediction) for reply in single], probe.expected)
    if not passed:
        return False, f"Predict: {detail}"
    batch_labels = [label(value) for value in batch.predictions]
    passed, detail = _compare(task, batch_labels, probe.expected[: len(probe.batch)])
    return passed, f"Predict and PredictBatch: {detail}" if passed else f"PredictBatch: {detail}"


@dataclass(frozen=True)
class LoadTest:
    """`smoke --load-seconds`: load-test /predict for `seconds` from `concurrency` client threads."""

    seconds: float
    concurrency: int = 4

    def __call__(self, http: httpx.Client, probe: Probe) -> tuple[bool, str]:
        tested = loadtest.load_test(
            probe.url,
            probe.records,
            self.seconds,
            concurrency=self.concurrency,
            headers=probe.settings.client_headers(),
        )
        probe.load = tested["stats"]
        return tested["passed"], tested["detail"]


def checks(with_grpc: bool = False) -> list[Check]:
    """The checks in the order they run: the version check reads what the prediction checks saw."""
    over_grpc = [
        Check("grpc_health", grpc_health),
        Check("grpc_predict_matches_registry", grpc_predict_matches_registry),
    ]
    return [
        Check("ready", ready),
        Check("refuses_without_token", refuses_without_token),
        Check("metadata_version", metadata_version),
        Check("rejects_missing_feature", rejects_missing_feature),
        Check("rejects_wrong_type", rejects_wrong_type),
        Check("predict_matches_registry", predict_matches_registry),
        Check("predict_batch_matches_registry", predict_batch_matches_registry),
        Check("predict_columns_matches_registry", predict_columns_matches_registry),
        Check("predict_arrow_matches_registry", predict_arrow_matches_registry),
{%- if cookiecutter.feature_store == "feast" %}
        Check("predict_entity_matches_predict", predict_entity_matches_predict),
{%- endif %}
        *(over_grpc if with_grpc else []),
        Check("responses_carry_version", responses_carry_version),
    ]


def _result(check: Check, http: httpx.Client, probe: Probe) -> dict[str, Any]:
    try:
        passed, detail = check.run(http, probe)
    except CHECK_ERRORS as error:
        passed, detail = False, f"{type(error).__name__}: {error}"
    return {"name": check.name, "passed": bool(passed), "detail": detail}


def _probe(
    settings: Settings, registry: Registry, url: str, version: int, grpc_address: str | None
) -> Probe:
    try:
        model = registry.load_model(version)
        profile = registry.feature_profile(version)
    except MlflowException as error:
        raise DeploymentError(f"cannot load v{version} from the registry: {error}") from error
    rows = sample_rows(settings, profile=profile)
    expected = np.asarray(model.predict(rows))
    records = as_records(rows)
    return Probe(
        settings, url.rstrip("/"), version, rows, expected, records, grpc_address=grpc_address
    )


def run(
    settings: Settings,
    registry: Registry,
    url: str,
    version: int,
    load: LoadTest | None = None,
    grpc_address: str | None = None,
) -> dict[str, Any]:
    """Check the server at `url` (and its gRPC at `grpc_address`, if given) against registered
    `version`; the smoke report."""
    probe = _probe(settings, registry, url, version, grpc_address)
    with httpx.Client(base_url=probe.url, timeout=30, headers=settings.client_headers()) as http:
        results = [_result(check, http, probe) for check in checks(grpc_address is not None)]
        if load is not None and all(item["passed"] for item in results):
            results.append(_result(Check("load_test", load), http, probe))
    report = {
        "passed": all(item["passed"] for item in results),
        "url": probe.url,
        "version": version,
        "model_name": settings.params.registry.model_name,
        "rows": len(probe.rows),
        "checks": results,
    }
    if probe.load is not None:
        report["load"] = probe.load
    return report


def markdown(report: dict[str, Any]) -> str:
    """The smoke report for people: `reports/smoke.md`, the job summary and the pull request comment."""
    verdict = "passed" if report["passed"] else "**FAILED**"
    rows = [
        [cell(item["name"]), "pass" if item["passed"] else "**FAIL**", cell(item["detail"])]
        for item in report["checks"]
    ]
    return "\n".join(
        [
            f"### Smoke test: {verdict}",
            "",
            f"Model v{report['version']} served at {cell(report['url'])}.",
            "",
            markdown_table(["check", "result", "detail"], rows),
        ]
    )
