"""The service's front door: request ids, bearer tokens, rate limits, body limits, one error shape.

`Guard` is an ASGI middleware that BentoML runs in front of the service's APIs (see service.py). It
keeps the model code free of HTTP concerns and answers abuse before any JSON is parsed:

1. every request gets an id (the client's X-Request-ID when well formed, else a new one), echoed in
   the response with the model version, so any answer can be traced in the server log and the
   prediction log (the APIs read it with `request_id_of`);
2. health, readiness, metrics and the OpenAPI document stay open; the APIs need a bearer token,
   checked in constant time against the configured ones (only their digests are kept);
3. each client (its token, else its address) gets `rate_limit` requests, counted by the `limits`
   library; past it: 429 with Retry-After. Failed logins count against the address: the peer's,
   or the one X-Forwarded-For names when the peer is a trusted proxy (`trusted_proxies`);
4. API bodies must have their API's media type (JSON; an Arrow stream for /predict_arrow) and at
   most `max_body_bytes` (checked before and while reading); GET /model_card has none;
5. every answer of 400 or more has one JSON shape (`http_errors`), and /docs.json is the document
   `openapi.document` makes of BentoML's.

Every API answer, refusals included, is reported to `observe(path, status, seconds)`: the service
counts it in its Prometheus metrics, labelled with the model version. The tokens and the rate limit
live in `Access`, which the gRPC server (serving/grpc) shares: one budget per client over both.

This module imports nothing heavy: the serving process loads it before any worker starts.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ..errors import SecurityError
from . import openapi
from .http_errors import error_body, normalise_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKENS_VARIABLE = "SERVICE_API_TOKENS"  # comma-separated
TOKENS_FILE_VARIABLE = "SERVICE_API_TOKENS_FILE"  # one token per line: a mounted secret
# Characters; `secrets.token_urlsafe(32)` and `openssl rand -base64 32` make longer ones.
MIN_TOKEN_LENGTH = 32
# uvicorn's (BentoML runs it): the peers whose X-Forwarded-For names the client. Its own default
# trusts loopback, where a local proxy would let any client pick its rate-limit key.
PROXIES_VARIABLE = "FORWARDED_ALLOW_IPS"
REQUEST_ID_HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"
_WELL_FORMED_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Paths anyone may call: probes, Prometheus and the API description.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json"})


def load_tokens(environ: Mapping[str, str]) -> list[str]:
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


def configured_tokens(
    require_auth: bool, environ: Mapping[str, str]
) -> tuple[list[str] | None, str | None]:
    """The accepted tokens (None: auth off) and what is wrong with them, raised when serving starts.

    Not raised here: `bentoml build` imports the service too, where no token needs to exist.
    """
    if not require_auth:
        return None, None
    try:
        tokens = load_tokens(environ)
    except SecurityError as error:
        return [], str(error)
    if not tokens:
        return [], (
            f"serving.require_auth is true but neither {TOKENS_VARIABLE} nor "
            f"{TOKENS_FILE_VARIABLE} holds a token"
        )
    return tokens, None


def trusted_proxies(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """$FORWARDED_ALLOW_IPS as uvicorn should read it (IP addresses or networks, comma-separated;
    none when unset) and what is wrong with it, raised when serving starts (as the tokens')."""
    given = [item.strip() for item in environ.get(PROXIES_VARIABLE, "").split(",") if item.strip()]
    try:
        return ",".join(str(ipaddress.ip_network(item, strict=False)) for item in given), None
    except ValueError as error:
        return "", f"{PROXIES_VARIABLE}: {error}; list IP addresses or networks, comma-separated"


def request_id_from(sent: str) -> str:
    """The client's request id when well formed, else a new one."""
    return sent if _WELL_FORMED_REQUEST_ID.match(sent) else uuid.uuid4().hex


class Access:
    """Who may call the APIs and how often: the accepted tokens (only their digests are kept; None:
    auth off) and `rate_limit` in the `limits` notation ("200/second", "10/second;1000/minute") or
    None. One per serving worker, shared by Guard and the gRPC server."""

    def __init__(self, tokens: list[str] | None, rate_limit: str | None) -> None:
        self.digests = (
            None
            if tokens is None
            else [hashlib.sha256(token.encode()).digest() for token in tokens]
        )
        self.limits: list[Any] = []
        if rate_limit:
            from limits import parse_many
            from limits.aio.storage import MemoryStorage
            from limits.aio.strategies import SlidingWindowCounterRateLimiter

            self.limits = parse_many(rate_limit)
            self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    @property
    def required(self) -> bool:
        return self.digests is not None

    def client(self, authorization: str, host: str) -> str:
        """`token:<digest prefix>` for a valid bearer token (or any caller with auth off, `open:`),
        else `address:<host>`: the rate limit's key, and who is refused."""
        if self.digests is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token:
                presented = hashlib.sha256(token.strip().encode()).digest()
                # Compare with every token, without stopping early: timing tells nothing.
                matches = [hmac.compare_digest(presented, known) for known in self.digests]
                if any(matches):
                    return f"token:{presented.hex()[:16]}"
        return f"address:{host}" if self.digests is not None else f"open:{host}"

    async def retry_after(self, client: str) -> int | None:
        """Seconds to wait when `client` is over any of the limits, else None (and count the hit)."""
        for item in self.limits:
            if not await self.limiter.hit(item, client):
                stats = await self.limiter.get_window_stats(item, client)
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None


def request_id_of(scope: Mapping[str, Any]) -> str:
    """The request's id, which Guard sets on every request and answer."""
    return scope["state"]["request_id"]


class Guard:
    """ASGI middleware: the checks in this module's docstring, in that order.

    `access` holds the tokens (None: authentication off, for local development only; the service
    warns at start) and the rate limit.
    `protected` maps the API paths to the media type their bodies must have ("" for a GET route,
    which has none: token and rate limit only); everything else but OPEN_PATHS is left to the app
    (404s).
    `observe(path, status, seconds)` is called once each protected path's answer is sent.
    `documented`: OpenAPI path items of APIs that BentoML does not list, added to /docs.json.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        protected: Mapping[str, str],
        access: Access,
        max_body_bytes: int,
        model_version: int,
        observe: Callable[[str, int, float], None] | None = None,
        documented: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.observe = observe
        self.documented = dict(documented or {})
        self.protected = {path: kind.encode() for path, kind in protected.items()}
        self.access = access
        self.max_body_bytes = max_body_bytes
        self.model_version = model_version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        request_id = request_id_from(headers.get(REQUEST_ID_HEADER, b"").decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = request_id
        send = self._answering(scope["path"], request_id, send)
        if scope["path"] not in self.protected:
            await self.app(scope, receive, send)
            return
        if self.observe is not None:
            send = _observed(scope["path"], send, self.observe)
        expected = self.protected[scope["path"]]
        if scope["method"] != ("POST" if expected else "GET"):  # the app answers 405
            await self.app(scope, receive, send)
            return

        host = (scope.get("client") or ("unknown", 0))[0]
        client = self.access.client(headers.get("authorization", b"").decode("latin-1"), host)
        retry_after = await self.access.retry_after(client)
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
        if not expected:  # a GET route: no body to check
            await self.app(scope, receive, send)
            return
        media_type = headers.get("content-type", b"").split(b";")[0].strip().lower()
        if media_type != expected:
            await self._refuse(send, 415, f"the body must be {expected.decode()}")
            return
        body = await self._read_body(headers, receive)
        if body is None:
            await self._refuse(send, 413, f"the body is over {self.max_body_bytes} bytes")
            return
        await self.app(scope, _replaying(body, receive), send)

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
                    message["headers"] = _stamped(message.get("headers", []), ids)
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
            payload = self._rewritten(status, b"".join(chunks), request_id)
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

    def _rewritten(self, status: int, body: bytes, request_id: str) -> bytes:
        """An error answer in the one error shape, or the OpenAPI document as Guard serves it."""
        if status >= 400:
            shaped = normalise_error(status, body)
            shaped["error"].update(request_id=request_id, model_version=self.model_version)
            return json.dumps(shaped).encode()
        spec = json.loads(body)
        spec.setdefault("paths", {}).update(self.documented)
        return json.dumps(openapi.document(spec, self.protected, self.access.required)).encode()


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


def _stamped(headers: list[tuple[bytes, bytes]], ids: list[tuple[bytes, bytes]]) -> list:
    """A success's headers with the request id and model version; a version the app named itself
    (the fallback's, when it answered) stays."""
    own = [(name, value) for name, value in headers if name.lower() == ids[1][0]]
    return _without(headers, ids) + ids[:1] + (own[:1] or ids[1:])


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
