"""A Python client of predict.proto's ModelService and gRPC health: the smoke test's, and a model
for yours (README: "Calling the service over gRPC")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import predict_pb2, predict_pb2_grpc


def as_struct(row: Mapping[str, Any]) -> struct_pb2.Struct:
    """A row of plain values (numbers, text, None for a gap) as the Struct the service reads."""
    struct = struct_pb2.Struct()
    struct.update(row)
    return struct


def label(prediction: struct_pb2.Value) -> Any:
    """A reply's prediction as Python: the label's text or boolean, or a float (a label 1 is 1.0)."""
    return json_format.MessageToDict(prediction)


class ModelClient:
    """Calls over one plaintext channel (in the cluster, or through a TLS-terminating proxy) with
    the bearer token in the `authorization` metadata, as REST has it in its header."""

    def __init__(self, address: str, token: str | None, timeout: float = 30) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = predict_pb2_grpc.ModelServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def predict(self, row: Mapping[str, Any]) -> Any:
        """The PredictReply for one row; grpc.RpcError with the status code when refused."""
        request = predict_pb2.PredictRequest(features=as_struct(row))
        return self.stub.Predict(request, metadata=self.metadata, timeout=self.timeout)

    def predict_batch(self, rows: Iterable[Mapping[str, Any]]) -> Any:
        """The PredictBatchReply for up to serving.max_batch_rows rows."""
        request = predict_pb2.PredictBatchRequest(rows=[as_struct(row) for row in rows])
        return self.stub.PredictBatch(request, metadata=self.metadata, timeout=self.timeout)

    def health(self, service: str = "") -> str:
        """ "SERVING" once the model is loaded; needs no token (as /readyz)."""
        reply = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
