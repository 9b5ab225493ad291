"""The example's package on the import path (it lives in examples/vc-auth, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vc-auth"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))


def loadgen() -> ModuleType:
    """examples/vc-auth/loadgen.py as a module."""
    spec = importlib.util.spec_from_file_location("vcauth_loadgen", EXAMPLE / "loadgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
