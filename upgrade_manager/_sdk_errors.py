"""The gateway's helpers: SDK failures as the project's exceptions, the socket check, filters.

`translated(what)` wraps every SDK call of `gateway.py`: Engine answers become NotFound,
Conflict, EngineUnavailable or EngineError naming `what`; transport failures (no socket, a
timeout, an answer that is not JSON) become EngineUnavailable or EngineError with a hint.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from upgrade_manager.errors import Conflict, EngineError, EngineUnavailable, NotFound

__all__ = ["STACK_LABEL", "check_unix_socket", "label_filter", "removing", "translated"]

STACK_LABEL = "com.docker.stack.namespace"


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn SDK and transport errors into the project's exceptions, naming `what`."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: not found ({_explain(exc)})") from exc
    except docker.errors.APIError as exc:
        text = _explain(exc)
        status = exc.status_code or 0
        if status == 500 and text.endswith("not found"):
            # Engine 20.10 answers 500 "network X not found" for a network Swarm removed a
            # moment before (or a local leftover of one): for the caller, it is not there.
            raise NotFound(f"{what}: not found ({text})") from exc
        if status == 409 or "out of sequence" in text or "already exists" in text:
            raise Conflict(f"{what}: {text}") from exc
        if status == 503 and "swarm" in text.lower():
            raise EngineUnavailable(f"{what}: {text}") from exc
        raise EngineError(f"{what}: {text}") from exc
    except requests.exceptions.JSONDecodeError as exc:
        raise EngineError(f"{what}: the engine's answer is not JSON; is DOCKER_HOST "
                          "(or the socket) really a Docker engine?") from exc
    except requests.exceptions.Timeout as exc:
        raise EngineUnavailable(f"{what}: the Docker engine did not answer in time ({exc})") \
            from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise EngineUnavailable(f"{what}: cannot reach the Docker engine ({exc})") from exc


@contextmanager
def removing(what: str, missing_ok: bool) -> Iterator[None]:
    """`translated(what)` around a removal; with `missing_ok` an absent object is no error."""
    try:
        with translated(what):
            yield
    except NotFound:
        if not missing_ok:
            raise


def check_unix_socket() -> None:
    """Fail fast, and without the SDK's leaked socket, when a local engine socket is dead."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return
    path = host[len("unix://"):]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
        except OSError as exc:
            raise EngineUnavailable(
                f"connecting to the Docker engine: cannot reach the Docker engine at {path} "
                f"({exc.strerror or exc}); is dockerd running? (scripts/harness.sh starts it)"
            ) from exc


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


def label_filter(stack: str | None, labels: dict[str, str] | None) -> dict[str, list[str]] | None:
    """The engine filter for objects of `stack` and with `labels`."""
    wanted = [f"{STACK_LABEL}={stack}"] if stack else []
    wanted += [f"{k}={v}" for k, v in (labels or {}).items()]
    return {"label": wanted} if wanted else None
