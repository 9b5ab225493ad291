"""Fixtures of the vc-auth tests: the example's images and the LB image, built when missing."""

from __future__ import annotations

import subprocess

import pytest

from tests.vc_auth.app import EXAMPLE
from upgrade_manager.gateway import Gateway
from upgrade_manager.lb_image import ensure_lb_image, source_tag


@pytest.fixture(scope="session")
def lb_image(gateway: Gateway) -> str:
    """The LB image of this very code (tagged by its source digest), built when missing."""
    tag = source_tag()
    ensure_lb_image(tag, gateway=gateway)
    return tag


@pytest.fixture(scope="session")
def vcauth_images(gateway: Gateway) -> list[str]:
    """dans-vcauth/app:1 and :2, built by the example's build.sh (only what is stale)."""
    done = subprocess.run([str(EXAMPLE / "build.sh")], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"build.sh failed:\n{done.stdout}{done.stderr}"
    tags = subprocess.run([str(EXAMPLE / "build.sh"), "--list"], capture_output=True,
                          text=True, check=True).stdout.split()
    missing = [t for t in tags if not gateway.image_exists(t)]
    assert not missing, f"build.sh did not build {missing}"
    return tags
