"""Fixtures of the voting-app tests: a stack factory (the images are a root fixture)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support import Names
from tests.voting_app.stacks import VotingStack
from upgrade_manager.gateway import Gateway


@pytest.fixture
def voting_stack(
    gateway: Gateway, names: Names, voting_images: list[str]
) -> Iterator[Callable[..., VotingStack]]:
    """A factory of voting-app stacks named with this test's prefix; all removed afterwards,
    their named volumes included."""

    def make(suffix: str = "", replicas: int = 2) -> VotingStack:
        stack = VotingStack(gateway, names() + suffix, replicas=replicas)
        return stack

    yield make
    names.cleanup()  # services, networks and the stacks' named volumes
