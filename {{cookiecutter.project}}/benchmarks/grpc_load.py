"""gRPC Predict beside REST /predict: the same server, the same row, the same concurrency levels.

One generated service (the LogisticRegression of `make bench`, one worker, its "protections on"
variant: token, rate limit raised out of reach, input checks, prediction log) serves HTTP and gRPC;
wrk loads POST /predict and h2load (nghttp2's C HTTP/2 load generator) loads ModelService/Predict,
one request in flight per connection for both, in interleaved rounds as `make bench` takes them.

h2load knows only HTTP: it POSTs the gRPC frame of a PredictRequest with gRPC's headers and sees the
HTTP status, while a refused gRPC call is HTTP 200 with its grpc-status in a trailer. So one call
through the Python client must answer what REST answers before any load, and every run's errors are
the server's own count (model_requests_total{endpoint="grpc_predict"}, by status) besides h2load's.
`make bench-grpc`; BENCH_SECONDS and BENCH_ROUNDS shorten a run. Not part of `make test`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchmarks.serving import (
    CONCURRENCY,
    JSON,
    LIMIT_NEVER_REACHED,
    MODELS,
    WARMUP_SECONDS,
    Load,
    fmt,
    interleaved,
    measured,
    ratio,
    require,
    scratch_settings,
    typical,
    wait_idle,
    wrk,
)
from benchmarks.serving import ROUNDS as FULL_ROUNDS
from benchmarks.serving import SECONDS as FULL_SECONDS
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package }} import data, registry, training
from {{ cookiecutter.package }}.deploy.bento import build
from {{ cookiecutter.package }}.deploy.payloads import as_records
from {{ cookiecutter.package }}.deploy.server import Server, serve
from {{ cookiecutter.package }}.reports import markdown_table
from {{ cookiecutter.package }}.serving.grpc import predict_pb2
from {{ cookiecutter.package }}.serving.grpc.client import ModelClient, as_struct, label

PREDICT_PATH = f"/{predict_pb2.DESCRIPTOR.services_by_name['ModelService'].full_name}/Predict"
REST, GRPC = "REST /predict", "gRPC Predict"
MODEL = "LR"


def whole_number(variable: str, default: int) -> int:
    """A count of seconds or rounds from the environment, at least 1."""
    value = os.environ.get(variable, str(default))
    if not value.isdigit() or int(value) < 1:
        sys.exit(f"{variable} must be a whole number of at least 1, not {value!r}")
    return int(value)


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message as it travels in an HTTP/2 body: uncompressed (0), its length (4 bytes, big
    endian), the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def percentile(sorted_values: list[float], share: float) -> float:
    """The nearest-rank percentile (wrk's histogram reports its own alike, to its precision)."""
    return sorted_values[max(math.ceil(share * len(sorted_values)) - 1, 0)]


def h2load(url: str, body: bytes, headers: dict[str, str], c: int, seconds: int, folder: Path) -> dict:  # fmt: skip
    """One h2load run, as `serving.wrk` returns its own: requests, seconds, p50 and p99 in µs (of
    the requests that ended, from h2load's per-request log) and HTTP-level errors."""
    body_path, log_path = folder / "h2load-body", folder / "h2load.log"
    body_path.write_bytes(body)
    log_path.unlink(missing_ok=True)
    command = [
        "h2load", "-t1", f"-c{c}", "-m1", f"-D{seconds}", f"--log-file={log_path}",
        "-d", str(body_path), *(f"-H{name}: {value}" for name, value in headers.items()), url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    counts = next(line for line in output.splitlines() if line.startswith("requests: "))
    # "requests: 10 total, 10 started, 10 done, 10 succeeded, 0 failed, 0 errored, 0 timeout"
    count = {
        word: int(number) for number, word in (p.split()[-2:] for p in counts[10:].split(", "))
    }
    durations = sorted(float(line.split("\t")[2]) for line in log_path.read_text().splitlines())
    if not durations:
        raise RuntimeError(f"h2load finished no request in {seconds} s on {url}:\n{output}")
    return {
        "requests": count["done"],
        "seconds": float(seconds),
        "p50_us": percentile(durations, 0.5),
        "p99_us": percentile(durations, 0.99),
        "errors": count["failed"] + count["errored"] + count["timeout"],
    }


def grpc_answers(metrics_url: str) -> dict[str, float]:
    """The server's grpc_predict answers so far, by HTTP status (as model_requests_total has them)."""
    answers: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        for sample in family.samples:
            if (
                sample.name == "model_requests_total"
                and sample.labels["endpoint"] == "grpc_predict"
            ):
                status = sample.labels["status"]
                answers[status] = answers.get(status, 0.0) + sample.value
    return answers


def rest_load(server: Server, body: bytes, headers: dict[str, str], c: int, seconds: int, folder: Path) -> Load:  # fmt: skip
    """A wrk run on POST /predict, as `make bench` measures it."""
    url = f"{server.url}/predict"
    return measured(server.process.pid, lambda: wrk(url, body, headers, c, seconds, folder))


def grpc_load(server: Server, body: bytes, headers: dict[str, str], c: int, seconds: int, folder: Path) -> Load:  # fmt: skip
    """An h2load run with its errors counted honestly: h2load's, and every answer the server counted
    under a status other than 200 meanwhile (a refused call is an HTTP 200 to h2load)."""
    grpc_url = f"http://{server.grpc_address}{PREDICT_PATH}"

    def run() -> dict:
        before = grpc_answers(f"{server.url}/metrics")
        result = h2load(grpc_url, body, headers, c, seconds, folder)
        after = grpc_answers(f"{server.url}/metrics")
        refused = sum(n - before.get(status, 0.0) for status, n in after.items() if status != "200")
        return {**result, "errors": result["errors"] + int(refused)}

    return measured(server.process.pid, run)


def same_answer(server: Server, row: dict, token: str, rest_headers: dict[str, str]) -> None:
    """Stop unless one gRPC call answers what REST /predict answers for the row."""
    rest = httpx.post(f"{server.url}/predict", json=row, headers=rest_headers, timeout=30)
    rest.raise_for_status()
    with ModelClient(server.grpc_address, token) as client:
        reply = client.predict(row)
    expected = rest.json()
    answered = {"prediction": label(reply.prediction), "probability": reply.probability}
    if answered["prediction"] != expected["prediction"] or not math.isclose(
        answered["probability"], expected["probability"], rel_tol=1e-9
    ):
        sys.exit(f"gRPC Predict answered {answered}, REST /predict {expected}: not measuring")


def table_rows(rounds: dict[tuple[str, int], list[Load]]) -> list[list]:
    """One row per endpoint and concurrency, medians of the rounds; gRPC against REST."""
    rows = []
    for c in CONCURRENCY:
        rest = typical(rounds[REST, c])
        for endpoint in (REST, GRPC):
            result = typical(rounds[endpoint, c])
            reference = rest.requests_per_second if endpoint == GRPC else None
            rows.append([
                endpoint, c, fmt(result.requests_per_second),
                ratio(result.requests_per_second, reference), fmt(result.p50_ms, 2),
                fmt(result.p99_ms, 1), result.errors, fmt(result.cpu_ms_per_request, 2),
            ])  # fmt: skip
    return rows


def measure(folder: Path, seconds: int, rounds_wanted: int) -> list[list]:
    """Train, build and serve the model in `folder`, check both APIs agree, then load them."""
    serving = {**LIMIT_NEVER_REACHED, "workers": 1}
    settings = scratch_settings(folder, MODELS[MODEL], {"serving": serving})
    frame = data.read_table(settings.resolve(settings.params.data.source))
    features, _ = data.split_features_target(frame, settings.params.data)
    models = registry.Registry(settings)
    version = training.train(settings, models, frame).model_version
    row = as_records(features.head(1))[0]
    rest_headers = {**JSON, **settings.client_headers()}
    grpc_headers = {
        "content-type": "application/grpc", "te": "trailers",
        "authorization": settings.client_headers()["Authorization"],
    }  # fmt: skip
    rest_body = json.dumps(row).encode()
    grpc_body = grpc_frame(predict_pb2.PredictRequest(features=as_struct(row)).SerializeToString())
    with serve(settings, build(settings, models, version)) as server:
        same_answer(server, row, settings.api_token(), rest_headers)
        wrk(f"{server.url}/predict", rest_body, rest_headers, 8, WARMUP_SECONDS, folder)
        grpc_load(server, grpc_body, grpc_headers, 8, WARMUP_SECONDS, folder)
        wait_idle(server.process.pid)
        measures = {
            REST: lambda c: rest_load(server, rest_body, rest_headers, c, seconds, folder),
            GRPC: lambda c: grpc_load(server, grpc_body, grpc_headers, c, seconds, folder),
        }
        return table_rows(interleaved(measures, rounds_wanted))


def main() -> None:
    require("wrk", "wrk")
    require("h2load", "nghttp2-client")
    seconds = whole_number("BENCH_SECONDS", FULL_SECONDS)
    rounds_wanted = whole_number("BENCH_ROUNDS", FULL_ROUNDS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.environ["BENTOML_HOME"] = str(folder / "bentoml")  # never the project's stores
        rows = measure(folder, seconds, rounds_wanted)
    print(f"Serving on {os.cpu_count()} CPUs, one worker, {MODEL}, protections on; wrk -t1 and h2load -t1 -m1 on 127.0.0.1, {seconds} s per measurement after a {WARMUP_SECONDS} s warm-up")  # fmt: skip
    print(f"Single-row REST /predict and gRPC Predict on the same server, medians of {rounds_wanted} interleaved rounds; errors: non-2xx and socket errors, and gRPC calls the server refused\n")  # fmt: skip
    header = ["endpoint", "concurrency", "req/s", "vs REST", "p50 ms", "p99 ms", "errors", "server CPU ms/request"]  # fmt: skip
    print(markdown_table(header, rows))
    print(f"\n{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
