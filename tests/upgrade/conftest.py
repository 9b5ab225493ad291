"""Fixtures of the upgrade tests: the voting-app images and the LB image, built once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support import Names
from tests.upgrade.voting import DansStack
from upgrade_manager.gateway import Gateway
from upgrade_manager.lb_image import ensure_lb_image, source_tag


@pytest.fixture(scope="session")
def lb_image(gateway: Gateway) -> str:
    """The LB image of this very code (tagged by its source digest), built when missing."""
    tag = source_tag()
    ensure_lb_image(tag, gateway=gateway)
    return tag


@pytest.fixture
def dans_stack(gateway: Gateway, names: Names, voting_images: list[str],
               lb_image: str) -> Iterator[Callable[..., DansStack]]:
    """A factory of dans-managed voting-app stacks; removed with their volumes afterwards."""

    def make(suffix: str = "", replicas: int = 2) -> DansStack:
        stack = DansStack(gateway, names() + suffix, lb_image, replicas=replicas)
        return stack

    yield make
    names.cleanup()  # services, networks and the stacks' named volumes
