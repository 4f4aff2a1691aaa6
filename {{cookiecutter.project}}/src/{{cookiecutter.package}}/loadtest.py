"""A short, bounded load test of a running server, steady traffic for rollouts, and waiting until a
server serves a given version.

`smoke --load-seconds N` adds the load test to the smoke checks: a few client threads send single-row
`/predict` requests for N seconds (at most `max_requests` in all), and the check fails on any error or
when the 95th percentile latency exceeds its bound. Latencies are timed per request from send to answer,
uncorrected for coordinated omission (a closed-loop client: each thread waits for its answer), and the
report says so.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .errors import NotServing, PipelineError


def load_test(
    url: str,
    records: list[dict[str, float]],
    seconds: float,
    concurrency: int = 4,
    max_requests: int = 5_000,
    max_p95_ms: float = 1_000.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Send `records` round-robin to `/predict` from `concurrency` threads; a smoke-style check."""
    if not records:
        raise ValueError("the load test needs at least one row")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sent = 0
    deadline = time.monotonic() + seconds

    def next_index() -> int | None:
        nonlocal sent
        with lock:
            if sent >= max_requests or time.monotonic() >= deadline:
                return None
            sent += 1
            return sent

    def worker() -> None:
        with httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=headers) as http:
            while (index := next_index()) is not None:
                started = time.perf_counter()
                try:
                    answer = http.post("/predict", json=records[index % len(records)])
                    failed = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
                except httpx.HTTPError as error:
                    failed = f"{type(error).__name__}: {error}"
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if failed:
                        errors.append(failed)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    duration = time.monotonic() - started
    return _load_check(_stats(latencies, len(errors), duration, concurrency), errors, max_p95_ms)


def _load_check(stats: dict[str, Any], errors: list[str], max_p95_ms: float) -> dict[str, Any]:
    """The load test as a smoke check: passed when every request was answered, fast enough."""
    slow = stats["p95_ms"] is not None and stats["p95_ms"] > max_p95_ms
    detail = (
        f"{stats['requests']} requests in {stats['seconds']:.1f} s at concurrency "
        f"{stats['concurrency']}: {stats['requests_per_second']:.0f} req/s, p50 {stats['p50_ms']} ms, "
        f"p95 {stats['p95_ms']} ms, p99 {stats['p99_ms']} ms (uncorrected), {len(errors)} errors"
    )
    if errors:
        detail += f"; first error: {errors[0]}"
    if slow:
        detail += f"; p95 above the {max_p95_ms:g} ms bound"
    passed = stats["requests"] > 0 and not errors and not slow
    return {"name": "load_test", "passed": passed, "detail": detail, "stats": stats}


def steady_traffic(
    url: str,
    records: list[dict[str, float]],
    seconds: float,
    record: Path,
    concurrency: int = 4,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Send `records` round-robin to `/predict` for `seconds` (or until SIGTERM), as clients would.

    A request whose connection the server closed before answering is sent once more, as browsers
    do: a proxy that reloads closes its idle keep-alive connections, and a client may have sent on
    one in that instant. Every answer becomes one JSON line in `record`, written as it arrives: wall time, HTTP status, the
    model version that answered (None on failure) and the error, if any. Rollout tests and local
    rollouts read it to see what clients saw. Returns the number of requests sent.
    """
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()
    sent = 0
    deadline = time.monotonic() + seconds

    def worker(offset: int, log) -> None:
        nonlocal sent
        index = offset
        with httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=headers) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                entry: dict[str, Any] = {"status": None, "version": None, "error": None}
                try:
                    answer = _post_once_more_if_dropped(http, records[index % len(records)])
                    entry["status"] = answer.status_code
                    if answer.status_code == 200:
                        entry["version"] = answer.json()["model_version"]
                    else:
                        entry["error"] = answer.text[:200]
                except httpx.HTTPError as error:
                    entry["error"] = f"{type(error).__name__}: {error}"
                entry["time"] = time.time()
                with lock:
                    log.write(json.dumps(entry) + "\n")
                    sent += 1
                index += concurrency

    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("w", buffering=1) as log:
        threads = [
            threading.Thread(target=worker, args=(offset, log), daemon=True)
            for offset in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sent


# A connection closed before any answer came: a keep-alive connection the proxy closed as it reloaded
# (closed cleanly: RemoteProtocolError; reset: ReadError or WriteError). A prediction is safe to resend.
_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _post_once_more_if_dropped(http: httpx.Client, row: dict[str, float]) -> httpx.Response:
    try:
        return http.post("/predict", json=row)
    except _DROPPED:
        return http.post("/predict", json=row)


def _stats(
    latencies: list[float], errors: int, duration: float, concurrency: int
) -> dict[str, Any]:
    def percentile(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 1) if latencies else None

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(duration, 2),
        "concurrency": concurrency,
        "requests_per_second": len(latencies) / duration if duration > 0 else 0.0,
        "p50_ms": percentile(50),
        "p95_ms": percentile(95),
        "p99_ms": percentile(99),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "latency": "per request, uncorrected for coordinated omission",
    }


@contextlib.contextmanager
def traffic_from_another_process(
    params_path: Path | str,
    url: str,
    record: Path,
    seconds: float,
    concurrency: int = 4,
    first_answer_timeout: float = 60,
) -> Iterator[Path]:
    """Steady traffic to `url` from a second process (the `traffic` command) while the block runs.

    Enters once the first answer is recorded, so what the block measures has traffic from its start.
    On exit the process is stopped and waited for; it writes every answer as it arrives, so `record`
    then holds all of them. A second process, as clients are: the proxy and the servers see real
    connections, and this process's threads do not compete with the clients'.
    """
    record.unlink(missing_ok=True)
    sender = subprocess.Popen(
        [sys.executable, "-m", f"{__package__}.cli", "--params", str(params_path), "traffic",
         "--url", url, "--seconds", str(seconds), "--concurrency", str(concurrency),
         "--record", str(record)]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + first_answer_timeout
        while not (record.exists() and record.stat().st_size):
            if sender.poll() is not None:
                raise PipelineError(f"the traffic process exited with code {sender.returncode}")
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"no traffic recorded in {record} after {first_answer_timeout:g} s"
                )
            time.sleep(0.1)
        yield record
    finally:
        sender.terminate()
        sender.wait(30)


def wait_for_version(
    url: str,
    version: int,
    timeout: float,
    interval: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> float:
    """Poll `/metadata` until the server serves `version`; return the seconds it took.

    For a deployment that rolls out on its own after the image tag moved: the smoke test starts when
    the new version answers, not before. Raises NotServing with the last answer after `timeout`.
    """
    started = time.monotonic()
    last = "no answer"
    while True:
        try:
            answer = httpx.post(f"{url.rstrip('/')}/metadata", json={}, timeout=10, headers=headers)
            if answer.status_code == 200:
                served = answer.json().get("model_version")
                if served == version:
                    return time.monotonic() - started
                last = f"serves v{served}"
            else:
                last = f"HTTP {answer.status_code}"
        except (httpx.HTTPError, ValueError) as error:
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() - started + interval > timeout:
            raise NotServing(f"{url} did not serve v{version} within {timeout:g} s (last: {last})")
        time.sleep(interval)
