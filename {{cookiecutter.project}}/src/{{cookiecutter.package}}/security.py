"""The service's front door: request ids, bearer tokens, rate limits, body limits, one error shape.

`Guard` is an ASGI middleware that BentoML runs in front of the service's APIs (see service.py). It
keeps the model code free of HTTP concerns and answers abuse before any JSON is parsed:

1. every request gets an id (the client's X-Request-ID when well formed, else a new one), echoed in
   the response with the model version, so any answer can be traced in the server log and the
   prediction log (the APIs read it from `scope["state"]["request_id"]`);
2. health, readiness, metrics and the OpenAPI document stay open; the APIs need a bearer token,
   checked in constant time against the configured ones (only their digests are kept);
3. each client (its token, else its address) gets `rate_limit` requests, counted by the `limits`
   library; past it: 429 with Retry-After. Failed logins count against the address;
4. API bodies must have their API's media type (JSON; an Arrow stream for /predict_arrow) and at
   most `max_body_bytes` (checked before and while reading);
5. every answer of 400 or more has one JSON shape, `{"error": {status, code, message, details,
   request_id, model_version}}`, and a 5xx never carries more than that: details stay in the log.

Every API answer, refusals included, is reported to `observe(path, status, seconds)`: the service
counts it in its Prometheus metrics, labelled with the model version.

`ProfileCheck` finds the values of a request that training never saw; the service applies its
out_of_profile policy to them (flag or refuse).

This module imports nothing heavy: the serving process loads it before any worker starts. Its
`artifact_digest` is also what training records at registration and what the service verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SecurityError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# The body of /predict_arrow: an Arrow IPC stream (every other API takes JSON).
ARROW_STREAM = "application/vnd.apache.arrow.stream"

TOKENS_VARIABLE = "SERVICE_API_TOKENS"  # comma-separated
TOKENS_FILE_VARIABLE = "SERVICE_API_TOKENS_FILE"  # one token per line: a mounted secret
MIN_TOKEN_LENGTH = 16
REQUEST_ID_HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"
_WELL_FORMED_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Paths anyone may call: probes, Prometheus and the API description.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json"})
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
MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow model
# The registry tag (and stored-model label) holding the digest recorded at registration.
DIGEST_TAG = "model_sha256"
# The file MLflow adds next to a model when it is downloaded through the registry: not the model.
_NOT_ARTIFACTS = frozenset({"registered_model_meta"})


def load_tokens(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The accepted tokens: $SERVICE_API_TOKENS, else the lines of $SERVICE_API_TOKENS_FILE."""
    if environ.get(TOKENS_VARIABLE):
        tokens = environ[TOKENS_VARIABLE].split(",")
    elif environ.get(TOKENS_FILE_VARIABLE):
        path = Path(environ[TOKENS_FILE_VARIABLE])
        try:
            tokens = path.read_text().splitlines()
        except OSError as error:
            raise SecurityError(f"{TOKENS_FILE_VARIABLE}={path}: {error.strerror}") from None
    else:
        tokens = []
    tokens = [token.strip() for token in tokens if token.strip()]
    short = sum(len(token) < MIN_TOKEN_LENGTH for token in tokens)
    if short:
        raise SecurityError(
            f"{short} of the API tokens are shorter than {MIN_TOKEN_LENGTH} characters"
        )
    return tokens


def artifact_digest(folder: Path | str) -> str:
    """sha256 over every file of a model folder (relative path and content), in a fixed order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and path.name not in _NOT_ARTIFACTS
    )
    if not files:
        raise SecurityError(f"{folder}: no model files to digest")
    for path in files:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def verify_artifacts(folder: Path | str, expected: str | None, what: str) -> None:
    """Raise SecurityError unless the folder's digest is the one recorded at registration."""
    if not expected:
        raise SecurityError(f"{what}: no model_sha256 was recorded; register the model again")
    found = artifact_digest(folder)
    if not hmac.compare_digest(found, expected):
        raise SecurityError(
            f"{what}: model files changed since registration (sha256 {found[:12]}..., "
            f"recorded {expected[:12]}...); refusing to serve them"
        )


