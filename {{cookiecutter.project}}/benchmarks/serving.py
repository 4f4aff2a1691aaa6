"""How fast the generated service answers, side by side with a plain FastAPI app and the model itself.

One run, one machine, one load generator (wrk on 127.0.0.1), the same registered models: a
LogisticRegression and a 100-tree RandomForest trained here in a scratch registry (never the project's
own). For each model and each worker count (one each, then two each):

- the article's FastAPI + joblib app, its code as written (benchmarks/baseline_fastapi.py, uvicorn),
  the baseline, sent each row as it takes one (`article_body`);
- the generated BentoML service, once per variant in VARIANTS (overrides of params.yaml);
- the in-process limit: `model.predict` on one row, called in a loop in this process.

Single-row JSON to /predict at concurrency 1, 8 and 64: requests/s, p50, p99, errors (non-2xx and
socket errors), peak server memory (RSS summed over the server's process tree). Every server of one
worker count is up at once and measured in turn, ROUNDS times over: whatever else the machine does
hits them alike, and the tables give each one's median. Then the batch endpoints, rows as objects
(/predict_batch), as a JSON table (/predict_columns) and as an Arrow stream (/predict_arrow),
BATCH_ROWS rows per request, against in-process predict on the same batch, and the `batch` command's
scoring loop on a BATCH_FILE_ROWS-row CSV against a plain chunked read_csv + predict loop, and the
Spark engine on the same file (local[*]; memory summed over the driver, the JVM and the workers).
What the numbers were and what each setting changed: benchmarks/README.md. Prints tables; `make bench`
(about 15 minutes). Not part of `make test`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import psutil
import yaml

from {{ cookiecutter.package }} import data, prediction_log, registry, training
from {{ cookiecutter.package }}.auth_off import OVERRIDE_VARIABLE
from {{ cookiecutter.package }}.deploy.bento import build
from {{ cookiecutter.package }}.deploy.payloads import as_arrow, as_records, as_table
from {{ cookiecutter.package }}.deploy.server import free_port, serve
from {{ cookiecutter.package }}.profile import ProfileCheck, feature_profile
from {{ cookiecutter.package }}.reports import markdown_table
from {{ cookiecutter.package }}.serving.arrow import ARROW_STREAM
from {{ cookiecutter.package }}.serving.guard import Access, Guard
from {{ cookiecutter.package }}.settings import Settings, load_settings

PROJECT = Path(__file__).resolve().parents[1]

# Every served variant of the generated service: a name, the params.yaml sections it overrides (on
# top of the project's), and the worker counts it runs with (`serving.workers`).
LIMIT_NEVER_REACHED = {"rate_limit": "1000000/second"}
VARIANTS: list[tuple[str, dict[str, dict[str, Any]], tuple[int, ...]]] = [
    # Auth, rate limit and input checks on, and every request in the prediction log (sample_rate 1);
    # the limit is raised above what one machine can send, so it is checked on every request but
    # never refuses one (params.yaml's 1000/second would).
    ("protections on", {"serving": LIMIT_NEVER_REACHED}, (1, 2)),
    # Their cost is this against "protections on" (target: under 10% of requests/s).
    (
        "protections off",
        {"serving": {"require_auth": False, "rate_limit": None, "out_of_profile": "off"}},
        (1,),
    ),
    # The prediction log's cost is "protections on" against this (target: under 5%).
    (
        "prediction log off",
        {"serving": LIMIT_NEVER_REACHED, "monitoring": {"sample_rate": 0}},
        (1,),
    ),
]
WORKER_COUNTS = (1, 2)  # of the baseline; BentoML variants list theirs
BASELINE = "FastAPI baseline"
BASELINE_MODEL = "model.pkl"  # where the article's app loads its model from: its working directory
CONCURRENCY = (1, 8, 64)
MODELS = {
    "LR": {"estimator": "logistic_regression", "hyperparameters": {"C": 1.0, "max_iter": 1000}},
    "RF": {"estimator": "random_forest", "hyperparameters": {"n_estimators": 100}},
}
SECONDS = 3  # per measurement
ROUNDS = 5  # measurements of each server at each concurrency, interleaved with the other servers'
WARMUP_SECONDS = 2  # of load at concurrency 8 once per server, not measured
BATCH_ROWS = 1000  # rows per batch request (serving.max_batch_rows must allow it)
BATCH_CONCURRENCY = 2
BATCH_FILE_ROWS = 1_000_000
LOG_REQUESTS = 20_000  # single-row requests through the prediction log in this process
GUARD_BLOCK, GUARD_BLOCKS = 2_000, 10  # requests per block, blocks of each Guard
READY_TIMEOUT = 60
JSON = {"Content-Type": "application/json"}


@dataclass
class Load:
    """One wrk run: requests/s, latency percentiles in ms, errors, peak server memory in MB, and the
    server's CPU time per request in ms (its whole process tree)."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    memory_mb: float
    cpu_ms_per_request: float


