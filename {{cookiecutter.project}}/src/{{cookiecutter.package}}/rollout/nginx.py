"""nginx in front of the champion's and the candidate's servers: the traffic target of a local rollout.

It only routes and records: `local.py` starts the two servers and this proxy in front of them. nginx
runs as an ordinary process from a runtime folder that holds everything it writes (config, pid, logs,
temp files), on `rollout.proxy_port`. Each step rewrites the config and reloads it gracefully
(requests in flight finish on the old workers), then waits until the proxy answers with the new step's
number, so every request after `route` returns follows the new split:

- canary and blue-green: one weighted upstream holding the champion, the candidate, or both;
- shadow: the champion answers; `mirror` copies every request to the candidate and drops its answer.
  nginx finishes a mirrored request only when both answered, so a slow candidate delays the next
  request on the same client connection (not the answer itself): judge it before it runs for long.

What happened is read from nginx's access logs, never from the servers: which upstream handled each
attempt, its status and time (`$upstream_*`, one entry per attempt when nginx retried elsewhere), and
the prediction each server put in its `X-Prediction` header, joined by `$request_id`, which nginx sends
to both servers as `X-Request-ID`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from ..errors import RolloutError
from . import CHAMPION_ONLY, Measurement, Traffic, UpstreamStats

# `step` is written into the format itself: workers of an earlier config that still finish requests
# after a reload log them under their own step, so no step is judged on another's traffic.
LOG_FORMAT = (
    '{"step":%d,"id":"$request_id","uri":"$uri","status":"$status","upstream":"$upstream_addr",'
    '"upstream_status":"$upstream_status","upstream_time":"$upstream_response_time",'
    '"request_time":"$request_time","prediction":"$upstream_http_x_prediction"}'
)
SHADOW_LOCATION = "/_rollout/shadow"
STEP_LOCATION = "/_rollout/step"
START_TIMEOUT_SECONDS = 10


def find_nginx() -> str:
    """nginx on PATH or where Debian puts it; a clear error with the way to install it otherwise."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RolloutError(
            "nginx not found: the local rollout target runs it as a normal process "
            "(Debian/Ubuntu: apt-get install nginx-light; macOS: brew install nginx)"
        )
    return found


def config(
    traffic: Traffic, champion: str, candidate: str, port: int, runtime: Path, step: int
) -> str:
    """nginx.conf for one step. `champion` and `candidate` are host:port of the two servers.

    Longer than a function should be because it is the config file itself, read top to bottom.
    """
    weights = {champion: 100 - traffic.candidate_percent, candidate: traffic.candidate_percent}
    if traffic.mirror:
        weights = {champion: 100, candidate: 0}
    servers = "\n".join(
        f"        server {address} weight={weight} max_fails=0;"
        for address, weight in weights.items()
        if weight > 0
    )
    mirror = f"mirror {SHADOW_LOCATION};" if traffic.mirror else ""
    # Running as root (CI, containers), nginx would hand its workers to `nobody`, who cannot write
    # into the runtime folder; as anybody else the `user` line is not allowed at all.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    return f"""# Written by {__name__} for rollout step {step}; rewritten at every step.
