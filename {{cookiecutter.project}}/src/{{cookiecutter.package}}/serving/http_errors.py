"""One error shape for every answer of 400 or more, and a quiet log for refused bodies.

`{"error": {status, code, message, details, request_id, model_version}}`; a 5xx never carries more
than a generic message: details stay in the log, under the request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

ERROR_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "out_of_profile",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_body(
    status: int,
    message: str,
    *,
    details: list[Any] | None = None,
    request_id: str | None = None,
    model_version: int | None = None,
) -> dict[str, Any]:
    """The one error shape every 4xx and 5xx answer has."""
    return {
        "error": {
            "status": status,
            "code": ERROR_CODES.get(status, "error" if status < 500 else "internal_error"),
            "message": message,
            "details": details or [],
            "request_id": request_id,
            "model_version": model_version,
        }
    }


def _field_problems(detail: Any) -> list[dict[str, str]]:
    """pydantic's error list (as BentoML answers it) as {field, problem}; the input is never echoed."""
    if not isinstance(detail, list):
        return []
    problems = []
    for item in detail:
        if isinstance(item, Mapping):
            location = [str(part) for part in item.get("loc", ()) if part not in ("body", "root")]
            problems.append({"field": ".".join(location), "problem": str(item.get("msg", ""))})
    return problems


def invalid_fields(detail: Any) -> tuple[str, list[dict[str, str]]]:
    """A 400's message and details for pydantic's error list: the first problem names its field
    (pydantic's own "1 validation error for Row" names none), the details list them all."""
    details = _field_problems(detail)
    if not details:
        return "invalid input", []
    first = details[0]
    message = f"{first['field'] or 'body'}: {first['problem']}"
    message += f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return message, details


def normalise_error(status: int, body: bytes) -> dict[str, Any]:
    """Any error answer as the one shape; server errors keep only a generic message."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    if status >= 500:
        return error_body(status, f"{reason}: the server log has the details under this request id")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and parsed:  # BentoML wraps some errors in a one-element list
        parsed = parsed[0]
    if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), Mapping):
        return {"error": {**error_body(status, reason)["error"], **parsed["error"]}}
    message, details = reason, []
    if isinstance(parsed, Mapping):
        message, details = invalid_fields(parsed.get("detail"))
        if not details:
            message = str(parsed.get("error") or reason)
    elif body and not body.lstrip().startswith((b"{", b"[")):
        message = body.decode("utf-8", "replace").strip()[:200] or reason
    return error_body(status, message, details=details)


class QuietClientErrors(logging.Filter):
    """One INFO line, not an ERROR with a traceback, for a request body the service refused.

    BentoML logs every invalid body with its stack trace: one bad client could flood the log. Add
    to the `bentoml._internal.server.http_app` logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = getattr(getattr(error, "error_code", None), "value", 500)
        if type(error).__name__ == "ValidationError" or status < 500:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"Refused %s [%s]: {type(error).__name__}"
        return True