# wrk calls done() at the end; the line it prints is parsed instead of wrk's human-readable report.
WRK_SCRIPT = string.Template("""
wrk.method = "POST"
local file = assert(io.open([==[$body_path]==], "rb"))
wrk.body = file:read("*a")
file:close()
$headers
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "seconds": %f, "p50_us": %f, "p99_us": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
""")


def require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if not found:
        sys.exit(f"this benchmark needs the {tool} load generator: apt-get install {package}")
    return found


def scratch_settings(
    folder: Path, model: dict[str, Any], sections: dict[str, dict[str, Any]]
) -> Settings:
    """A scratch project in `folder` (data, suite, params with these section overrides), its own
    registry."""
    for name in ("data", "validation"):
        if not (folder / name).exists():
            shutil.copytree(PROJECT / name, folder / name)
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["model"] = {**params["model"], **model}
    params["serving"] = {**params.get("serving", {}), "max_batch_rows": BATCH_ROWS}
    for section, overrides in sections.items():
        params[section] = {**params.get(section, {}), **overrides}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    own = {**own_store(folder), "REPORTS_DIR": str(folder / "reports")}
    return load_settings(folder / "params.yaml", environ={**os.environ, **own})


def own_store(folder: Path) -> dict[str, str]:
    """The environment that points MLflow at `folder`'s store, whatever os.environ says: MLflow's
    set_tracking_uri and set_registry_uri write both variables into os.environ, so a scratch project,
    or a child process, would otherwise read the last project's (a registry of one store beside the
    tracking of another: "Logged model ... not found")."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (BentoML and uvicorn fork workers)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


@contextlib.contextmanager
def peak_memory(pid: int) -> Iterator[list[float]]:
    """Sample the tree's RSS every 0.2 s while the block runs; the peak ends up in the list."""
    peak = [tree_rss_mb(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], tree_rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


def wrk(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, folder: Path
) -> dict:
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    body_path = folder / "wrk-body"
    body_path.write_bytes(body)  # read by the script: a Lua string literal would mangle binary
    script = folder / "wrk.lua"
    script.write_text(WRK_SCRIPT.substitute(body_path=body_path, headers=header_lines))
    command = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK_RESULT "))
    return json.loads(line.removeprefix("WRK_RESULT "))


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def wait_idle(pid: int, timeout: float = 10) -> None:
    """Until the server stops working off requests of a run that ended (wrk closes its connections,
    the server still answers what it had read): otherwise that work would slow the next run."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_cpu_seconds(pid)
        if now - before < 0.025:  # under a tenth of a core
            return
        before = now


def warm_up(url: str, body: bytes, headers: dict[str, str], pid: int, folder: Path) -> None:
    wrk(url, body, headers, 8, WARMUP_SECONDS, folder)
    wait_idle(pid)


def load(url: str, body: bytes, headers: dict[str, str], c: int, pid: int, folder: Path) -> Load:
    return measured(pid, lambda: wrk(url, body, headers, c, SECONDS, folder))


def measured(pid: int, run: Callable[[], dict]) -> Load:
    """One load generator's run (a dict with wrk's result's keys) and the server's side of it."""
    wait_idle(pid)
    cpu_before = tree_cpu_seconds(pid)
    with peak_memory(pid) as peak:
        result = run()
    cpu_ms = (tree_cpu_seconds(pid) - cpu_before) * 1000
    return Load(
        requests_per_second=result["requests"] / result["seconds"],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=result["errors"],
        requests=result["requests"],
        memory_mb=peak[0],
        cpu_ms_per_request=cpu_ms / max(result["requests"], 1),
    )


@contextlib.contextmanager
def baseline_server(model_path: Path, workers: int, log: Path) -> Iterator[tuple[str, int]]:
    """The article's FastAPI app under uvicorn with `workers` workers, in the folder of
    `model_path` (the `model.pkl` it loads)."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "baseline_fastapi:app", "--app-dir", str(PROJECT / "benchmarks"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=model_path.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the baseline app exited; see {log}:\n{log.read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/docs", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the baseline app was not ready in {READY_TIMEOUT} s; see {log}"
                )
            time.sleep(0.2)
        yield url, process.pid
    finally:
        family = psutil.Process(process.pid).children(recursive=True)
        process.terminate()
        process.wait(15)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def start_baseline(
    running: contextlib.ExitStack, model_path: Path, workers: int, folder: Path, body: bytes
) -> Server:
    url, pid = running.enter_context(
        baseline_server(model_path, workers, folder / f"baseline-{workers}.log")
    )
    return Server(url, pid, JSON, body)


