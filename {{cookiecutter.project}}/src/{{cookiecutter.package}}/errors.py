"""Every exception the package raises on purpose; it imports nothing of the package.

The CLI turns a `PipelineError` into one line and exit 2 (bad input or configuration, a refused move)
and a `CheckFailed` into exit 1 (a check ran and said no). Anything else is a bug, with its traceback.
"""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """An expected failure (bad input, a refused move): the CLI reports it in one line, exit 2."""


class CheckFailed(Exception):
    """A check ran and said no (invalid data, a failed smoke test, a gate rejection); its report
    has been written. The CLI exits 1."""


class SettingsError(PipelineError, ValueError):
    """A params file or environment value that cannot be used; the message says which and why."""


class StateError(PipelineError, RuntimeError):
    """The registry is not in a state the command can work from (no challenger, no champion)."""


class DataError(PipelineError, ValueError):
    """The data cannot be read or does not have what the pipeline needs; the message says where."""


class SuiteError(PipelineError, ValueError):
    """An expectation suite file that cannot be used; the message names the file."""


class RegistryError(PipelineError, RuntimeError):
    """A registry move that was refused; nothing was changed."""


class DeploymentError(PipelineError, RuntimeError):
    """A bento could not be built or served; the message says why, with the server's log if any."""


class BatchJobFailed(PipelineError, RuntimeError):
    """A batch job on a cluster failed, was cancelled or timed out; the message names the job run."""


class NotServing(PipelineError, RuntimeError):
    """A server did not serve the expected model version in time."""


class RolloutError(PipelineError, RuntimeError):
    """A rollout could not be run at all (no traffic target, a server that never came up)."""


class KubernetesError(PipelineError, RuntimeError):
    """kubectl or Prometheus refused or failed; the message names the command or query and why."""


class SecurityError(PipelineError, RuntimeError):
    """A security setting that cannot work (no tokens, a short token), a model refused by its loader."""


class BadRows(ValueError):
    """Rows refused by the service, with what is wrong and, for bad values, their row and feature
    (`details`)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class Unavailable(RuntimeError):
    """The service cannot answer a request now: the model raised (and no fallback answered), or its
    queue is past the deadline. Answered 503, with Retry-After (seconds) when waiting helps."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """A request shed at once: its rows would wait for the model past serving.queue_deadline_ms."""
