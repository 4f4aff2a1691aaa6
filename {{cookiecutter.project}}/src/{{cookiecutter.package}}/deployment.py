"""Package a registered model as a BentoML bento, run it, and smoke-test a running server.

`build` turns one registry version into a bento (model, package source, pinned runtime packages),
`serve` runs a bento as a subprocess until it is ready (or fails with the server's own log),
`serve_command` is the same server in the foreground, and `smoke` checks a running server against the
registry: right version, malformed input refused with a 4xx, and the same predictions as the registered
model itself. The BentoML home (model and bento stores) is $BENTOML_HOME, else `<project>/.bentoml`.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
from mlflow.exceptions import MlflowException

from . import data, integrity, prediction_log, registry
from .errors import DeploymentError, SecurityError
from .reports import markdown_table
from .serving import arrow, guard
from .settings import ServiceArgs, Settings

SERVICE_MODULE = f"{__package__}.serving.service"
SERVICE = f"{SERVICE_MODULE}:ModelService"
# What the service imports at run time, pinned to the versions that trained and tested the model.
# mlflow-skinny, not mlflow: the server only loads a model, and the full package adds a web UI stack.
RUNTIME_PACKAGES = (
    "bentoml",
    "mlflow-skinny",
    "scikit-learn",
    "skops",
    "pandas",
    "numpy",
    "scipy",
    "pydantic",
    "pyyaml",
    "limits",
    "pyarrow",
    "boto3",
)
SMOKE_ROWS = 20
LOG_TAIL_LINES = 30
# Set to a fresh id in the environment of each server `serve` starts; its workers inherit it, so
# `Server.stop` finds them even when they are no longer the server's children.
LAUNCH_VARIABLE = "SERVICE_LAUNCH_ID"


@contextlib.contextmanager
def _bentoml_stores(home: Path) -> Iterator[None]:
    """Point BentoML's model and bento stores at `home` for the duration of the block.

    BentoML reads BENTOML_HOME once per process and caches its stores, so setting the variable is too
    late once anything touched them, and one process that builds for two projects (the tests) would
    write both into the first. Patching the providers scopes the stores to this call instead.
    """
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer as container
    from bentoml._internal.models import ModelStore

    folders = {name: home / name for name in ("bentos", "models", "tmp", "envs")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    overrides = [
        (container.bentoml_home, str(home)),
        (container.bento_store_dir, str(folders["bentos"])),
        (container.model_store_dir, str(folders["models"])),
        (container.tmp_bento_store_dir, str(folders["tmp"])),
        (container.env_store_dir, str(folders["envs"])),
        (container.bento_store, BentoStore(str(folders["bentos"]))),
        (container.tmp_bento_store, BentoStore(str(folders["tmp"]))),
        (container.model_store, ModelStore(str(folders["models"]))),
        (container.bento_arguments, {}),  # build() sets them process-wide; restore on the way out
    ]
    with contextlib.ExitStack() as stack:
        for provider, value in overrides:
            stack.enter_context(provider.patch(value))
        yield


# The container's base image, one FROM line that Dependabot keeps current (pin it by digest).
BASE_IMAGE_FILE = "deploy/docker/Dockerfile"


def docker_options(settings: Settings) -> dict[str, str]:
    """BentoML's Docker options: the base image from BASE_IMAGE_FILE when the project has one."""
    path = settings.project_dir / BASE_IMAGE_FILE
    if not path.is_file():
        return {}
    images = [
        line.split()[1]
        for line in path.read_text().splitlines()
        if line.strip().upper().startswith("FROM ") and len(line.split()) > 1
    ]
    if len(images) != 1:
        raise DeploymentError(f"{path}: expected exactly one FROM line, found {len(images)}")
    return {"base_image": images[0]}


def runtime_requirements() -> list[str]:
    """The service's runtime packages, pinned to the versions installed here."""
    return [f"{name}=={installed_version(name)}" for name in RUNTIME_PACKAGES]