def in_process_rate(model: Any, rows: np.ndarray, seconds: float = 1.0) -> float:
    """Calls of model.predict(rows) per second, in this process, after one warm-up call."""
    model.predict(rows)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        model.predict(rows)
        calls += 1
    return calls / elapsed


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def cost(feature_on: list[Load], feature_off: list[Load]) -> list[str]:
    """What turning a feature on costs: requests/s lost, and server CPU time per request added.

    Each round's pair was measured back to back, so the cost is computed per round and the median
    reported, with the rounds' range. CPU time per request is the steadier on a shared machine:
    time stolen by its neighbours slows requests but is not the server's CPU time. Negative
    numbers: the variant with the feature was cheaper, i.e. noise.
    """
    pairs = list(zip(feature_on, feature_off, strict=True))
    lost = [1 - on.requests_per_second / off.requests_per_second for on, off in pairs]
    added = [on.cpu_ms_per_request / off.cpu_ms_per_request - 1 for on, off in pairs]
    return [spread(lost), spread(added)]


def spread(values: list[float]) -> str:
    """A share as "median% (lowest..highest)"."""
    return f"{median(values) * 100:.1f}% ({min(values) * 100:.0f}..{max(values) * 100:.0f})"


def typical(rounds: list[Load]) -> Load:
    """One row for a server's rounds: medians, errors summed, the highest memory."""
    return Load(
        requests_per_second=median(r.requests_per_second for r in rounds),
        p50_ms=median(r.p50_ms for r in rounds),
        p99_ms=median(r.p99_ms for r in rounds),
        errors=sum(r.errors for r in rounds),
        requests=sum(r.requests for r in rounds),
        memory_mb=max(r.memory_mb for r in rounds),
        cpu_ms_per_request=median(r.cpu_ms_per_request for r in rounds),
    )


def load_row(
    model: str, server: str, workers: int, c: int, result: Load, baseline: Load | None
) -> list:
    return [
        model, server, workers, c, fmt(result.requests_per_second),
        ratio(result.requests_per_second, baseline and baseline.requests_per_second),
        fmt(result.p50_ms, 2), fmt(result.p99_ms, 1), result.errors, fmt(result.memory_mb),
    ]  # fmt: skip


@dataclass
class Server:
    url: str
    pid: int
    headers: dict[str, str]
    body: bytes  # one row, as this server's /predict takes it


