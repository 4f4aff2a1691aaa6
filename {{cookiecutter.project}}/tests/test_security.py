"""Authentication, rate limits, input checks, model integrity and fuzzing of the served API.

The unit tests call the serving parts (guard, http_errors, openapi), integrity and profile directly; the others talk to real `bentoml serve` processes on
127.0.0.1: the shared server (default serving settings) and a strict one of the same model with
`out_of_profile: reject`, a low rate limit, tracing and the access log on, and four client tokens.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import integrity, registry
from {{ cookiecutter.package }}.deploy import payloads
from {{ cookiecutter.package }}.deploy.bento import bentoml_stores, build
from {{ cookiecutter.package }}.deploy.server import Server, serve
from {{ cookiecutter.package }}.errors import DeploymentError, SecurityError
from {{ cookiecutter.package }}.profile import PROFILE_MAX_CATEGORIES, ProfileCheck, feature_profile
from {{ cookiecutter.package }}.serving import guard, http_errors, openapi
from {{ cookiecutter.package }}.serving.arrow import ARROW_STREAM
from {{ cookiecutter.package }}.settings import Settings

from .conftest import probe_livez
from .shared_bento import Built, shared_build

ALPHA, BRAVO, CHARLIE, DELTA = (
    f"{name}-client-token-0123456789abcdef" for name in ("alpha", "bravo", "charlie", "delta")
)
STRICT_RATE = 40  # per minute and client: a slow machine cannot spread the requests past it
ERROR_FIELDS = {"status", "code", "message", "details", "request_id", "model_version"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def row(built: Built) -> dict[str, float]:
    return payloads.as_records(payloads.sample_rows(built.settings, rows=1))[0]


def assert_error(answer: httpx.Response, status: int, code: str) -> dict:
    """The one error shape, with the ids the headers carry too; returns the error object."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == ERROR_FIELDS and (error["status"], error["code"]) == (status, code)
    assert error["request_id"] == answer.headers["x-request-id"]
    assert str(error["model_version"]) == answer.headers["x-model-version"]
    assert "Traceback" not in answer.text
    return error


# --- the parts on their own --------------------------------------------------------------------


def test_tokens_come_from_the_variable_or_the_mounted_file(tmp_path: Path):
    secret = tmp_path / "tokens"
    secret.write_text(f"{ALPHA}\n\n  {BRAVO}  \n")
    assert guard.load_tokens({"SERVICE_API_TOKENS": f"{ALPHA},{BRAVO}"}) == [ALPHA, BRAVO]
    assert guard.load_tokens({"SERVICE_API_TOKENS_FILE": str(secret)}) == [ALPHA, BRAVO]
    assert guard.load_tokens({}) == []
    with pytest.raises(SecurityError, match="shorter than 32"):
        guard.load_tokens({"SERVICE_API_TOKENS": f"{ALPHA},short"})
    with pytest.raises(SecurityError, match=r"SERVICE_API_TOKENS_FILE=.*missing"):
        guard.load_tokens({"SERVICE_API_TOKENS_FILE": str(tmp_path / "missing")})


def test_the_digest_covers_every_model_file_but_the_registry_note(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "sub" / "model.skops").write_bytes(b"weights")
    digest = integrity.artifact_digest(tmp_path)
    (tmp_path / "registered_model_meta").write_text("model_name: x\n")
    assert integrity.artifact_digest(tmp_path) == digest
    integrity.verify_artifacts(tmp_path, digest, "the model")
    (tmp_path / "sub" / "model.skops").write_bytes(b"weightz")
    with pytest.raises(SecurityError, match="the model: model files changed"):
        integrity.verify_artifacts(tmp_path, digest, "the model")
    with pytest.raises(SecurityError, match="no model_sha256 was recorded"):
        integrity.verify_artifacts(tmp_path, None, "the model")


def test_errors_get_one_shape_and_server_errors_say_nothing_more():
    validation = json.dumps(
        {
            "error": "1 validation error",
            "detail": [{"loc": ["body", "age"], "msg": "Field required"}],
        }
    )
    shaped = http_errors.normalise_error(400, validation.encode())["error"]
    assert shaped["message"] == "age: Field required"
    assert shaped["details"] == [{"field": "age", "problem": "Field required"}]
    crash = http_errors.normalise_error(500, b'{"error": "ZeroDivisionError at model.py:12"}')
    assert "ZeroDivision" not in json.dumps(crash) and crash["error"]["code"] == "internal_error"
    assert http_errors.normalise_error(405, b"Method Not Allowed")["error"]["message"] == (
        "Method Not Allowed"
    )
    assert http_errors.normalise_error(413, b"[{}]")["error"]["code"] == "body_too_large"


