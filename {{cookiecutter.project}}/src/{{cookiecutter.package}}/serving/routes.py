"""The routes BentoML's API decorators cannot express, as a Starlette app mounted beside its APIs:
a body that is not JSON (POST /predict_arrow: BentoML's APIs parse every body as JSON) and a GET
(/model_card). Guard protects them like the APIs.
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
from .schemas import prediction_header


def starlette_routes(
    arrow_rows: ArrowRows, card: str | None, served: str, current_service: Callable[[], Any]
) -> Starlette:
    """The app of both routes. `card`: the served version's model card as JSON text, packed by the
    build (None: trained before model cards); `served`: "<name> v<version>", for messages;
    `current_service`: the worker's ModelService (its `scored_rows`)."""

    async def predict_arrow(request: Request) -> Response:
        """POST /predict_arrow: up to max_batch_rows rows as an Arrow IPC stream (arrow.ArrowRows);
        the answer is /predict_batch's."""
        try:  # in a thread: /livez and the other requests go on meanwhile
            features = await asyncio.to_thread(arrow_rows, await request.body())
        except BadRows as problem:
            body = error_body(400, str(problem), details=problem.details)
            return JSONResponse(body, status_code=400)
        request_id = request_id_of(request.scope)
        answer = await current_service().scored_rows(features, request_id, "predict_arrow")
        if isinstance(answer, JSONResponse):
            return answer
        return Response(
            answer.model_dump_json(),
            media_type="application/json",
            headers=prediction_header(answer.predictions, answer.model_version),
        )

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
            Route("/predict_arrow", predict_arrow, methods=["POST"]),
            Route("/model_card", model_card, methods=["GET"]),
        ]
    )