def serve_model(
    label: str,
    folder: Path,
    frame: pd.DataFrame,
    records: list[dict[str, float]],
    notes: list[str],
    one_worker: dict[tuple[str, str, int], list[Load]],
) -> tuple[list[list], list[list], int]:
    """Every server for one model: single-row rows of the table, batch endpoint rows, and the
    version registered in `folder`'s registry.

    Each variant's rounds with one worker also go to `one_worker[label, variant, c]`.
    """
    base = scratch_settings(folder, MODELS[label], {})
    models = registry.Registry(base)
    version = training.train(base, models, frame).model_version
    model = models.load_model(version)
    model_path = folder / BASELINE_MODEL  # the baseline's, and the batch command rows' (main)
    joblib.dump(model, model_path)
    row_body = json.dumps(records[0]).encode()
    rows = pd.DataFrame(records[:BATCH_ROWS])
    batch_bodies = {  # path: body, media type
        "/predict_batch": (json.dumps({"rows": records[:BATCH_ROWS]}).encode(), JSON),
        "/predict_columns": (json.dumps(as_table(rows)).encode(), JSON),
        "/predict_arrow": (as_arrow(rows), {"Content-Type": ARROW_STREAM}),
    }
    features = data.split_features_target(frame, base.params.data)[0]
    baseline_body = article_body(records[0], list(features.columns))
    one_row = features.head(1).to_numpy(dtype=np.float64)
    many_rows = np.resize(features.to_numpy(dtype=np.float64), (BATCH_ROWS, features.shape[1]))
    single, batch = [], []
    with warnings_quiet():
        one_rate = in_process_rate(model, one_row)
        batch_rate = in_process_rate(model, many_rows) * BATCH_ROWS
    single.append([label, "in-process predict, 1 row", 1, 1, fmt(one_rate), "-", fmt(1000 / one_rate, 2), "-", "-", "-"])  # fmt: skip
    batch.append([label, f"in-process predict, {BATCH_ROWS} rows", fmt(batch_rate), "1.00x"])
    # The limit for 64 clients whose rows are scored together: 64 rows a call, rows/s.
    with warnings_quiet():
        rate_64 = in_process_rate(model, many_rows[:64]) * 64
    single.append([label, "in-process predict, 64 rows a call", 1, 64, fmt(rate_64), "-", "-", "-", "-", "-"])  # fmt: skip
    for workers in WORKER_COUNTS:
        with contextlib.ExitStack() as running:
            servers = {
                BASELINE: start_baseline(running, model_path, workers, folder, baseline_body)
            }
            for name, overrides, worker_counts in VARIANTS:
                if workers in worker_counts:
                    serving = {**overrides.get("serving", {}), "workers": workers}
                    settings = scratch_settings(
                        folder, MODELS[label], {**overrides, "serving": serving}
                    )
                    tag = build(settings, registry.Registry(settings), version)
                    server = running.enter_context(serve(settings, tag))
                    headers = {**JSON, **settings.client_headers()}
                    servers[f"BentoML {name}"] = Server(
                        server.url, server.process.pid, headers, row_body
                    )
            for server in servers.values():
                warm_up(f"{server.url}/predict", server.body, server.headers, server.pid, folder)
            rounds = interleaved({n: at_predict(s, folder) for n, s in servers.items()})
            for name in servers:
                for c in CONCURRENCY:
                    baseline = typical(rounds[BASELINE, c])
                    reference = None if name == BASELINE else baseline
                    result = typical(rounds[name, c])
                    single.append(load_row(label, name, workers, c, result, reference))
                    if workers == 1:
                        one_worker[label, name, c] = rounds[name, c]
            for name, server in servers.items() if workers == 1 else ():
                for path, (body, media_type) in batch_bodies.items() if name != BASELINE else ():
                    headers = {**server.headers, **media_type}
                    result = load(f"{server.url}{path}", body, headers, BATCH_CONCURRENCY, server.pid, folder)  # fmt: skip
                    rows_per_second = result.requests_per_second * BATCH_ROWS
                    batch.append([label, f"{name} {path}, c={BATCH_CONCURRENCY}", fmt(rows_per_second), ratio(rows_per_second, batch_rate)])  # fmt: skip
                    if result.errors:
                        notes.append(f"{label} {name} {path}: {result.errors} errors")
    return single, batch, version


def at_predict(server: Server, folder: Path) -> Callable[[int], Load]:
    """`load` on the server's /predict with its body, at the concurrency `interleaved` gives."""
    return lambda c: load(
        f"{server.url}/predict", server.body, server.headers, c, server.pid, folder
    )


def article_body(record: dict[str, float], columns: list[str]) -> bytes:
    """`record` as the article's app takes it: {"features": [...]}, bare numbers in the order of
    the columns the model was trained on."""
    return json.dumps({"features": [record[name] for name in columns]}).encode()


