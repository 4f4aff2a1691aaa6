"""Run a bento: free ports, the `bentoml serve` process and the environment it runs in.

`serve` runs a bento as a subprocess until it is ready (or fails with the server's own log), and
`serve_command` is the same server in the foreground. Local servers are protected like deployed ones
(the machine's client token) and log predictions into the project.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
{% if cookiecutter.feature_store == "feast" %}
from .. import feature_store, prediction_log
{%- else %}
from .. import prediction_log
{%- endif %}
from ..errors import DeploymentError
from ..serving import guard
{%- if cookiecutter.feature_store == "feast" %}
from ..serving.entities import REPO_VARIABLE
{%- endif %}
from ..serving.grpc import ADDRESS_VARIABLE as GRPC_ADDRESS_VARIABLE
from ..settings import Settings

LOG_TAIL_LINES = 30
# Set to a fresh id in the environment of each server `serve` starts; its workers inherit it, so
# `Server.stop` finds them even when they are no longer the server's children.
LAUNCH_VARIABLE = "SERVICE_LAUNCH_ID"


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
    """This process's environment, which a server inherits, plus what a local server needs: the
    project's stores (or `home`), the tokens it accepts, where it logs predictions and where its
    gRPC listens (serving.host, as HTTP; a container listens on every interface).

    Without $SERVICE_API_TOKENS or $SERVICE_API_TOKENS_FILE, the server accepts this machine's
    client token (`Settings.api_token`), so local servers are protected like deployed ones.
    """
    env = {**os.environ, "BENTOML_HOME": str(home or settings.bentoml_home)}
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")  # no usage reports from CI and test runs
    # As in the container: a worker that cannot start (no token, changed model files) ends the
    # server instead of being respawned forever.
    env.setdefault("BENTOML_CONTAINERIZED", "true")
    given = settings.env
    if given.service_tokens_file and not given.service_tokens:
        env[guard.TOKENS_FILE_VARIABLE] = given.service_tokens_file
    else:
        env[guard.TOKENS_VARIABLE] = given.service_tokens or settings.api_token()
    # A relative log location in the bento would land wherever the server runs: point it here.
    env[prediction_log.LOCATION_VARIABLE] = given.prediction_log or settings.resolve(
        settings.params.monitoring.prediction_log
    )
    grpc_port = settings.params.serving.grpc_port
    if grpc_port is not None:
        env[GRPC_ADDRESS_VARIABLE] = f"{settings.params.serving.host}:{grpc_port}"
{%- if cookiecutter.feature_store == "feast" %}
    # The bento names the feature repository of the machine that built it; a server started here
    # reads this project's (a CI job's checkout is not the build job's).
    if settings.params.feature_store is not None:
        env.setdefault(REPO_VARIABLE, str(feature_store.repo_of(settings)))
{%- endif %}
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
    grpc_address: str | None = None  # host:port of its gRPC server (serving.grpc_port), if any
    stopped: bool = False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        with contextlib.suppress(OSError), self.log_path.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip()
        return ""

    def log_quote(self) -> str:
        """The log's last lines, to quote in an error; or that it has none yet (a slow start)."""
        tail = self.log_tail()
        if not tail:
            return f"{self.log_path} is still empty: the server had written nothing yet."
        return f"Last lines of {self.log_path}:\n{tail}"

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
                    f"before it was ready{self.first_error()}. {self.log_quote()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started
                    return
            time.sleep(0.25)
        self.stop()
        raise DeploymentError(
            f"`bentoml serve {self.bento_tag}` was not ready after {timeout:g} s "
            f"(serving.ready_timeout_seconds). {self.log_quote()}"
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
    grpc_address = None
    if settings.params.serving.grpc_port is not None:  # its own port: see serving/grpc
        grpc_address = env[GRPC_ADDRESS_VARIABLE] = f"{host}:{free_port(host)}"
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
    server.grpc_address = grpc_address
    try:
        server.wait_ready(settings.params.serving.ready_timeout_seconds)
    except BaseException:
        server.stop()
        raise
    return server
