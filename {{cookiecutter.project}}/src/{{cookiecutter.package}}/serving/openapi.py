"""The OpenAPI document at /docs.json as clients should read it.

BentoML documents its own APIs only, with its own error shape: `guard.Guard` rewrites the document
it serves with `document` (the bearer token, the one error shape, required bodies) and adds the
path items of the routes it does not list (routes.py): `predict_operation`, `arrow_operation` and
`model_card_operation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from .arrow import ARROW_STREAM
from .schemas import BatchPrediction, Prediction

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message", "details", "request_id", "model_version"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array"},
                "request_id": {"type": "string"},
                "model_version": {"type": "integer"},
            },
        }
    },
}
_API_ERRORS = {
    "400": "the body is not valid JSON or a value is missing, of the wrong type or out of bounds",
    "401": "no valid bearer token",
    "413": "the body is over the size limit",
    "415": "the body is not of the endpoint's media type (application/json but for /predict_arrow)",
    "422": "a value is outside the training profile (out_of_profile: reject)",
    "429": "over the rate limit; retry after the Retry-After seconds",
    "500": "the server failed; the log has the details under the request id",
    "503": "overloaded (retry after the Retry-After seconds), or no model could answer",
}


def _allow_nulls(node: Any) -> None:
    """Say nullable the OpenAPI 3.0 way, which BentoML's document leaves out: on properties whose
    default is null, and on schemas that pydantic writes as anyOf [..., {"type": "null"}] (a
    nullable feature), which 3.0 has no type for."""
    if isinstance(node, dict):
        for prop in (node.get("properties") or {}).values():
            if isinstance(prop, dict) and "default" in prop and prop["default"] is None:
                prop["nullable"] = True
        choices = node.get("anyOf")
        if isinstance(choices, list) and {"type": "null"} in choices:
            choices.remove({"type": "null"})
            node["nullable"] = True
            if len(choices) == 1:
                node.update(node.pop("anyOf")[0])
        for value in node.values():
            _allow_nulls(value)
    elif isinstance(node, list):
        for value in node:
            _allow_nulls(value)


def document(spec: dict[str, Any], protected: Iterable[str], auth: bool) -> dict[str, Any]:
    """BentoML's OpenAPI document with what Guard adds: the token, the error answers, the headers."""
    _allow_nulls(spec)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    if auth:
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path in protected:
        path_item = spec.get("paths", {}).get(path, {})
        if auth:
            for operation in path_item.values():
                operation["security"] = [{"bearer": []}]
        operation = path_item.get("post")
        if operation is None:
            continue  # a GET (/model_card) documents its own few answers
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True
        responses = operation.setdefault("responses", {})
        for status in list(responses):  # BentoML's own 4xx/5xx entries carry its old shape
            if status[0] in "45":
                del responses[status]
        for status, description in _API_ERRORS.items():
            if status == "401" and not auth:
                continue
            responses[status] = {"description": description, **error}
{%- if cookiecutter.feature_store == "feast" %}
        if path == "/predict_entity":
            missing = "no such entity in the online store (`materialize` loads it)"
            responses["404"] = {"description": missing, **error}
{%- endif %}
    return spec


def predict_operation(row: type[BaseModel]) -> dict[str, Any]:
    """The path item of /predict, a Starlette route BentoML does not document: a `row` in, a
    Prediction out."""
    return _post_operation(
        "predict",
        'Score one row. The body is the row itself: {"<feature>": <value>, ...}.',
        {"application/json": {"schema": row.model_json_schema()}},
        Prediction,
    )


def arrow_operation() -> dict[str, Any]:
    """The path item of /predict_arrow, which BentoML does not document (its Starlette app is not an
    API of the service): the answer is /predict_batch's."""
    return _post_operation(
        "predict_arrow",
        "Score up to max_batch_rows rows sent as an Arrow IPC stream: what "
        "pyarrow.ipc.new_stream writes of a table whose columns are the training features "
        "(any order; integer or float for numeric features, string, large_string or "
        "dictionary of strings for categorical ones; nulls where the feature is nullable "
        "in /metadata's feature_profile). The fastest way to send many rows; the answer is "
        "/predict_batch's.",
        {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        BatchPrediction,
    )


def _post_operation(
    summary: str, description: str, content: dict[str, Any], answer: type[BaseModel]
) -> dict[str, Any]:
    """A POST path item; `document` adds the token and the error answers, as to BentoML's."""
    answer_schema = answer.model_json_schema(ref_template="#/components/schemas/{model}")
    answer_schema.pop("$defs", None)  # RowOutOfProfile is in the document's components already
    return {
        "post": {
            "summary": summary,
            "description": description,
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": {
                    "description": "Successful Response",
                    "content": {"application/json": {"schema": answer_schema}},
                }
            },
        }
    }


def model_card_operation() -> dict[str, Any]:
    """The path item of GET /model_card, a Starlette route BentoML does not document either."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "get": {
            "summary": "model_card",
            "description": (
                "The served version's model card (JSON): intended use, training data, holdout "
                "metrics, the gate's decision, the feature profile, known limits and lineage."
            ),
            "responses": {
                "200": {
                    "description": "The model card",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "401": {"description": _API_ERRORS["401"], **error},
                "404": {"description": "the version was trained before model cards", **error},
                "429": {"description": _API_ERRORS["429"], **error},
            },
        }
    }