def interleaved(
    measures: dict[str, Callable[[int], Load]], rounds_wanted: int = ROUNDS
) -> dict[tuple[str, int], list[Load]]:
    """Each measure at each concurrency, in turns; the first rotates, so none always follows a rest."""
    rounds: dict[tuple[str, int], list[Load]] = {(n, c): [] for n in measures for c in CONCURRENCY}
    names = list(measures)
    for number in range(rounds_wanted):
        turn = names[number % len(names) :] + names[: number % len(names)]
        for c in CONCURRENCY:
            for name in turn:
                rounds[name, c].append(measures[name](c))
    return rounds


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def prediction_log_work(folder: Path, names: list[str], row: np.ndarray) -> tuple[float, float]:
    """The log's own work for a single-row request, in microseconds: on the request path (record)
    and in the writer thread (its share of a flush to Parquet). Measured in this process, so free of
    the noise of a loaded server: the A/B of whole servers cannot resolve a cost this small.
    What is in memory is frozen first, as the service does once its model is loaded: the garbage
    collector then walks the log's entries, not this program's data frames and imports."""
    gc.collect()
    gc.freeze()
    log = prediction_log.PredictionLog(
        str(folder / "log"), names, 1, 1.0, flush_seconds=3600, classes=["0", "1"]
    )
    ids = [uuid.uuid4().hex for _ in range(LOG_REQUESTS)]
    features = row.reshape(1, -1)
    probabilities = np.array([[0.1, 0.9]])  # a classifier's answer: rows x classes
    started = time.perf_counter()
    for request_id in ids:
        log.record(request_id, "predict", features, [1], probabilities)
    recorded = time.perf_counter()
    written = log.flush()
    flushed = time.perf_counter()
    log.close()
    assert written == LOG_REQUESTS
    return (recorded - started) * 1e6 / LOG_REQUESTS, (flushed - recorded) * 1e6 / LOG_REQUESTS


def guard_work(body: bytes) -> tuple[float, float]:
    """Microseconds per single-row request in Guard with a token and a rate limit, and
    without either (auth off, no limit): the same requests, in front of an app that only answers,
    in this process's event loop. Their difference is what authentication and the rate limit add
    (the rest of the Guard, request ids and the body limit, runs in both). Blocks of each alternate,
    and the medians are kept, so a change in the machine's speed hits both alike."""
    token = uuid.uuid4().hex

    async def answer_only(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def guard(tokens: list[str] | None, rate_limit: str | None) -> Guard:
        return Guard(
            answer_only, protected={"/predict": "application/json"},
            access=Access(tokens, rate_limit), max_body_bytes=len(body) * 2, model_version=1,
        )  # fmt: skip

    headers = [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {token}".encode()),
    ]  # fmt: skip

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        pass

    async def per_request(app: Guard) -> float:
        started = time.perf_counter()
        for _ in range(GUARD_BLOCK):
            scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers,
                     "client": ("127.0.0.1", 50000)}  # fmt: skip
            await app(scope, receive, send)
            # What the Guard scheduled (the limiter's expiry) runs now, as between a server's requests.
            await asyncio.sleep(0)
        return (time.perf_counter() - started) * 1e6 / GUARD_BLOCK

    async def alternate() -> tuple[list[float], list[float]]:
        protected = guard([token], LIMIT_NEVER_REACHED["rate_limit"])
        open_ = guard(None, None)
        on, off = [], []
        for _ in range(GUARD_BLOCKS):
            on.append(await per_request(protected))
            off.append(await per_request(open_))
        return on, off

    gc.collect()
    gc.freeze()
    on, off = asyncio.run(alternate())
    return median(on), median(off)


def profile_check_work(features: pd.DataFrame) -> float:
    """Microseconds per single-row request in the out-of-profile check (ProfileCheck on
    the data's profile, as the service runs it), the input check the protections add to the typed
    schema's; the median of GUARD_BLOCKS blocks."""
    # As training profiles a pipeline that imputes gaps (params.yaml's model.impute: median).
    check = ProfileCheck(list(features.columns), feature_profile(features, numbers_nullable=True))
    row = features.to_numpy(dtype=np.float64)[:1]
    blocks = []
    for _ in range(GUARD_BLOCKS):
        started = time.perf_counter()
        for _ in range(GUARD_BLOCK):
            check.outside(row)
        blocks.append((time.perf_counter() - started) * 1e6 / GUARD_BLOCK)
    return median(blocks)


