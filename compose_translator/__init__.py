"""Compose files -> the Engine API specs `docker stack deploy` would create, faithfully.

    project = load_project(["docker-compose.yml"])      # read, interpolate, validate, merge
    specs = translate(project, "shop")                  # pure: services, networks, configs...

Stages, one module each: `_yaml` (parse, lines), `_interpolate`, `_schema` (validate),
`_normalize` (short forms -> canonical), `_merge`, `_convert_*` (one pure function per spec
section), `_deps` (edges for the planner), `_translate`. Nothing here talks to Docker.
Every bad input raises `compose_translator.ComposeError` (the package's own, `_errors`).
"""

from __future__ import annotations

from compose_translator._convert_service import IMAGE_LABEL
from compose_translator._deps import Dependency
from compose_translator._errors import ComposeError
from compose_translator._files import MAX_COMPOSE_BYTES
from compose_translator._project import ComposeProject, load_project
from compose_translator._translate import StackSpecs, translate

__all__ = ["IMAGE_LABEL", "MAX_COMPOSE_BYTES", "ComposeError", "ComposeProject", "Dependency",
           "StackSpecs", "load_project", "translate"]
