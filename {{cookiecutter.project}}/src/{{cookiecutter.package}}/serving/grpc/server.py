"""The gRPC server beside BentoML's HTTP one: predict.proto's ModelService, health and reflection.

BentoML 1.4 serves class services over HTTP only (its `serve-grpc` refuses them), so the service's
startup hook starts this `grpc.aio` server in each serving worker's own event loop, once the model
is loaded. Several workers share serving.grpc_port: gRPC binds it with SO_REUSEPORT on Linux (its
default), and the kernel spreads the connections over the workers.

It shares the worker's pieces with the REST APIs, so both answer alike: the loaded model and the
micro-batcher (`ModelService.scored_row` and `scored_rows`), the tokens and the rate limit (the one
`guard.Access`: a client has one budget over both), the rows' checks (the pydantic models of
`schemas`), the profile check, the metrics (endpoints `grpc_predict` and `grpc_predict_batch`,
counted under the HTTP status the same answer has over REST) and the prediction log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from ..guard import Access, request_id_from
from ..http_errors import normalise_error
from . import predict_pb2, predict_pb2_grpc

SERVICE_NAME = predict_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
# The REST refusals' statuses as gRPC codes (422: values outside the profile, reject policy).
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,  # shed under load (with retry-after), or no model answered
}
logger = logging.getLogger("bentoml.service")


@dataclass(frozen=True)
class Shared:
    """What the gRPC methods share with the REST APIs of one serving worker."""

    service: Any  # the ModelService: scored_row, scored_rows
    access: Access
    row_model: type[BaseModel]  # /predict's body
    rows_model: type[BaseModel]  # /predict_batch's body
    rows_as_array: Callable[[list[Any]], np.ndarray]
    observe: Callable[[str, int, float], None]  # metrics: endpoint, HTTP status, seconds
    model_version: int


class Refused(Exception):
    """A call answered with the error status REST would give it."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


Answer = Callable[[Any, str, str], Awaitable[Any]]  # (request, request id, endpoint) -> reply


class PredictServicer(predict_pb2_grpc.ModelServiceServicer):
    """Predict and PredictBatch, behind the same token check and rate limit as REST."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._guarded(request, context, "grpc_predict", self._predict)

    async def PredictBatch(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._guarded(request, context, "grpc_predict_batch", self._predict_batch)

    async def _guarded(
        self, request: Any, context: grpc.aio.ServicerContext, endpoint: str, answer: Answer
    ) -> Any:
        """Guard's checks in Guard's order (rate limit, then token), the answer, its metrics."""
        started = time.perf_counter()
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        request_id = request_id_from(str(metadata.get("x-request-id", "")))
        await context.send_initial_metadata(
            (("x-request-id", request_id), ("x-model-version", str(self.shared.model_version)))
        )
        try:
            client = self.shared.access.client(
                str(metadata.get("authorization", "")), _peer_host(context.peer())
            )
            retry_after = await self.shared.access.retry_after(client)
            if retry_after is not None:
                raise Refused(429, f"too many requests: retry after {retry_after} s", retry_after)
            if client.startswith("address:"):
                raise Refused(
                    401, "a valid bearer token is required (authorization: Bearer <token>)"
                )
            reply = await answer(request, request_id, endpoint)
        except Refused as refused:
            self.shared.observe(endpoint, refused.status, time.perf_counter() - started)
            trailing = (
                () if refused.retry_after is None else (("retry-after", str(refused.retry_after)),)
            )
            await context.abort(CODES[refused.status], refused.message, trailing_metadata=trailing)
        except Exception:
            logger.exception("gRPC %s failed (request id %s)", endpoint, request_id)
            self.shared.observe(endpoint, 500, time.perf_counter() - started)
            await context.abort(
                CODES[500], f"internal error: the server log has request id {request_id}"
            )
        self.shared.observe(endpoint, 200, time.perf_counter() - started)
        return reply

    async def _predict(self, request: Any, request_id: str, endpoint: str) -> Any:
        row = _checked(self.shared.row_model, dict(request.features.items()))
        features = self.shared.rows_as_array([row])
        answer = _unrefused(await self.shared.service.scored_row(features, request_id, endpoint))
        return predict_pb2.PredictReply(
            prediction=_value(answer.prediction),
            probability=answer.probability,
            class_probabilities=answer.class_probabilities,
            model_version=answer.model_version,
            fallback=answer.fallback,
            out_of_profile=answer.out_of_profile,
        )

    async def _predict_batch(self, request: Any, request_id: str, endpoint: str) -> Any:
        body = {"rows": [dict(row.items()) for row in request.rows]}
        features = self.shared.rows_as_array(_checked(self.shared.rows_model, body).rows)
        answer = _unrefused(await self.shared.service.scored_rows(features, request_id, endpoint))
        return predict_pb2.PredictBatchReply(
            predictions=[_value(prediction) for prediction in answer.predictions],
            probabilities=answer.probabilities,
            class_probabilities=[
                predict_pb2.ClassProbabilities(by_class=by_class)
                for by_class in answer.class_probabilities or []
            ],
            model_version=answer.model_version,
            fallback=answer.fallback,
            out_of_profile=[
                predict_pb2.RowOutOfProfile(row=item.row, features=item.features)
                for item in answer.out_of_profile
            ],
        )


def _checked(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """`body` as the REST API's model reads it; its errors as REST words them (naming the field)."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = error.json(include_url=False, include_input=False, include_context=False)
        message = normalise_error(400, b'{"detail": ' + problems.encode() + b"}")["error"][
            "message"
        ]
        raise Refused(400, message) from None


def _unrefused(answer: Any) -> Any:
    """The service's answer, or Refused when it is REST's refusal: the reject policy's 422, or a
    503 (load shed, with its Retry-After; or no model could answer)."""
    if not isinstance(answer, JSONResponse):
        return answer
    error = json.loads(answer.body)["error"]
    problems = "; ".join(
        f"row {item['row']} {item['field']}: {item['problem']}" for item in error["details"]
    )
    message = f"{error['message']} ({problems})" if problems else error["message"]
    retry_after = answer.headers.get("retry-after")
    raise Refused(answer.status_code, message, int(retry_after) if retry_after else None)


def _value(label: Any) -> struct_pb2.Value:
    """A prediction as a protobuf Value: a label's text or boolean, or a number."""
    return json_format.ParseDict(label, struct_pb2.Value())


def _peer_host(peer: str) -> str:
    """The client's address in gRPC's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
    address = peer.partition(":")[2]
    return address.rpartition(":")[0].strip("[]") or address


async def start(shared: Shared, address: str, max_message_bytes: int) -> grpc.aio.Server:
    """Serve ModelService, health (SERVING: the model is loaded by now) and reflection."""
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", max_message_bytes), ("grpc.so_reuseport", 1)]
    )
    predict_pb2_grpc.add_ModelServiceServicer_to_server(PredictServicer(shared), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    server.add_insecure_port(address)
    await server.start()
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("gRPC %s listening on %s", SERVICE_NAME, address)
    return server