# The two scoring loops run in fresh interpreters, so each one's peak memory is its own (VmHWM: the
# high-water mark of this program's memory; ru_maxrss would carry over the harness's from the fork).
BATCH_COMMAND = """
import re, sys, time, warnings
warnings.simplefilter("ignore")
import joblib
from {{ cookiecutter.package }}.batch import chunked
model = joblib.load(sys.argv[1])
features = [str(name) for name in model.feature_names_in_]
chunked.use_compact_memory_pool()  # as the command does
started = time.perf_counter()
summary = chunked.score_file(model, features, 1, sys.argv[2], sys.argv[3], int(sys.argv[4]))
seconds = time.perf_counter() - started
peak_kb = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print(summary["rows"], seconds, peak_kb)
"""
PLAIN_LOOP = """
import re, sys, time, warnings
warnings.simplefilter("ignore")
import joblib, pandas as pd
model = joblib.load(sys.argv[1])
features = [str(name) for name in model.feature_names_in_]
started, rows = time.perf_counter(), 0
for chunk in pd.read_csv(sys.argv[2], chunksize=int(sys.argv[4])):
    model.predict(chunk[features])
    rows += len(chunk)
seconds = time.perf_counter() - started
peak_kb = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print(rows, seconds, peak_kb)
"""


def big_csv(frame: pd.DataFrame, path: Path, rows: int) -> None:
    """`rows` rows resampled from the data set, written in pieces so this process stays small."""
    piece = frame.sample(n=100_000, replace=True, random_state=0)
    with path.open("w") as output:
        for start in range(0, rows, len(piece)):
            piece.head(rows - start).to_csv(output, header=start == 0, index=False)


# The whole command, in a child of a script this small: the child's peak (ru_maxrss of the one child
# waited for) is its own, but for the few MB it inherits at the fork.
WHOLE_COMMAND = """
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


# The Spark engine in a fresh interpreter: the session is started before the clock, as a cluster's
# is; the model comes from the scratch registry through the one loader, as the command gets it.
SPARK_ENGINE = """
import sys, tempfile, time, warnings
warnings.simplefilter("ignore")
from mlflow.tracking import MlflowClient
from {{ cookiecutter.package }} import registry
from {{ cookiecutter.package }}.batch import spark
from {{ cookiecutter.package }}.profile import categorical_features
name, version, source, output = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with tempfile.TemporaryDirectory() as folder:
    verified = registry.download_verified(MlflowClient(), name, version, folder)
    categorical = categorical_features(registry.feature_profile(name, version))
    session = spark.start_session("local[*]", {})
    started = time.perf_counter()
    summary = spark.score_file(session, verified, version, categorical, source, output)
    print(summary["rows"], time.perf_counter() - started)
