"""Routes served by a plain Starlette app mounted beside BentoML's APIs. Guard protects them like
the APIs.

- POST /predict: the one-row path, where a request's own server work is most of its cost. As a
  BentoML API it went through the API wrapper's request context, IO descriptors and background
  tasks as well: here, LogisticRegression at concurrency 1 answers about 20% more requests per
  second (benchmarks/README.md). The body's model and the answer are the same (`schemas`).
- POST /predict_arrow: a body that is not JSON (BentoML's APIs parse every body as JSON).
- GET /model_card: a GET.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BadRows
from .arrow import ArrowRows
from .guard import request_id_of
from .http_errors import error_body
from .schemas import BatchPrediction, Prediction, prediction_header


def starlette_routes(
    read_row: Callable[[bytes], Any],
    arrow_rows: ArrowRows,
    card: str | None,
    served: str,
    current_service: Callable[[], Any],
) -> Starlette:
    """The app of the three routes. `read_row`: /predict's body as a one-row array
    (schemas.row_body_reader); `card`: the served version's model card as JSON text, packed by the
    build (None: trained before model cards); `served`: "<name> v<version>", for messages;
    `current_service`: the worker's ModelService (its `scored_row` and `scored_rows`)."""

    async def predict(request: Request) -> Response:
        """POST /predict: one row, {"<feature>": <value>, ...} (openapi.predict_operation)."""
        try:
            features = read_row(await request.body())
        except BadRows as problem:
            return _refused(problem)
        request_id = request_id_of(request.scope)
        return _answered(await current_service().scored_row(features, request_id, "predict"))

    async def predict_arrow(request: Request) -> Response:
        """POST /predict_arrow: up to max_batch_rows rows as an Arrow IPC stream (arrow.ArrowRows);
        the answer is /predict_batch's."""
        try:  # in a thread: /livez and the other requests go on meanwhile
            features = await asyncio.to_thread(arrow_rows, await request.body())
        except BadRows as problem:
            return _refused(problem)
        request_id = request_id_of(request.scope)
        return _answered(await current_service().scored_rows(features, request_id, "predict_arrow"))

    async def model_card(request: Request) -> Response:
        """GET /model_card: the served version's model card (model_card.py).

        Behind the token like the APIs, not open like /livez: it is documentation, but its feature
        profile tells anyone what inputs the model has seen (docs/security.md).
        """
        if card is None:
            message = f"{served} has no model card: it was trained before model cards"
            return JSONResponse(error_body(404, message), status_code=404)
        return Response(card, media_type="application/json")

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/predict_arrow", predict_arrow, methods=["POST"]),
            Route("/model_card", model_card, methods=["GET"]),
        ]
    )


def _refused(problem: BadRows) -> JSONResponse:
    """The 400 of a body whose rows were refused, naming what is wrong."""
    return JSONResponse(error_body(400, str(problem), details=problem.details), status_code=400)


def _answered(answer: Prediction | BatchPrediction | JSONResponse) -> Response:
    """A scored answer as the APIs give it, with the X-Prediction header; a refusal as it is."""
    if isinstance(answer, JSONResponse):
        return answer
    predictions = [answer.prediction] if isinstance(answer, Prediction) else answer.predictions
    return Response(
        answer.model_dump_json(),
        media_type="application/json",
        headers=prediction_header(predictions, answer.model_version),
    )