def _package_copy(destination: Path) -> None:
    """The package source, without caches: the bento's code is what runs here, not a repo checkout."""
    source = Path(__file__).resolve().parent
    shutil.copytree(
        source, destination / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


def build(settings: Settings, version: int) -> str:
    """Import registered `version` into the BentoML model store and build its bento; return the tag.

    The service learns which stored model to serve from the bento arguments, and what it is (name,
    version, task) from labels on the stored model, so the bento runs without params.yaml.
    """
    import bentoml
    import bentoml.mlflow

    params = settings.params
    name = params.registry.model_name
    uri = registry.model_uri(settings, version)
    registry.configure(settings)
    try:
        digest = registry.recorded_digest(settings, version)
    except MlflowException as error:
        raise DeploymentError(f"cannot read {uri} from the registry: {error}") from error
    labels = {
        "registered_model": name,
        "registered_version": str(version),
        "task": params.task,
        integrity.DIGEST_TAG: digest or "",
    }
    with _bentoml_stores(settings.bentoml_home), tempfile.TemporaryDirectory() as context:
        try:
            stored = bentoml.mlflow.import_model(name.lower(), uri, labels=labels)
        except Exception as error:
            raise DeploymentError(f"cannot import {uri} into the BentoML store: {error}") from error
        try:
            integrity.verify_artifacts(stored.path_of(integrity.MLFLOW_MODEL_FOLDER), digest, uri)
        except SecurityError as error:
            bentoml.models.delete(stored.tag)
            raise DeploymentError(str(error)) from None
        _package_copy(Path(context))
        # The service reads its model at import; a module cached from an earlier build in this
        # process would pack that build's model instead.
        sys.modules.pop(SERVICE_MODULE, None)
        try:
            bento = bentoml.build(
                SERVICE,
                name=name.lower(),
                build_ctx=context,
                description=f"{name} v{version} ({params.task}) from {uri}",
                labels={"model_name": name, "model_version": str(version), "task": params.task},
                args=ServiceArgs.for_model(params, str(stored.tag)).model_dump(mode="json"),
                python={"packages": runtime_requirements(), "lock_packages": False},
                docker=docker_options(settings),
            )
        except Exception as error:
            raise DeploymentError(f"bento build for {uri} failed: {error}") from error
        finally:
            sys.modules.pop(SERVICE_MODULE, None)
    return str(bento.tag)


def serve_command(bento_tag: str, host: str, port: int) -> list[str]:
    """`bentoml serve` for a bento, with this interpreter's bentoml (run it in `server_environment`)."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        bento_tag,
        "--host",
        host,
        "--port",
        str(port),
    ]


def server_environment(settings: Settings, home: Path | None = None) -> dict[str, str]:
    """This environment plus what a local server needs: the project's stores (or `home`), tokens,
    and the project's prediction log folder.

    Without $SERVICE_API_TOKENS or $SERVICE_API_TOKENS_FILE, the server accepts this machine's
    client token (`Settings.api_token`), so local servers are protected like deployed ones.
    """
    env = {**os.environ, "BENTOML_HOME": str(home or settings.bentoml_home)}
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")  # no usage reports from CI and test runs
    # As in the container: a worker that cannot start (no token, changed model files) ends the
    # server instead of being respawned forever.
    env.setdefault("BENTOML_CONTAINERIZED", "true")
    if not (env.get(guard.TOKENS_VARIABLE) or env.get(guard.TOKENS_FILE_VARIABLE)):
        env[guard.TOKENS_VARIABLE] = settings.api_token()
    # A relative log location in the bento would land wherever the server runs: point it here.
    env.setdefault(
        prediction_log.LOCATION_VARIABLE,
        settings.resolve(settings.params.monitoring.prediction_log),
    )
    return env


# Ports handed out by free_port, each held by a bound (not listening) socket for the life of this
# process: another process's free_port cannot take it, while our own server, which binds with
# SO_REUSEADDR as BentoML, uvicorn and nginx all do, still can.
_RESERVED_PORTS: dict[int, socket.socket] = {}
_ISSUING = threading.Lock()
# Listening ports are picked below the range the kernel hands out to outgoing connections: a port
# from that range can be taken by any client connection (a readiness poll, say) between the moment
# it is found free and the moment a slow-starting server binds it.
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_PORTS = range(20_000, 32_768)


def _listen_ports() -> range:
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LISTEN_PORTS
    return range(min(LISTEN_PORTS.start, low - 1_000), low) if low > 2_000 else LISTEN_PORTS


def _bind(host: str, port: int, *, reuse: bool) -> socket.socket:
    sock = socket.socket()
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing uses, outside the kernel's ephemeral range, reserved for this process.

    Parallel test workers and servers started at the same time each pick ports; the reservation
    keeps two of them from being handed the same one between the pick and the server's bind.
    """
    ports = _listen_ports()
    with _ISSUING:
        for port in random.sample(ports, len(ports)):
            if port in _RESERVED_PORTS:
                continue
            try:
                # A plain bind is refused if anyone holds the port, reserved or listening.
                _bind(host, port, reuse=False).close()
                _RESERVED_PORTS[port] = _bind(host, port, reuse=True)
            except OSError:
                continue
            return port
    raise DeploymentError(f"no free port on {host} in {ports.start}-{ports.stop - 1}")


def _ensure_free(host: str, port: int) -> None:
    """Refuse a taken port up front: another server there could answer our readiness checks."""
    try:
        # A port we reserved is bound by us; only a listener (or a foreign bind) makes it taken.
        _bind(host, port, reuse=port in _RESERVED_PORTS).close()
    except OSError as error:
        raise DeploymentError(f"cannot serve on {host}:{port}: {error.strerror}") from None


# The last line of a Python traceback: `package.module.SomeError: message`.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")


@dataclass
class Server:
    """A `bentoml serve` subprocess; a context manager that stops it on exit."""

    bento_tag: str
    url: str
    process: subprocess.Popen
    log_path: Path
    started: float  # time.monotonic() when the process was started
    launch_id: str = ""  # $SERVICE_LAUNCH_ID of the server and every process it started
    ready_seconds: float | None = None
    stopped: bool = False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        with contextlib.suppress(OSError), self.log_path.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip()
        return ""

    def first_error(self) -> str:
        """': <the first exception the log names>', or '': the cause, before the arbiter's noise."""
        with contextlib.suppress(OSError), self.log_path.open(errors="replace") as log:
            for line in log:
                if _EXCEPTION_LINE.match(line):
                    return f": {line.strip()}"
        return ""

    def wait_ready(self, timeout: float) -> None:
        """Poll /readyz until it answers 200; raise DeploymentError if the process dies or times out."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DeploymentError(
                    f"`bentoml serve {self.bento_tag}` exited with code {self.process.returncode} "
                    f"before it was ready{self.first_error()}. Last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started
                    return
            time.sleep(0.25)
        self.stop()
        raise DeploymentError(
            f"`bentoml serve {self.bento_tag}` was not ready after {timeout:g} s "
            f"(serving.ready_timeout_seconds). Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15) -> None:
        """Stop the server and every process it started.

        SIGTERM lets BentoML shut its workers down. The workers run in sessions of their own, so a
        signal to the server's process group would miss them: whatever survives the server is
        terminated, then killed. Survivors are the server's children as they were before the signal,
        plus every process carrying its launch id: a worker spawned while the server shut down, or
        orphaned by a server that was killed, is no longer anyone's child.
        """
        if self.stopped:
            return
        try:
            family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        family = list({*family, *self._launched()})
        for leftover in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.terminate()
        _, alive = psutil.wait_procs(family, timeout=5)
        for leftover in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        self.stopped = True

    def _launched(self) -> list[psutil.Process]:
        """The processes whose environment carries this server's launch id."""
        if not self.launch_id:
            return []
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.environ().get(LAUNCH_VARIABLE) == self.launch_id:
                    found.append(process)
        return found

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _server_home(settings: Settings, port: int) -> Path:
    """A BentoML home for the server on `port`, sharing the project's bento and model stores.

    BentoML empties `<home>/prometheus_multiproc_dir` whenever a server starts: two servers on one
    home (a local rollout's champion and candidate) would wipe and then mix each other's metrics.
    """
    shared = settings.bentoml_home
    home = settings.project_dir / ".runtime" / f"bentoml-{port}"
    home.mkdir(parents=True, exist_ok=True)
    for store in ("bentos", "models"):
        (shared / store).mkdir(parents=True, exist_ok=True)
        link = home / store
        if link.is_symlink() and link.resolve() != (shared / store).resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(shared / store, target_is_directory=True)
    return home


def serve(settings: Settings, bento_tag: str, port: int | None = None) -> Server:
    """Start `bentoml serve <bento_tag>` on 127.0.0.1 and return once it is ready.

    Raises DeploymentError, with the end of the server's log, if the port is taken, the process exits,
    or /readyz does not answer within serving.ready_timeout_seconds. The log is kept at
    `<reports>/serve-<port>.log`.
    """
    host = "127.0.0.1"
    if port is None:
        port = free_port(host)
    _ensure_free(host, port)
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.reports_dir / f"serve-{port}.log"
    launch_id = uuid.uuid4().hex
    env = server_environment(settings, home=_server_home(settings, port))
    env[LAUNCH_VARIABLE] = launch_id
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(bento_tag, host, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server = Server(bento_tag, f"http://{host}:{port}", process, log_path, started, launch_id)
    try:
        server.wait_ready(settings.params.serving.ready_timeout_seconds)
    except BaseException:
        server.stop()
        raise
    return server


def sample_rows(settings: Settings, rows: int = SMOKE_ROWS) -> pd.DataFrame:
    """A fixed sample of the project's feature rows (the target dropped), the same on every run."""
    frame = data.read_table(settings.resolve(settings.params.data.source))
    features, _ = data.split_features_target(frame, settings.params.data.target)
    return features.sample(n=min(rows, len(features)), random_state=0)


def as_records(rows: pd.DataFrame) -> list[dict[str, float]]:
    """Rows as JSON-ready dicts of plain floats (full precision, unlike DataFrame.to_json)."""
    return [
        {str(column): float(value) for column, value in zip(rows.columns, values, strict=True)}
        for values in rows.itertuples(index=False)
    ]


def as_table(rows: pd.DataFrame) -> dict[str, list]:
    """Rows as the body of /predict_columns: column names once, then rows of plain floats.

    What `rows.to_json(orient="split", index=False)` writes, at full precision (to_json rounds to
    10 significant digits unless given double_precision=15).
    """
    return {
        "columns": [str(column) for column in rows.columns],
        "data": rows.to_numpy(dtype=np.float64).tolist(),
    }


def as_arrow(rows: pd.DataFrame) -> bytes:
    """Rows as the body of /predict_arrow (media type arrow.ARROW_STREAM): an Arrow IPC stream of
    their columns, with the types they have."""
    import pyarrow as pa

    table = pa.Table.from_pandas(rows, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue().to_pybytes()


def _compare(task: str, served: list, expected: np.ndarray) -> tuple[bool, str]:
    """Exact for labels; np.allclose for regression, whose floats went through JSON."""
    served_array = np.asarray(served)
    if served_array.shape != expected.shape:
        return False, f"{len(served)} predictions for {len(expected)} rows"
    if task == "classification":
        different = np.flatnonzero(served_array != expected)
    else:
        close = np.isclose(served_array.astype(float), expected.astype(float))
        different = np.flatnonzero(~close)
    if different.size == 0:
        return (
            True,
            f"{len(expected)} of {len(expected)} rows equal the registry model's predictions",
        )
    first = different[0]
    return False, (
        f"{different.size} of {len(expected)} rows differ from the registry model; first: row "
        f"{first} served {served_array[first]!r}, registry {expected[first]!r}"
    )


def smoke(settings: Settings, url: str, version: int) -> dict[str, Any]:
    """Check a running server against registered `version`; every check runs, none raises.

    Checks: ready; a request without a token is refused (unless serving.require_auth is false);
    metadata names the expected model and version; a row with a missing feature and one
    with a non-number are refused with a 4xx naming the feature (a 5xx means the server broke); `predict`
    row by row, `predict_batch`, `predict_columns` and `predict_arrow` on SMOKE_ROWS data rows equal `registry.load_model(...).predict`;
    every answer carries the expected version.
    """
    url = url.rstrip("/")
    task, name = settings.params.task, settings.params.registry.model_name
    rows = sample_rows(settings)
    records = as_records(rows)
    try:
        expected = np.asarray(registry.load_model(settings, version).predict(rows))
    except MlflowException as error:
        raise DeploymentError(f"cannot load v{version} from the registry: {error}") from error
    feature = str(rows.columns[0])
    versions: list[Any] = []
    checks: list[dict[str, Any]] = []

    def check(http: httpx.Client, name_: str, run: Callable[[httpx.Client], tuple[bool, str]]):
        try:
            passed, detail = run(http)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            passed, detail = False, f"{type(error).__name__}: {error}"
        checks.append({"name": name_, "passed": bool(passed), "detail": detail})

    def ready(http: httpx.Client) -> tuple[bool, str]:
        status = http.get("/readyz").status_code
        return status == 200, f"/readyz answered HTTP {status}"

    def metadata(http: httpx.Client) -> tuple[bool, str]:
        answer = http.post("/metadata", json={}).raise_for_status().json()
        served = f"{answer['model_name']} v{answer['model_version']}"
        return (answer["model_name"], answer["model_version"]) == (name, version), (
            f"serves {served}, expected {name} v{version}"
        )

    def refused(body: dict[str, Any], what: str) -> Callable[[httpx.Client], tuple[bool, str]]:
        def run(http: httpx.Client) -> tuple[bool, str]:
            answer = http.post("/predict", json=body)
            named = feature in answer.text
            passed = 400 <= answer.status_code < 500 and named
            return passed, f"{what}: HTTP {answer.status_code}" + (
                "" if named else f", body does not name {feature!r}"
            )

        return run

    def predict(http: httpx.Client) -> tuple[bool, str]:
        answers = [
            http.post("/predict", json=record).raise_for_status().json() for record in records
        ]
        versions.extend(answer["model_version"] for answer in answers)
        return _compare(task, [answer["prediction"] for answer in answers], expected)

    def predict_batch(http: httpx.Client) -> tuple[bool, str]:
        batch = records[: settings.params.serving.max_batch_rows]
        answer = http.post("/predict_batch", json={"rows": batch}).raise_for_status().json()
        versions.append(answer["model_version"])
        return _compare(task, answer["predictions"], expected[: len(batch)])

    def predict_columns(http: httpx.Client) -> tuple[bool, str]:
        table = as_table(rows.head(settings.params.serving.max_batch_rows))
        answer = http.post("/predict_columns", json=table).raise_for_status().json()
        versions.append(answer["model_version"])
        return _compare(task, answer["predictions"], expected[: len(table["data"])])

    def predict_arrow(http: httpx.Client) -> tuple[bool, str]:
        table = rows.head(settings.params.serving.max_batch_rows)
        media_type = {"Content-Type": arrow.ARROW_STREAM}
        answer = http.post("/predict_arrow", content=as_arrow(table), headers=media_type)
        versions.append(answer.raise_for_status().json()["model_version"])
        return _compare(task, answer.json()["predictions"], expected[: len(table)])

    def carries_version(http: httpx.Client) -> tuple[bool, str]:
        wrong = [served for served in versions if served != version]
        if not versions or wrong:
            return (
                False,
                f"{len(wrong)} of {len(versions)} answers name another version: {wrong[:3]}",
            )
        return True, f"all {len(versions)} prediction answers carry model_version {version}"

    def refuses_anonymous(http: httpx.Client) -> tuple[bool, str]:
        status = httpx.post(f"{url}/predict", json=records[0], timeout=30).status_code
        return status == 401, f"a request without a token: HTTP {status}"

    missing = {key: value for key, value in records[0].items() if key != feature}
    wrong_type = {**records[0], feature: "not-a-number"}
    with httpx.Client(base_url=url, timeout=30, headers=settings.client_headers()) as http:
        check(http, "ready", ready)
        if settings.params.serving.require_auth:
            check(http, "refuses_without_token", refuses_anonymous)
        check(http, "metadata_version", metadata)
        check(http, "rejects_missing_feature", refused(missing, f"row without {feature!r}"))
        check(http, "rejects_wrong_type", refused(wrong_type, f"{feature!r} as a string"))
        check(http, "predict_matches_registry", predict)
        check(http, "predict_batch_matches_registry", predict_batch)
        check(http, "predict_columns_matches_registry", predict_columns)
        check(http, "predict_arrow_matches_registry", predict_arrow)
        check(http, "responses_carry_version", carries_version)
    return {
        "passed": all(item["passed"] for item in checks),
        "url": url,
        "version": version,
        "model_name": name,
        "rows": len(records),
        "checks": checks,
    }


def smoke_markdown(report: dict[str, Any]) -> str:
    """The smoke report for people (a pull request comment or a job summary)."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    rows = [
        [item["name"], "pass" if item["passed"] else "**FAIL**", item["detail"].replace("|", "\\|")]
        for item in report["checks"]
    ]
    return "\n".join(
        [
            f"## Smoke test: **{verdict}**",
            "",
            f"Server {report['url']}, expected model v{report['version']}.",
            "",
            markdown_table(["check", "result", "detail"], rows),
        ]
    )


def export_bento(settings: Settings, bento_tag: str, path: Path | str) -> str:
    """Write a bento, with the models it serves, to one archive file: the artifact CI moves between
    jobs, and (unpacked) a Docker build context with its Dockerfile at `env/docker/Dockerfile`."""
    import bentoml

    path = Path(path).resolve()  # bentoml reads a relative path as relative to the filesystem root
    path.parent.mkdir(parents=True, exist_ok=True)
    with _bentoml_stores(settings.bentoml_home):
        try:
            return bentoml.export_bento(bento_tag, str(path))
        except Exception as error:
            raise DeploymentError(f"cannot export bento {bento_tag} to {path}: {error}") from error


def import_bento(settings: Settings, path: Path | str) -> tuple[str, int]:
    """Import an archive written by `export_bento` (a no-op when the store already holds that bento);
    return its tag and the model version it serves."""
    import bentoml
    import yaml

    path = Path(path).resolve()
    try:
        with tarfile.open(path) as archive:
            names = {name.removeprefix("./"): name for name in archive.getnames()}
            with archive.extractfile(names["bento.yaml"]) as info:
                described = yaml.safe_load(info)
        tag = f"{described['name']}:{described['version']}"
    except (OSError, KeyError, TypeError, tarfile.TarError, yaml.YAMLError) as error:
        raise DeploymentError(f"{path} is not a bento archive: {error}") from error
    with _bentoml_stores(settings.bentoml_home):
        try:
            bento = bentoml.get(tag)
        except bentoml.exceptions.NotFound:
            try:
                bento = bentoml.import_bento(str(path))
            except Exception as error:
                raise DeploymentError(f"cannot import a bento from {path}: {error}") from error
        return str(bento.tag), int(bento.info.labels["model_version"])
