"""gRPC beside HTTP: the committed stubs match the proto, and a real server answers as REST does."""

from __future__ import annotations

import re

import grpc
import httpx
import pytest
from google.protobuf import json_format
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from {{ cookiecutter.package }}.deploy import payloads
from {{ cookiecutter.package }}.deploy.server import Server
from {{ cookiecutter.package }}.serving.grpc import codegen, predict_pb2
from {{ cookiecutter.package }}.serving.grpc.client import ModelClient, as_struct

from . import test_security as security
from .shared_bento import Built
from .test_security import CHARLIE, DELTA, STRICT_RATE, bearer, row, start_early_in_a_minute

# test_security's strict server (reject policy, STRICT_RATE requests a minute), one for this module.
strict = security.strict


def _without_generator_versions(code: str) -> str:
    """Generated code without the versions of the tools that wrote it: a newer grpcio-tools
    stamps its own, and the stubs still say the same."""
    code = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)", "", code)
    return re.sub(
        r"^(# Protobuf Python Version:|GRPC_GENERATED_VERSION = ).*$", "", code, flags=re.M
    )


def test_committed_stubs_are_what_the_proto_generates(tmp_path):
    for generated in codegen.generate(tmp_path):
        committed = codegen.HERE / generated.name
        expected, found = (
            _without_generator_versions(path.read_text()) for path in (generated, committed)
        )
        assert found == expected, f"{committed.name} differs: run python -m {codegen.__name__}"


def _shown(answer: dict) -> dict:
    """An answer without its empty fields: REST writes null and [] where protobuf writes nothing."""
    return {key: value for key, value in answer.items() if value not in (None, [], {})}


def _as_rest(reply) -> dict:
    """A gRPC reply in REST's JSON shape: int64 comes as text, a row's class map as `by_class`."""
    answer = json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    answer["model_version"] = int(answer["model_version"])
    if isinstance(answer.get("class_probabilities"), list):
        answer["class_probabilities"] = [row["by_class"] for row in answer["class_probabilities"]]
    return _shown(answer)


@pytest.mark.integration
def test_grpc_answers_as_rest_behind_the_same_token(built: Built, server: Server):
    settings = built.settings
    records = payloads.as_records(payloads.sample_rows(settings, rows=5))
    with httpx.Client(base_url=server.url, timeout=30, headers=settings.client_headers()) as http:
        single = [http.post("/predict", json=row).raise_for_status().json() for row in records]
        batch = http.post("/predict_batch", json={"rows": records}).raise_for_status().json()

    with ModelClient(server.grpc_address, settings.api_token()) as client:
        assert client.health() == "SERVING"
        assert client.health("model_service.v1.ModelService") == "SERVING"
        grpc_single = [_as_rest(client.predict(row)) for row in records]
        grpc_batch = _as_rest(client.predict_batch(records))

        feature = next(iter(records[0]))
        with pytest.raises(grpc.RpcError) as refused:
            client.predict({**records[0], feature: "abc"})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert feature in refused.value.details()

        reflected = ProtoReflectionDescriptorDatabase(client.channel).get_services()
        assert "model_service.v1.ModelService" in reflected
        request = predict_pb2.PredictRequest(features=as_struct(records[0]))
        _, call = client.stub.Predict.with_call(
            request, metadata=(*client.metadata, ("x-request-id", "grpc-order-42"))
        )
        sent_back = dict(call.initial_metadata())

    # Exactly equal: floats survive both JSON and protobuf; an integer label 1 comes back as 1.0.
    assert grpc_single == [_shown(answer) for answer in single]
    assert grpc_batch == _shown(batch)
    assert sent_back == {"x-request-id": "grpc-order-42", "x-model-version": str(built.version)}

    for token in (None, "x" * 40):  # none, or one the server does not know
        with ModelClient(server.grpc_address, token) as stranger:
            with pytest.raises(grpc.RpcError) as refused:
                stranger.predict(records[0])
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as refused:
                stranger.predict_batch(records)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Counted beside REST's endpoints, under the HTTP status REST would have answered.
    series = httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines()
    for endpoint, status in (
        ("grpc_predict", 200),
        ("grpc_predict_batch", 200),
        ("grpc_predict", 401),
    ):
        assert any(
            line.startswith("model_requests_total{")
            and f'endpoint="{endpoint}"' in line
            and f'status="{status}"' in line
            for line in series
        ), (endpoint, status)


@pytest.mark.integration
def test_grpc_shares_the_rest_rate_limit_and_the_reject_policy(built: Built, strict: Server):
    record = row(built)
    start_early_in_a_minute()
    with httpx.Client(base_url=strict.url, headers=bearer(CHARLIE)) as rest:
        statuses = [rest.post("/predict", json=record).status_code for _ in range(STRICT_RATE - 1)]
    with ModelClient(strict.grpc_address, CHARLIE) as client:
        client.predict(record)  # the last request of CHARLIE's budget, over REST and gRPC together
        with pytest.raises(grpc.RpcError) as over:
            client.predict(record)
    assert statuses == [200] * (STRICT_RATE - 1)
    assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(over.value.trailing_metadata())["retry-after"]) >= 1

    profile = httpx.post(f"{strict.url}/metadata", json={}, headers=bearer(DELTA)).json()
    feature = next(iter(record))
    stats = profile["feature_profile"][feature]
    outside = {**record, feature: stats["max"] + (stats["max"] - stats["min"]) / 2}
    with ModelClient(strict.grpc_address, DELTA) as client, pytest.raises(grpc.RpcError) as refused:
        client.predict_batch([record, outside])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"row 1 {feature}:" in refused.value.details()
