"""Fixtures of the mesh tests: the LB image of this code (it also plays the test services)."""

from __future__ import annotations

import pytest

from upgrade_manager.gateway import Gateway
from upgrade_manager.lb_image import ensure_lb_image, source_tag


@pytest.fixture(scope="session")
def lb_image(gateway: Gateway) -> str:
    """The LB image of this very code (tagged by its source digest), built when missing."""
    tag = source_tag()
    ensure_lb_image(tag, gateway=gateway)
    return tag