def test_the_document_names_the_token_the_error_answers_and_null_defaults():
    def documented(auth: bool) -> dict:
        answer = {"schema": {"properties": {"probability": {"type": "number", "default": None}}}}
        operation = {
            "requestBody": {"content": {}},
            "responses": {"200": {"content": {"application/json": answer}}, "400": {}},
        }
        spec = openapi.document({"paths": {"/predict": {"post": operation}}}, ["/predict"], auth)
        return spec["paths"]["/predict"]["post"]

    operation = documented(auth=True)
    assert operation["security"] == [{"bearer": []}] and operation["requestBody"]["required"]
    assert set(operation["responses"]) == {
        "200",
        "400",
        "401",
        "413",
        "415",
        "422",
        "429",
        "500",
        "503",
    }
    error = operation["responses"]["429"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["probability"]["nullable"] is True
    unguarded = documented(auth=False)
    assert "security" not in unguarded and "401" not in unguarded["responses"]


def test_the_profile_records_ranges_missing_shares_and_categories():
    frame = pd.DataFrame(
        {
            "size": [1.0, 4.0, np.nan, 3.0],
            "kind": [0.0, 1.0, 1.0, 0.0],
            "colour": ["red", None, "blue", "red"],
        }
    )
    profile = feature_profile(frame, numbers_nullable=False)
    assert profile["size"]["min"] == 1.0 and profile["size"]["max"] == 4.0
    assert profile["size"]["missing_rate"] == 0.25
    assert profile["size"]["kind"] == "numeric" and profile["size"]["nullable"] is False
    assert profile["kind"]["categories"] == [0.0, 1.0]
    colour = profile["colour"]
    assert colour["kind"] == "categorical" and colour["nullable"] is True
    assert colour["categories"] == ["blue", "red"] and colour["missing_rate"] == 0.25
    assert colour["shares"] == {"blue": pytest.approx(1 / 3), "red": pytest.approx(2 / 3)}
    assert "min" not in colour
    assert feature_profile(frame, numbers_nullable=True)["size"]["nullable"] is True
    wide = pd.DataFrame({"x": np.arange(PROFILE_MAX_CATEGORIES + 1, dtype=float)})
    assert feature_profile(wide, numbers_nullable=False)["x"]["categories"] is None


def test_the_profile_check_names_the_rows_and_features_training_never_saw():
    size = np.linspace(1.0, 4.0, PROFILE_MAX_CATEGORIES + 2)  # a range, not categories
    frame = pd.DataFrame({"size": size, "kind": np.resize([0.0, 1.0], len(size))})
    check = ProfileCheck(["size", "kind"], feature_profile(frame, numbers_nullable=False))
    rows = np.array([[1.0, 0.0], [4.5, 1.0], [2.0, 0.5], [0.5, 2.0], [4.0, 1.0]])
    assert check.outside(rows) == {1: ["size"], 2: ["kind"], 3: ["size", "kind"]}
    assert check.outside(rows[[0, 4]]) == {}


# --- the shared server: default serving settings ------------------------------------------


@pytest.mark.integration
def test_apis_need_a_valid_token_and_probes_stay_open(built: Built, server: Server):
    for path in ("/predict", "/predict_batch", "/predict_columns", "/predict_arrow", "/metadata"):
        anonymous = httpx.post(f"{server.url}{path}", json={})
        assert_error(anonymous, 401, "unauthorized")
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="model"'
    wrong = httpx.post(f"{server.url}/predict", json=row(built), headers=bearer(ALPHA))
    assert_error(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    for path in ("/livez", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path
    answer = httpx.post(
        f"{server.url}/predict", json=row(built), headers=built.settings.client_headers()
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == built.version


@pytest.mark.integration
def test_answers_carry_the_request_id_and_the_model_version(built: Built, server: Server):
    headers = built.settings.client_headers()
    ok = httpx.post(
        f"{server.url}/predict", json=row(built), headers={**headers, "X-Request-ID": "order-42"}
    )
    assert ok.headers["x-request-id"] == "order-42"
    assert ok.headers["x-model-version"] == str(built.version)
    refused = httpx.post(
        f"{server.url}/predict", json={}, headers={**headers, "X-Request-ID": "bad id\twith tab"}
    )
    error = assert_error(refused, 400, "invalid_input")
    assert error["request_id"] != "bad id\twith tab" and len(error["request_id"]) == 32
    probe = httpx.get(f"{server.url}/readyz")
    assert probe.headers["x-model-version"] == str(built.version) and probe.headers["x-request-id"]


@pytest.mark.integration
def test_bodies_must_be_json_and_within_the_size_limit(built: Built, server: Server):
    headers = {**built.settings.client_headers(), "Content-Type": "application/json"}
    limit = built.settings.params.serving.max_body_bytes
    declared = httpx.post(
        f"{server.url}/predict_batch", content=b" " * (limit + 1), headers=headers
    )
    assert_error(declared, 413, "body_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(limit // 65_536 + 2):
            yield b" " * 65_536

    streamed = httpx.post(f"{server.url}/predict_batch", content=chunked(), headers=headers)
    assert_error(streamed, 413, "body_too_large")
    form = httpx.post(
        f"{server.url}/predict",
        content=b"a=1",
        headers={**headers, "Content-Type": "multipart/form-data"},
    )
    assert_error(form, 415, "unsupported_media_type")


@pytest.mark.integration
@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "true", '"12.5"', "1e308"], ids=lambda value: value
)
def test_rows_with_bad_values_get_400_naming_the_feature(built: Built, server: Server, value: str):
    record = row(built)
    feature = next(iter(record))
    body = json.dumps(record).replace(
        f'"{feature}": {json.dumps(record[feature])}', f'"{feature}": {value}'
    )
    assert body != json.dumps(record)
    answer = httpx.post(
        f"{server.url}/predict",
        content=body,
        headers={**built.settings.client_headers(), "Content-Type": "application/json"},
    )
    error = assert_error(answer, 400, "invalid_input")
    assert [detail["field"] for detail in error["details"]] == [feature]
    assert error["message"].startswith(f"{feature}: ")


@pytest.mark.integration
def test_values_outside_the_profile_are_answered_and_flagged(built: Built, server: Server):
    profile = http_metadata(built, server)["feature_profile"]
    record = row(built)
    feature = next(iter(record))
    stats = profile[feature]
    record[feature] = stats["max"] + (stats["max"] - stats["min"])  # past training, within bounds
    headers = built.settings.client_headers()
    before = flagged_count(server, feature)
    single = httpx.post(f"{server.url}/predict", json=record, headers=headers).raise_for_status()
    assert single.json()["out_of_profile"] == [feature]
    batch = httpx.post(
        f"{server.url}/predict_batch", json={"rows": [row(built), record]}, headers=headers
    ).raise_for_status()
    assert batch.json()["out_of_profile"] == [{"row": 1, "features": [feature]}]
    table = as_table([row(built), record])
    columns = httpx.post(f"{server.url}/predict_columns", json=table, headers=headers)
    assert columns.raise_for_status().json()["out_of_profile"] == batch.json()["out_of_profile"]
    assert flagged_count(server, feature) == before + 3


def as_table(records: list[dict[str, float]]) -> dict[str, list]:
    """Records as a /predict_columns body."""
    return payloads.as_table(pd.DataFrame(records))


def http_metadata(built: Built, server: Server) -> dict:
    answer = httpx.post(f"{server.url}/metadata", json={}, headers=built.settings.client_headers())
    return answer.raise_for_status().json()


def flagged_count(server: Server, feature: str) -> float:
    """The out_of_profile_values counter of `feature` on the server's /metrics page."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("out_of_profile_values_total{") and f'feature="{feature}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.integration
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(
    built: Built, server: Server, tmp_path: Path
):
    """At least 1,000 generated requests from the served OpenAPI document, every check enabled."""
    token = built.settings.api_token()
    row_schema = httpx.get(f"{server.url}/docs.json").json()["components"]["schemas"]["Row"]
    bounds = {
        name: [field["minimum"], field["maximum"]]
        for name, field in row_schema["properties"].items()
    }
    schemathesis = Path(sys.executable).with_name("schemathesis")
    finished = subprocess.run(
        [str(schemathesis), "run", f"{server.url}/docs.json", "--checks", "all",
         "--header", f"Authorization: Bearer {token}", "--max-examples", "250", "--seed", "1",
         "--suppress-health-check", "all", "--report", "json", "--report-dir", str(tmp_path),
         "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
             "ARROW_FEATURES": json.dumps(bounds)},
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-4000:]
    (report_path,) = tmp_path.glob("json-*.json")
    report = json.loads(report_path.read_text())
    assert report["failures"] == [] and report["errors"] == []
    assert report["test_cases"]["generated"] >= 1000
    tested = {name.split(" ", 1)[1] for name in report["valid_rates"]}
    assert {
        "/predict",
        "/predict_batch",
        "/predict_columns",
        "/predict_arrow",
        "/metadata",
    } <= tested
    log = server.log_path.read_text()
    assert token not in log and ALPHA not in log  # the token (and a wrong one) never logged
    assert "Traceback" not in log


def server_rss(server: Server) -> int:
    """Resident bytes of the server's whole process tree (arbiter and workers)."""
    import psutil

    root = psutil.Process(server.process.pid)
    return sum(process.memory_info().rss for process in [root, *root.children(recursive=True)])


def arrow_of(features: list[str], rows: int, compression: str | None = None) -> bytes:
    """An Arrow stream of zeros, every feature a column (one array shared: cheap to make)."""
    import pyarrow as pa

    zeros = pa.array(np.zeros(rows))
    table = pa.Table.from_arrays([zeros] * len(features), names=features)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.integration
def test_a_compressed_arrow_stream_is_refused_before_it_inflates(built: Built, server: Server):
    """About 5 KB that would inflate to 240 MB: refused from the batch header, the worker's memory
    as it was (it grew by the whole inflated size when the stream was read before any check)."""
    features = http_metadata(built, server)["features"]
    body = arrow_of(features, 1_000_000, compression="zstd")
    assert len(body) < 100_000
    headers = {**built.settings.client_headers(), "Content-Type": ARROW_STREAM}
    before = server_rss(server)
    for _ in range(3):
        answer = httpx.post(f"{server.url}/predict_arrow", content=body, headers=headers)
        assert (
            "compressed Arrow batches are refused"
            in assert_error(answer, 400, "invalid_input")["message"]
        )
    grown = server_rss(server) - before
    assert grown < 50_000_000, f"the server grew by {grown / 1e6:.0f} MB"


@pytest.mark.integration
def test_a_wide_arrow_schema_is_refused_quickly_while_livez_answers(built: Built, server: Server):
    """10,000 fields (1 MB): the column check is linear and runs in a thread, not on the event loop."""
    import pyarrow as pa

    wide = pa.schema([(f"field-{index:05d}-" + "x" * 80, pa.float64()) for index in range(10_000)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, wide):
        pass
    body = sink.getvalue().to_pybytes()
    headers = {**built.settings.client_headers(), "Content-Type": ARROW_STREAM}
    probes: list[float] = []
    with httpx.Client(base_url=server.url, headers=headers) as client:
        client.post("/predict_arrow", content=body)  # the connection open, pyarrow imported
        sent = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as prober:
            prober.submit(probe_livez, server.url, probes, sent)
            answers = [client.post("/predict_arrow", content=body) for _ in range(20)]
            sent.set()
    for answer in answers:
        error = assert_error(answer, 400, "invalid_input")
        assert error["message"].endswith("and 9990 more") and len(error["message"]) < 1_000
    seconds = sorted(answer.elapsed.total_seconds() for answer in answers)  # upload included
    assert seconds[len(seconds) // 2] < 0.05, seconds  # the median: the machine is shared
    assert probes and max(probes) < 1.0, probes


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/predict", "/predict_batch", "/predict_columns", "/metadata"])
def test_json_nested_deep_is_a_400_on_every_endpoint(built: Built, server: Server, path: str):
    deep = "[" * 50_000 + "]" * 50_000
    headers = {**built.settings.client_headers(), "Content-Type": "application/json"}
    for body in (deep, '{"columns": ' + deep + ', "rows": ' + deep + "}"):
        answer = httpx.post(f"{server.url}{path}", content=body, headers=headers)
        assert_error(answer, 400, "invalid_input")
    assert "RecursionError" not in server.log_path.read_text()


@pytest.mark.integration
def test_a_batch_with_an_unknown_key_is_refused_as_a_row_is(built: Built, server: Server):
    answer = httpx.post(
        f"{server.url}/predict_batch",
        json={"rows": [row(built)], "threshold": 0.9},
        headers=built.settings.client_headers(),
    )
    assert assert_error(answer, 400, "invalid_input")["details"][0]["field"] == "threshold"


# --- a strict server of the same model: reject policy, low rate limit, three clients -------


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, empty_tracking_store: Path
) -> Iterator[Server]:
    built = shared_build(tmp_path_factory, empty_tracking_store)
    params = built.settings.params
    serving = params.serving.model_copy(
        update={
            "out_of_profile": "reject",
            "rate_limit": f"{STRICT_RATE}/minute",
            "tracing": True,
            "access_log": True,
        }
    )
    tokens = {"service_tokens": f"{ALPHA},{BRAVO},{CHARLIE},{DELTA}"}
    settings = built.settings.model_copy(
        update={
            "params": params.model_copy(update={"serving": serving}),
            "env": built.settings.env.model_copy(update=tokens),
        }
    )
    bento = build(settings, registry.Registry(settings), built.version)
    running = serve(settings, bento)
    with running:
        yield running


def start_early_in_a_minute() -> None:
    """The limiter counts per wall-clock minute and weighs the last minute's count down as the new
    one goes on: a burst that straddled two minutes could pass. Bursts start early in a minute."""
    if (second := time.time() % 60) > 50:
        time.sleep(60.5 - second)


@pytest.mark.integration
def test_each_client_gets_its_own_rate_limit_and_a_retry_after(built: Built, strict):
    start_early_in_a_minute()
    with httpx.Client(base_url=strict.url, headers=bearer(ALPHA)) as alpha:
        statuses = [alpha.post("/predict", json=row(built)).status_code for _ in range(STRICT_RATE)]
        over = alpha.post("/predict", json=row(built))
    bravo = httpx.post(f"{strict.url}/predict", json=row(built), headers=bearer(BRAVO))
    assert statuses == [200] * STRICT_RATE
    assert_error(over, 429, "rate_limited")
    assert int(over.headers["retry-after"]) >= 1
    assert bravo.status_code == 200, bravo.text


@pytest.mark.integration
def test_guessing_tokens_is_rate_limited_by_address(strict):
    start_early_in_a_minute()
    statuses = [
        httpx.post(f"{strict.url}/metadata", json={}, headers=bearer(f"guess-{n:012d}")).status_code
        for n in range(STRICT_RATE + 1)
    ]
    assert statuses == [401] * STRICT_RATE + [429]


@pytest.mark.integration
def test_x_forwarded_for_does_not_pick_the_rate_limit_key(strict):
    """Without FORWARDED_ALLOW_IPS no peer is a trusted proxy, loopback included (uvicorn's own
    default trusts it): a client that rotates X-Forwarded-For is still counted by its address."""
    start_early_in_a_minute()
    with httpx.Client(base_url=strict.url) as client:
        statuses = [
            client.post(
                "/metadata",
                json={},
                headers={**bearer(f"guess-{n:032d}"), "X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(STRICT_RATE + 5)
        ]
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 5, statuses


@pytest.mark.integration
def test_tracing_and_the_access_log_are_off_unless_turned_on(built: Built, server, strict):
    """Off by default (together they cost half of /predict's requests/s): no span and no access
    line. On, both; the token stays out of the log. BentoML names the request's span in
    X-BentoML-Request-ID on its APIs' answers (/predict_batch), not on the mounted routes' (/predict),
    which its tracing middleware wraps all the same."""
    batch = {"rows": [row(built)]}
    quiet = httpx.post(f"{server.url}/predict_batch", json=batch,
                       headers=bearer(built.settings.api_token()))  # fmt: skip
    traced = httpx.post(f"{strict.url}/predict_batch", json=batch, headers=bearer(DELTA))
    assert quiet.status_code == traced.status_code == 200, (quiet.text, traced.text)
    assert "x-bentoml-request-id" not in quiet.headers
    assert "x-bentoml-request-id" in traced.headers
    for url, token in ((server.url, built.settings.api_token()), (strict.url, DELTA)):
        httpx.post(f"{url}/predict", json=row(built), headers=bearer(token)).raise_for_status()
    access_line = "method=POST,path=/predict,"
    deadline = time.monotonic() + 10
    while access_line not in strict.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert access_line in strict.log_path.read_text()
    assert DELTA not in strict.log_path.read_text()
    assert access_line not in server.log_path.read_text()


@pytest.mark.integration
def test_the_reject_policy_answers_422_naming_each_feature(built: Built, strict):
    metadata = httpx.post(f"{strict.url}/metadata", json={}, headers=bearer(CHARLIE))
    profile = metadata.raise_for_status().json()["feature_profile"]
    record = row(built)
    first, second = list(record)[:2]
    for feature, edge, side in ((first, "max", 1), (second, "min", -1)):
        spread = profile[feature]["max"] - profile[feature]["min"]
        record[feature] = profile[feature][edge] + side * spread / 2  # past training, within bounds
    answer = httpx.post(f"{strict.url}/predict_batch", json={"rows": [row(built), record]},
                        headers=bearer(CHARLIE))  # fmt: skip
    error = assert_error(answer, 422, "out_of_profile")
    assert [(detail["row"], detail["field"]) for detail in error["details"]] == [
        (1, first),
        (1, second),
    ]
    assert first in error["message"] and second in error["message"]
    table = httpx.post(f"{strict.url}/predict_columns", json=as_table([row(built), record]),
                       headers=bearer(CHARLIE))  # fmt: skip
    assert assert_error(table, 422, "out_of_profile")["details"] == error["details"]
    arrow = httpx.post(
        f"{strict.url}/predict_arrow",
        content=payloads.as_arrow(pd.DataFrame([row(built), record])),
        headers={**bearer(CHARLIE), "Content-Type": ARROW_STREAM},
    )
    assert assert_error(arrow, 422, "out_of_profile")["details"] == error["details"]


# --- model integrity ----------------------------------------------------------------------


def stored_model_folder(settings: Settings, bento: str) -> Path:
    """The MLflow model folder of the stored model the bento serves."""
    import bentoml

    with bentoml_stores(settings.bentoml_home):
        model_tag = bentoml.bentos.get(bento).info.args["model_tag"]
        return Path(bentoml.models.get(model_tag).path_of(integrity.MLFLOW_MODEL_FOLDER))


@pytest.mark.integration
def test_a_changed_model_file_keeps_the_service_from_starting(built: Built):
    bento = build(built.settings, registry.Registry(built.settings), built.version)
    folder = stored_model_folder(built.settings, bento)
    weights = max(folder.iterdir(), key=lambda path: path.stat().st_size)
    with weights.open("ab") as tampered:
        tampered.write(b"\0")
    with pytest.raises(DeploymentError, match="model files changed since registration"):
        serve(built.settings, bento)


@pytest.mark.integration
def test_the_build_refuses_a_model_changed_in_the_artifact_store(built: Built):
    settings = built.settings
    location = registry.Registry(settings).client.get_model_version_download_uri(
        settings.params.registry.model_name, str(built.other_version)
    )
    mlmodel = Path(location.removeprefix("file://")) / "MLmodel"
    original = mlmodel.read_bytes()
    stored = settings.bentoml_home / "models"
    before = sorted(stored.rglob("MLmodel"))
    try:
        mlmodel.write_bytes(original + b"\n# edited after registration\n")
        with pytest.raises(DeploymentError, match="model files changed"):
            build(settings, registry.Registry(settings), built.other_version)
    finally:
        mlmodel.write_bytes(original)
    assert sorted(stored.rglob("MLmodel")) == before  # the refused import left nothing behind


@pytest.mark.integration
def test_two_servers_of_one_project_keep_their_own_metrics(built: Built, server, strict):
    """BentoML empties its metrics folder when a server starts; each server has a home of its own."""
    feature = next(iter(row(built)))
    before = flagged_count(server, feature)
    record = row(built)
    record[feature] = http_metadata(built, server)["feature_profile"][feature]["max"] * 1.5
    httpx.post(f"{server.url}/predict", json=record, headers=built.settings.client_headers())
    assert flagged_count(server, feature) == before + 1
