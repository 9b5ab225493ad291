"""Building the LB image: `FROM debian:bookworm-slim`, Debian's python3-aiohttp, the LB code.

The build never pulls and needs no PyPI from inside the build (containers here cannot verify
PyPI's TLS): the runtime dependencies are Debian packages (aiohttp 3.8 on bookworm) plus the
`httptools` wheel (Debian's 0.1 is far too old), which is fetched on the host with pip into
a cache (`wheel_dir`) and shipped in the build context under wheels/; the Dockerfile installs
it with `pip --no-index`. The context also carries the `lb` package and nothing else of dans
(`lb` imports no other dans package), copied from wherever dans is installed, and the
Dockerfile `lb/Dockerfile`. The image runs `python3 -m lb.cli` (= `dans lb`). This is the
upgrade manager's deployment code: `lb` itself neither builds nor needs its image.

Tags: `default_tag()` is $DANS_LB_IMAGE, else `source_tag()`: `dans-lb:<version>-<digest>`,
the package version plus a digest of the code that goes into the image, so an engine that
still holds an image of older LB code never runs it by mistake (no registry: images are
built where they run, and a stale `dans-lb:<version>` would otherwise look current).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import lb
from upgrade_manager import __version__
from upgrade_manager.errors import LBError
from upgrade_manager.gateway import Gateway

__all__ = ["IMAGE_NAME", "build_context", "default_tag", "ensure_lb_image", "source_tag",
           "sources"]

IMAGE_NAME = "dans-lb"
_LB_DIR = Path(lb.__file__).parent


def default_tag() -> str:
    """The image the upgrade manager runs: $DANS_LB_IMAGE, else `source_tag()`."""
    return os.environ.get("DANS_LB_IMAGE") or source_tag()


_PYTHON = "3.11"  # Debian bookworm's python3: cp311 wheels fit


def wheel_dir() -> Path:
    """Where host-side wheels for the image are kept ($DANS_WHEEL_DIR or ~/.cache/dans)."""
    default = Path.home() / ".cache" / "dans" / "lb-wheels"
    return Path(os.environ.get("DANS_WHEEL_DIR") or default)


def httptools_wheel() -> Path:
    """The cp311 manylinux httptools wheel for the image, downloaded on the host once.

    Pinned to the version installed here (the one the tests ran with) when there is one.
    """
    try:
        spec = f"httptools=={metadata.version('httptools')}"
    except metadata.PackageNotFoundError:
        spec = "httptools>=0.6.2"
    machine = platform.machine() or "x86_64"
    version = spec.partition("==")[2]
    dest = wheel_dir()
    pattern = f"httptools-{version or '*'}-cp311-*{machine}*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[-1]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", _PYTHON, "--platform", f"manylinux2014_{machine}",
           "--dest", str(dest), spec]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(pattern))
    if done.returncode or not found:
        raise LBError(f"cannot fetch the httptools wheel for the LB image ({' '.join(cmd)}): "
                      f"{(done.stderr or done.stdout).strip()[-400:]}")
    return found[-1]


def sources() -> list[tuple[str, Path]]:
    """(name in the build context, file) for everything the LB image is built from."""
    files = [(f"dans/lb/{p.relative_to(_LB_DIR)}", p) for p in sorted(_LB_DIR.rglob("*.py"))]
    files.append(("Dockerfile", _LB_DIR / "Dockerfile"))
    wheel = httptools_wheel()
    files.append((f"wheels/{wheel.name}", wheel))
    return files


def source_tag() -> str:
    """`dans-lb:<version>-<digest of the image's code>`: changes whenever the code does."""
    digest = hashlib.sha256()
    for name, path in sources():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{IMAGE_NAME}:{__version__}-{digest.hexdigest()[:12]}"


def build_context(dest: Path) -> Path:
    """Write the build context (Dockerfile, code under dans/, wheels/) into `dest`."""
    for name, path in sources():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def ensure_lb_image(
    tag: str | None = None,
    *,
    gateway: Gateway | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Build the LB image as `tag` unless the engine has it already; True when it built.

    Uses `gateway` (or a gateway from the environment). Build failures raise EngineError
    with the builder's last lines.
    """
    tag = tag or default_tag()
    gw = gateway or Gateway.from_env()
    try:
        if not force and gw.image_exists(tag):
            return False
        with tempfile.TemporaryDirectory(prefix="dans-lb-image-") as tmp:
            context = build_context(Path(tmp))
            if progress:
                progress(f"building {tag} from {context}")
            gw.build_image(str(context), tag, log=progress)
        return True
    finally:
        if gateway is None:
            gw.close()
