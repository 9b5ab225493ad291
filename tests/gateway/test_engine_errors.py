"""How engine answers become the project's exceptions (the gateway's translation table)."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from upgrade_manager._sdk_errors import translated as _translated
from upgrade_manager.errors import Conflict, EngineError, EngineUnavailable, NotFound


def _api_error(status: int, text: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    kind = docker.errors.NotFound if status == 404 else docker.errors.APIError  # as the SDK does
    return kind(f"{status} error", response=response, explanation=text)


@pytest.mark.parametrize("status, text, expected", [
    (404, "network n1 not found", NotFound),
    # Engine 20.10 says 500 for a network Swarm removed a moment before: still "not there".
    (500, "network mdz57ofcos87 not found", NotFound),
    (409, "name conflicts with an existing object", Conflict),
    (500, "update out of sequence", Conflict),
    (503, "This node is not a swarm manager.", EngineUnavailable),
    (500, "failed to allocate gateway: Address already in use", EngineError),
], ids=["404", "500-not-found", "409", "out-of-sequence", "not-a-manager", "other-500"])
def test_engine_errors_are_translated(status: int, text: str,
                                      expected: type[EngineError]) -> None:
    with pytest.raises(expected) as caught, _translated("doing it"):
        raise _api_error(status, text)
    assert type(caught.value) is expected
    assert str(caught.value).startswith("doing it: ")


def test_an_engine_that_does_not_answer_in_time_is_unavailable_not_a_traceback() -> None:
    with pytest.raises(EngineUnavailable, match=r"^listing services: the Docker engine did "
                       r"not answer in time"), _translated("listing services"):
        raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=60)")