worker_processes 1;
daemon off;
pid {runtime}/nginx.pid;
error_log {runtime}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {runtime}/temp/body;
    proxy_temp_path {runtime}/temp/proxy;
    fastcgi_temp_path {runtime}/temp/fastcgi;
    uwsgi_temp_path {runtime}/temp/uwsgi;
    scgi_temp_path {runtime}/temp/scgi;
    client_max_body_size 10m;
    log_format rollout escape=json '{LOG_FORMAT % step}';
    access_log off;

    upstream live {{
{servers}
        keepalive 32;
    }}
    upstream shadow {{
        server {candidate};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Request-ID $request_id;
        # Appends the peer nginx saw; the service believes it with FORWARDED_ALLOW_IPS=127.0.0.1.
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;

        location = {STEP_LOCATION} {{
            default_type text/plain;
            return 200 "{step}\\n";
        }}
        location / {{
            access_log {runtime}/access.log rollout;
            {mirror}
            proxy_pass http://live;
        }}
        location = {SHADOW_LOCATION} {{
            internal;
            log_subrequest on;
            access_log {runtime}/shadow.log rollout;
            proxy_pass http://shadow$request_uri;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Attempt:
    """One request nginx sent to one server."""

    request_id: str
    upstream: str
    status: int | None  # None: no answer at all
    seconds: float | None
    prediction: str


def attempts(line: dict) -> Iterator[Attempt]:
    """The attempts of one access log entry; nginx lists every server it tried, comma separated."""
    upstreams = line["upstream"].split(", ")
    statuses = line["upstream_status"].split(", ")
    times = line["upstream_time"].split(", ")
    for index, (upstream, status, seconds) in enumerate(
        zip(upstreams, statuses, times, strict=False)
    ):
        last = index == len(upstreams) - 1
        yield Attempt(
            line["id"],
            upstream,
            int(status) if status.isdigit() else None,
            float(seconds) if seconds.replace(".", "", 1).isdigit() else None,
            line["prediction"] if last else "",
        )


def stats(statuses: list[int | None], seconds: list[float | None]) -> UpstreamStats:
    timed = [value * 1000 for value in seconds if value is not None]
    return UpstreamStats(
        requests=len(statuses),
        errors=sum(1 for status in statuses if status is None or status >= 500),
        p95_ms=round(float(np.percentile(timed, 95)), 1) if timed else None,
    )


def agree(champion: str, candidate: str, tolerance: float | None) -> bool | None:
    """Whether two `X-Prediction` headers agree row by row; None when either is missing.

    Labels (tolerance None, or any label that is not a number: text, booleans) must be equal;
    numbers agree within `tolerance` of the champion's (at least of 1.0, so that predictions near
    zero are not held to a tiny absolute bound).
    """
    if not champion or not candidate:
        return None
    ours, theirs = json.loads(champion), json.loads(candidate)
    if len(ours) != len(theirs):
        return False
    return all(same(a, b, tolerance) for a, b in zip(ours, theirs, strict=True))


def same(ours: object, theirs: object, tolerance: float | None) -> bool:
    """Two answers to one row: numbers within `tolerance` (when given), anything else equal."""
    numbers = all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in (ours, theirs)
    )
    if tolerance is None or not numbers:
        return ours == theirs
    return abs(ours - theirs) <= tolerance * max(abs(ours), 1.0)


def measure(
    client_lines: Iterable[dict],
    shadow_lines: Iterable[dict],
    champion: str,
    candidate: str,
    tolerance: float | None,
) -> Measurement:
    """A step's Measurement from its access log entries (`client_lines`) and mirror entries."""
    by_party: dict[str, tuple[list, list]] = {champion: ([], []), candidate: ([], [])}
    client_statuses, client_seconds, champion_answers = [], [], {}
    for line in client_lines:
        client_statuses.append(int(line["status"]))
        client_seconds.append(float(line["request_time"]))
        for attempt in attempts(line):
            statuses, seconds = by_party.setdefault(attempt.upstream, ([], []))
            statuses.append(attempt.status)
            seconds.append(attempt.seconds)
            if attempt.upstream == champion and attempt.prediction:
                champion_answers[attempt.request_id] = attempt.prediction
    verdicts = []
    for line in shadow_lines:
        for attempt in attempts(line):
            statuses, seconds = by_party[candidate]
            statuses.append(attempt.status)
            seconds.append(attempt.seconds)
            verdict = agree(
                champion_answers.get(attempt.request_id, ""), attempt.prediction, tolerance
            )
            if verdict is not None:
                verdicts.append(verdict)
    return Measurement(
        champion=stats(*by_party[champion]),
        candidate=stats(*by_party[candidate]),
        clients=stats(client_statuses, client_seconds),
        compared=len(verdicts),
        disagreements=verdicts.count(False),
    )


class LogTail:
    """The JSON lines appended to a log file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line nginx is still writing waits
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class Proxy:
    """nginx in front of two servers, moving traffic step by step: a `rollout.TrafficTarget`."""

    def __init__(
        self,
        champion_url: str,
        candidate_url: str,
        port: int,
        runtime: Path,
        tolerance: float | None,
    ) -> None:
        self.champion = champion_url.split("://", 1)[-1].rstrip("/")
        self.candidate = candidate_url.split("://", 1)[-1].rstrip("/")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.runtime = runtime.resolve()
        self.tolerance = tolerance
        self.step = 0
        self.process: subprocess.Popen | None = None
        self.client_log = LogTail(self.runtime / "access.log")
        self.shadow_log = LogTail(self.runtime / "shadow.log")

    def _write(self, traffic: Traffic) -> Path:
        self.step += 1
        path = self.runtime / "nginx.conf"
        text = config(traffic, self.champion, self.candidate, self.port, self.runtime, self.step)
        path.write_text(text)
        return path

    def start(self, traffic: Traffic = CHAMPION_ONLY) -> Proxy:
        """Start nginx with all traffic on `traffic`; returns once it answers."""
        (self.runtime / "temp").mkdir(parents=True, exist_ok=True)
        path = self._write(traffic)
        nginx = find_nginx()
        checked = subprocess.run(
            [nginx, "-t", "-q", "-p", str(self.runtime), "-c", str(path)],
            capture_output=True,
            text=True,
        )
        if checked.returncode != 0:
            raise RolloutError(f"nginx refused {path}: {checked.stderr.strip()}")
        self.process = subprocess.Popen(
            [nginx, "-p", str(self.runtime), "-c", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._wait_for_step()
        self.client_log, self.shadow_log = (
            LogTail(self.runtime / "access.log"),
            LogTail(self.runtime / "shadow.log"),
        )
        return self

    def _wait_for_step(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RolloutError(f"nginx exited with code {self.process.returncode}: {error}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.url}{STEP_LOCATION}", timeout=2)
                if answer.text.strip() == str(self.step):
                    return
            time.sleep(0.05)
        raise RolloutError(
            f"nginx on port {self.port} did not take step {self.step} within "
            f"{START_TIMEOUT_SECONDS} s; see {self.runtime / 'error.log'}"
        )

    def route(self, traffic: Traffic) -> None:
        """Rewrite the config, reload gracefully, and return once new requests follow it."""
        if self.process is None or self.process.poll() is not None:
            raise RolloutError("the proxy is not running")
        self._write(traffic)
        self.process.send_signal(signal.SIGHUP)
        self._wait_for_step()

    def measure(self) -> Measurement:
        def this_step(lines: list[dict]) -> list[dict]:
            return [line for line in lines if line["step"] == self.step]

        return measure(
            this_step(self.client_log.read()),
            this_step(self.shadow_log.read()),
            self.champion,
            self.candidate,
            self.tolerance,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
