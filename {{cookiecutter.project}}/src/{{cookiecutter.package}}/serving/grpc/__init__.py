"""gRPC beside HTTP: predict.proto, its generated modules, and the server each worker starts."""

from __future__ import annotations

from collections.abc import Mapping

# host:port to listen on instead of 0.0.0.0:<serving.grpc_port>: local servers (deploy/server.py)
# take a free port on loopback each, so that two of them never share one through SO_REUSEPORT.
ADDRESS_VARIABLE = "SERVICE_GRPC_ADDRESS"


def listen_address(grpc_port: int | None, environ: Mapping[str, str]) -> str | None:
    """Where a worker's gRPC server listens, None for no gRPC (serving.grpc_port: null)."""
    if grpc_port is None:
        return None
    return environ.get(ADDRESS_VARIABLE) or f"0.0.0.0:{grpc_port}"