"""


def process_tree_peaks(command: list[str], environment: dict[str, str]) -> tuple[list[str], dict]:
    """Run `command`; its output's words, and the high-water mark (VmHWM) in MB of each kind of its
    processes (the Python driver, the JVM, the Python workers), each process's read every 0.2 s
    until it ends and summed per kind: an upper bound of their peak together. On failure, the end
    of its error output is in the exception."""
    # Files, not pipes: nothing reads while it runs, and Spark's log would fill a pipe.
    with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, stdout=output, stderr=errors, text=True, cwd=PROJECT,
            env={**os.environ, **environment},
        )  # fmt: skip
        peaks: dict[int, tuple[str, int]] = {}
        while process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
                for member in family:
                    with contextlib.suppress(OSError, IndexError, psutil.Error):  # ended, a zombie
                        status = Path(f"/proc/{member.pid}/status").read_text()
                        peak_kb = int(status.split("VmHWM:")[1].split()[0])
                        kind = "JVM" if "java" in member.name() else "Python workers"
                        kind = "Python driver" if member.pid == process.pid else kind
                        peaks[member.pid] = (kind, max(peak_kb, peaks.get(member.pid, ("", 0))[1]))
            time.sleep(0.2)
        output.seek(0)
        errors.seek(0)
        if process.returncode:
            last_lines = "\n".join(errors.read().splitlines()[-40:])
            raise RuntimeError(f"{command[:3]} exited {process.returncode}:\n{last_lines}")
        words = output.read().split()
    kinds: dict[str, float] = {}
    for kind, peak_kb in peaks.values():
        kinds[kind] = kinds.get(kind, 0) + peak_kb / 1024
    return words, kinds


def spark_engine_row(folder: Path, label: str, version: int, source: Path, plain: float) -> list:
    """The Spark engine on `local[*]` scoring the same file, for the batch table (a note when pyspark
    or Java is missing: `make test-spark` installs the extra)."""
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        return [label, "spark engine: not run (needs the spark extra and Java 17)", "-", "-", "-", "-"]  # fmt: skip
    name = load_settings(folder / label / "params.yaml").params.registry.model_name
    output = folder / "spark-predictions.parquet"
    command = [sys.executable, "-c", SPARK_ENGINE, name, str(version), str(source), str(output)]
    words, kinds = process_tree_peaks(command, own_store(folder / label))
    count, seconds = int(words[-2]), float(words[-1])
    parts = ", ".join(f"{kind} {megabytes:,.0f}" for kind, megabytes in kinds.items())
    return [
        label, f"spark engine, local[*] (score_file; peak MB: {parts})", fmt(count),
        fmt(count / seconds), ratio(count / seconds, plain), fmt(sum(kinds.values())),
    ]  # fmt: skip


def python_script(code: str, *args: object, environment: dict[str, str] | None = None) -> list[str]:
    """The words `code` prints, run in a fresh interpreter from the project folder."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True,
        cwd=PROJECT, env={**os.environ, **(environment or {})},
    ).stdout.split()  # fmt: skip


def batch_command_rows(
    folder: Path, frame: pd.DataFrame, chunk_rows: int, versions: dict[str, int]
) -> list[list]:
    """The batch command's loop (batch.score_file, staged Parquet output) against the plain loop,
    then the whole command (imports, registry, model load) for its peak memory, then the Spark
    engine on the same file."""
    source = folder / "big.csv"
    big_csv(frame, source, BATCH_FILE_ROWS)
    rows = []
    for label in MODELS:
        model_path = folder / f"{label}.joblib"
        output = folder / "predictions.parquet"
        measured = {}
        for name, code in (("plain read_csv + predict", PLAIN_LOOP), ("batch command (score_file)", BATCH_COMMAND)):  # fmt: skip
            answer = python_script(code, model_path, source, output, chunk_rows)
            count, seconds, peak_kb = int(answer[0]), float(answer[1]), int(answer[2])
            measured[name] = count / seconds
            rows.append([
                label, name, fmt(count), fmt(count / seconds),
                ratio(count / seconds, measured["plain read_csv + predict"]), fmt(peak_kb / 1024),
            ])  # fmt: skip
        command = [
            sys.executable, "-m", "{{ cookiecutter.package }}.cli", "--params", str(folder / label / "params.yaml"),
            "batch", "--version", str(versions[label]), "--input", str(source), "--output", str(output),
        ]  # fmt: skip
        answer = python_script(WHOLE_COMMAND, *command, environment=own_store(folder / label))
        seconds, peak_kb = float(answer[0]), int(answer[1])
        rows.append([label, f"`batch` command, start to end ({seconds:.1f} s)", fmt(BATCH_FILE_ROWS), fmt(BATCH_FILE_ROWS / seconds), "-", fmt(peak_kb / 1024)])  # fmt: skip
        plain = measured["plain read_csv + predict"]
        rows.append(spark_engine_row(folder, label, versions[label], source, plain))
    return rows


