"""Dependency edges for the planner: declared and inferred from environment values."""

from __future__ import annotations

from typing import Any

import pytest

from compose_translator import Dependency
from compose_translator._deps import find_dependencies, hosts_in


@pytest.mark.parametrize(("value", "hosts"), [
    ("http://worker:5000", ["worker"]),
    ("db:5432", ["db"]),
    ("postgres://user:pw@db:5432/app", ["db"]),
    ("redis", ["redis"]),
    ("amqp://rabbit/vhost", ["rabbit"]),
    ("a:1,b:2", ["a", "b"]),
    ("hello world", []),
    ("/var/lib/x", []),
    ("", []),
], ids=str)
def test_hosts_in(value: str, hosts: list[str]) -> None:
    assert hosts_in(value) == hosts


def test_find_dependencies() -> None:
    services: dict[str, Any] = {
        "front": {"environment": {"API": "http://api:5000", "SELF": "http://front:1"},
                  "depends_on": {"api": {"condition": "service_started"}}},
        "api": {"links": ["db:database"], "environment": {"CACHE": "cache:6379",
                                                          "TEXT": "talk to db later"}},
        "db": {},
        "cache": {"environment": {"NOPE": "ghost:1"}},
        "worker": {},
    }
    deps = find_dependencies(services, {"worker": {"calls": ["api"]}})
    assert deps == [
        Dependency("api", "db", "links", True),
        Dependency("front", "api", "depends_on", True),
        Dependency("worker", "api", "x-dans", True),
        Dependency("api", "cache", "environment", False),
        Dependency("front", "api", "environment", False),
    ]