class ProfileCheck:
    """Which values of a batch of rows lie outside the training profile: beyond a feature's range,
    or not one of its categories. The profile is turned into arrays once, so a request pays a few
    vector comparisons."""

    def __init__(self, features: list[str], profile: Mapping[str, Mapping[str, Any]]) -> None:
        self.features = features
        self.lowest = np.array([profile[name]["min"] for name in features])
        self.highest = np.array([profile[name]["max"] for name in features])
        self.categories = {
            index: np.array(profile[name]["categories"])
            for index, name in enumerate(features)
            if profile[name].get("categories")
        }

    def outside(self, rows: np.ndarray) -> dict[int, list[str]]:
        """The rows (by position) holding values training never saw, and the features concerned.

        Only rows with any such value are listed: walking every row of a 1,000-row batch in Python
        would cost about a millisecond, more than the model takes.
        """
        outside = (rows < self.lowest) | (rows > self.highest)
        for index, categories in self.categories.items():
            outside[:, index] |= ~np.isclose(rows[:, index, None], categories).any(axis=1)
        return {
            int(row): [self.features[index] for index in np.flatnonzero(outside[row])]
            for row in np.flatnonzero(outside.any(axis=1))
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
        details = _field_problems(parsed.get("detail"))
        message = str(parsed.get("error") or reason)
        if details:  # pydantic's "1 validation error for RowIODescriptor" names no feature
            first = details[0]
            message = f"{first['field'] or 'body'}: {first['problem']}"
            message += f" (and {len(details) - 1} more)" if len(details) > 1 else ""
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


class Guard:
    """ASGI middleware: the checks in this module's docstring, in that order.

    `tokens=None` turns authentication off (local development only; the service warns at start).
    `rate_limit` is in the `limits` notation ("200/second", "10/second;1000/minute") or None.
    `protected` maps the API paths to the media type their bodies must have; everything else but
    OPEN_PATHS is left to the app (404s).
    `observe(path, status, seconds)` is called once each protected path's answer is sent.
    `documented`: OpenAPI path items of APIs that BentoML does not list, added to /docs.json.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        protected: Mapping[str, str],
        tokens: list[str] | None,
        rate_limit: str | None,
        max_body_bytes: int,
        model_version: int,
        observe: Callable[[str, int, float], None] | None = None,
        documented: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.observe = observe
        self.documented = dict(documented or {})
        self.protected = {path: kind.encode() for path, kind in protected.items()}
        self.digests = (
            None
            if tokens is None
            else [hashlib.sha256(token.encode()).digest() for token in tokens]
        )
        self.max_body_bytes = max_body_bytes
        self.model_version = model_version
        self.limits: list[Any] = []
        if rate_limit:
            from limits import parse_many
            from limits.aio.storage import MemoryStorage
            from limits.aio.strategies import SlidingWindowCounterRateLimiter

            self.limits = parse_many(rate_limit)
            self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        sent_id = headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = sent_id if _WELL_FORMED_REQUEST_ID.match(sent_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        send = self._answering(scope["path"], request_id, send)
        if scope["path"] not in self.protected:
            await self.app(scope, receive, send)
            return
        if self.observe is not None:
            send = _observed(scope["path"], send, self.observe)
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return

        client = self._client(headers, scope)
        retry_after = await self._over_limit(client)
        if retry_after is not None:
            await self._refuse(send, 429, "too many requests", [("retry-after", str(retry_after))])
            return
        if client.startswith("address:"):  # auth is on and no valid token came
            challenge = 'Bearer realm="model", error="invalid_token"'
            if "authorization" not in headers:
                challenge = 'Bearer realm="model"'
            message = "a valid bearer token is required (Authorization: Bearer <token>)"
            await self._refuse(send, 401, message, [("www-authenticate", challenge)])
            return
        media_type = headers.get("content-type", b"").split(b";")[0].strip().lower()
        expected = self.protected[scope["path"]]
        if media_type != expected:
            await self._refuse(send, 415, f"the body must be {expected.decode()}")
            return
        body = await self._read_body(headers, receive)
        if body is None:
            await self._refuse(send, 413, f"the body is over {self.max_body_bytes} bytes")
            return
        await self.app(scope, _replaying(body, receive), send)

    def _client(self, headers: Mapping[str, bytes], scope: Scope) -> str:
        """`token:<digest prefix>` for a valid token (or any caller with auth off), else `address:`."""
        if self.digests is not None:
            scheme, _, token = headers.get("authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                presented = hashlib.sha256(token.strip().encode()).digest()
                # Compare with every token, without stopping early: timing tells nothing.
                matches = [hmac.compare_digest(presented, known) for known in self.digests]
                if any(matches):
                    return f"token:{presented.hex()[:16]}"
        host = (scope.get("client") or ("unknown", 0))[0]
        return f"address:{host}" if self.digests is not None else f"open:{host}"

    async def _over_limit(self, client: str) -> int | None:
        """Seconds to wait when `client` is over any of the limits, else None (and count the hit)."""
        for item in self.limits:
            if not await self.limiter.hit(item, client):
                stats = await self.limiter.get_window_stats(item, client)
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None

    async def _read_body(self, headers: Mapping[str, bytes], receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _refuse(
        self, send: Send, status: int, message: str, headers: list[tuple[str, str]] = ()
    ) -> None:
        payload = json.dumps(error_body(status, message)).encode()
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(name.encode(), value.encode()) for name, value in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    def _answering(self, path: str, request_id: str, send: Send) -> Send:
        """`send`, adding the request id and model version to every answer and reshaping errors."""
        held: dict[str, Any] = {}
        chunks: list[bytes] = []
        ids = [
            (REQUEST_ID_HEADER.encode(), request_id.encode()),
            (MODEL_VERSION_HEADER.encode(), str(self.model_version).encode()),
        ]

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                rewrite = message["status"] >= 400 or (
                    path == "/docs.json" and message["status"] == 200
                )
                if not rewrite:
                    message["headers"] = _without(message.get("headers", []), ids) + ids
                    await send(message)
                    return
                held.update(message)
                return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = held["status"]
            if status >= 400:
                shaped = normalise_error(status, b"".join(chunks))
                shaped["error"].update(request_id=request_id, model_version=self.model_version)
                payload = json.dumps(shaped).encode()
            else:
                spec = json.loads(b"".join(chunks))
                spec.setdefault("paths", {}).update(self.documented)
                payload = json.dumps(document(spec, self.protected, self.digests is not None))
                payload = payload.encode()
            kept = [
                (name, value)
                for name, value in held.get("headers", [])
                if name.lower() not in (b"content-length", b"content-type")
            ]
            headers = _without(kept, ids) + ids
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        return answer


def _observed(path: str, send: Send, observe: Callable[[str, int, float], None]) -> Send:
    """`send`, reporting the status and the seconds since now once the answer's last byte is sent."""
    started = time.perf_counter()
    status = 0

    async def answer(message: Message) -> None:
        nonlocal status
        await send(message)
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            observe(path, status, time.perf_counter() - started)

    return answer


def _without(headers: list[tuple[bytes, bytes]], replaced: list[tuple[bytes, bytes]]) -> list:
    names = {name for name, _ in replaced}
    return [(name, value) for name, value in headers if name.lower() not in names]


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits as the original does."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


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
}


def _allow_null_defaults(node: Any) -> None:
    """Mark properties whose default is null as nullable: BentoML's document leaves that out."""
    if isinstance(node, dict):
        for prop in (node.get("properties") or {}).values():
            if isinstance(prop, dict) and "default" in prop and prop["default"] is None:
                prop["nullable"] = True
        for value in node.values():
            _allow_null_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _allow_null_defaults(value)


def document(spec: dict[str, Any], protected: Iterable[str], auth: bool) -> dict[str, Any]:
    """BentoML's OpenAPI document with what Guard adds: the token, the error answers, the headers."""
    _allow_null_defaults(spec)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    if auth:
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path in protected:
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        if auth:
            operation["security"] = [{"bearer": []}]
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
    return spec