def main() -> None:
    require("wrk", "wrk")
    started = time.monotonic()
    notes: list[str] = []
    single: list[list] = []
    batch: list[list] = []
    one_worker: dict[tuple[str, str, int], list[Load]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        # Bentos and stored models go to the scratch folder too, whatever BENTOML_HOME says outside.
        os.environ["BENTOML_HOME"] = str(folder / "bentoml")
        # "protections off" serves without authentication on purpose: under CI or in a container
        # the service refuses that unless told it is meant (auth_off); its servers inherit this.
        os.environ[OVERRIDE_VARIABLE] = "1"
        settings = scratch_settings(folder, {}, {})
        frame = data.training_table(settings)
        features, _ = data.split_features_target(frame, settings.params.data)
        records = as_records(features.sample(n=BATCH_ROWS, replace=True, random_state=0))
        # The in-process measurements first: seconds, and a mistake shows before the servers' minutes.
        names = list(features.columns)
        record_us, write_us = prediction_log_work(folder, names, features.to_numpy()[0])
        guarded_us, open_us = guard_work(json.dumps(records[0]).encode())
        profile_us = profile_check_work(features)
        versions: dict[str, int] = {}
        for label in MODELS:
            model_folder = folder / label
            model_folder.mkdir()
            model_single, model_batch, versions[label] = serve_model(
                label, model_folder, frame, records, notes, one_worker
            )
            single += model_single
            batch += model_batch
            shutil.copy(model_folder / BASELINE_MODEL, folder / f"{label}.joblib")
        command_rows = batch_command_rows(
            folder, features, settings.params.batch.chunk_rows, versions
        )
    print(f"Serving on {os.cpu_count()} CPUs, wrk -t1 on 127.0.0.1, {SECONDS} s per measurement after a {WARMUP_SECONDS} s warm-up")  # fmt: skip
    print(f"Single-row POST /predict, medians of {ROUNDS} interleaved rounds (latency percentiles as wrk reports them)\n")  # fmt: skip
    header = ["model", "server", "workers", "concurrency", "req/s", "vs baseline", "p50 ms", "p99 ms", "errors", "server MB"]  # fmt: skip
    print(markdown_table(header, single))
    print(f"\nWhat the protections and the prediction log cost, one worker: requests/s lost, server CPU per request added; median of the {ROUNDS} rounds (lowest..highest)\n")  # fmt: skip
    print(markdown_table(["model", "concurrency", "protections: req/s", "protections: CPU/request", "prediction log: req/s", "prediction log: CPU/request"], [
        [label, c,
         *cost(one_worker[label, "BentoML protections on", c], one_worker[label, "BentoML protections off", c]),
         *cost(one_worker[label, "BentoML protections on", c], one_worker[label, "BentoML prediction log off", c])]
        for label in MODELS for c in CONCURRENCY
    ]))  # fmt: skip
    server_us = {
        (label, c): typical(one_worker[label, "BentoML protections on", c]).cpu_ms_per_request
        * 1000
        for label in MODELS
        for c in CONCURRENCY
    }

    def shares(work_us: float) -> str:
        """`work_us` as a share of the server's CPU time per request, per model and concurrency."""
        return markdown_table(["model", *(f"c={c}" for c in CONCURRENCY)], [
            [label, *(f"{work_us / server_us[label, c] * 100:.1f}% of {server_us[label, c]:,.0f} µs" for c in CONCURRENCY)]
            for label in MODELS
        ])  # fmt: skip

    print(f"\nThe prediction log's own work per single-row request, {LOG_REQUESTS:,} requests in this process: {record_us:.1f} µs on the request path, {write_us:.1f} µs in the writer thread; as a share of the server's CPU time per request (protections on, one worker)\n")  # fmt: skip
    print(shares(record_us + write_us))
    print(f"\nWhat the protections add to a single-row request by their own work, in this process: authentication and the rate limit {guarded_us - open_us:.1f} µs in Guard ({guarded_us:.1f} with them, {open_us:.1f} without; {GUARD_BLOCKS} alternating blocks of {GUARD_BLOCK:,} requests), the out-of-profile check {profile_us:.1f} µs (ProfileCheck); together {guarded_us - open_us + profile_us:.1f} µs, as a share of the server's CPU time per request (protections on, one worker)\n")  # fmt: skip
    print(shares(guarded_us - open_us + profile_us))
    print(f"\nBatch endpoint, {BATCH_ROWS} rows per request\n")
    print(markdown_table(["model", "path", "rows/s", "vs in-process"], batch))
    print(f"\nScoring a {BATCH_FILE_ROWS:,}-row CSV in chunks of {settings.params.batch.chunk_rows:,} rows, model loaded\n")  # fmt: skip
    print(markdown_table(["model", "loop", "rows", "rows/s", "vs plain", "peak MB"], command_rows))
    for note in notes:
        print(f"- {note}")
    print(f"\n{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
