"""A generated corpus of hostile Compose input and a runner that bounds each case in time and
memory.

    python -m tests.translator.fuzz [--count N] [--seed S]   # prints a summary, exit 1 on a bug

Cases are made, not stored: the known reproducers (`KNOWN`), then seeded mutations of every
fidelity fixture (a value anywhere replaced by a hostile one, lines dropped, duplicated or cut,
bytes flipped) and a few generated shapes (anchors, nesting). Every case must end in a
`ComposeError` or in specs the Engine can take (integers in int64, no NaN, no NUL), within
`CASE_SECONDS` and `MEMORY_BYTES`. The cases run in a child process that reports each one as
it starts: a case that overruns is killed, recorded as a hang, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "fidelity"
CASE_SECONDS = 20.0  # far above any case (milliseconds), far below a hang
MEMORY_BYTES = 1536 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """Files (relative name -> bytes) of one project; `docker-compose.yml` is loaded."""

    name: str
    files: dict[str, bytes]
    env: dict[str, str] = field(default_factory=dict)


def _svc(body: str, tail: str = "") -> bytes:
    return ("services:\n  app:\n    image: img\n" + body + tail).encode()


def _laughs(levels: int, width: int) -> bytes:
    lines = ["x-l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x-l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines += ["services:", "  app:", "    image: img", "    labels:", f"      x: *l{levels - 1}"]
    return ("\n".join(lines) + "\n").encode()


_CONFIG = "configs:\n  c:\n    file: ./c.txt\n"
KNOWN: list[Case] = [
    Case("non-utf8", {"docker-compose.yml": b"services:\n  app:\n    image: caf\xe9\n"}),
    Case("utf16-bom", {"docker-compose.yml": "services:\n  app:\n    image: x\n"
                       .encode("utf-16")}),
    Case("utf16-no-bom", {"docker-compose.yml": "services:\n  app:\n    image: x\n"
                          .encode("utf-16-le")}),
    Case("non-utf8-dotenv", {"docker-compose.yml": _svc("    environment: [A=$A]\n"),
                             ".env": b"A=caf\xe9\n"}),
    Case("non-utf8-env-file", {"docker-compose.yml": _svc("    env_file: a.env\n"),
                               "a.env": b"A=caf\xe9\n"}),
    Case("tag-int-abc", {"docker-compose.yml": _svc("    deploy:\n      replicas: !!int abc\n")}),
    Case("tag-float-abc", {"docker-compose.yml": _svc("    deploy:\n      replicas: "
                                                      "!!float abc\n")}),
    Case("tag-timestamp", {"docker-compose.yml": _svc("    labels:\n      a: !!timestamp nope\n")}),
    Case("tag-binary", {"docker-compose.yml": _svc("    labels:\n      a: !!binary '%%%'\n")}),
    Case("tag-python", {"docker-compose.yml": _svc("    labels:\n      a: !!python/object:os.system"
                                                   " ls\n")}),
    Case("int-5000-digits", {"docker-compose.yml": _svc("    deploy:\n      replicas: "
                                                        + "9" * 5000 + "\n")}),
    Case("int-0x_", {"docker-compose.yml": _svc("    deploy:\n      replicas: 0x_\n")}),
    Case("memory-inf", {"docker-compose.yml": _svc("    deploy:\n      resources:\n        limits:"
                                                   "\n          memory: .inf\n")}),
    Case("memory-1e400", {"docker-compose.yml": _svc("    deploy:\n      resources:\n        "
                                                     "limits:\n          memory: 1e400\n")}),
    Case("tmpfs-size-inf", {"docker-compose.yml": _svc("    volumes:\n      - type: tmpfs\n"
                                                       "        target: /t\n        tmpfs:\n"
                                                       "          size: .inf\n")}),
    Case("nul-env-file", {"docker-compose.yml": _svc('    env_file: "a\\0b"\n')}),
    Case("nul-config-file", {"docker-compose.yml": _svc("    configs: [c]\n",
                                                        'configs:\n  c:\n    file: "a\\0b"\n')}),
    Case("nul-secret-file", {"docker-compose.yml": _svc("    secrets: [s]\n",
                                                        'secrets:\n  s:\n    file: "a\\0b"\n')}),
    Case("billion-laughs", {"docker-compose.yml": _laughs(9, 10)}),
    Case("cpus-1e999999999", {"docker-compose.yml": _svc("    deploy:\n      resources:\n       "
                                                         " limits:\n          cpus: "
                                                         "'1e999999999'\n")}),
    Case("replicas-negative", {"docker-compose.yml": _svc("    deploy:\n      replicas: -1\n")}),
    Case("parallelism-negative", {"docker-compose.yml": _svc("    deploy:\n      update_config:\n"
                                                             "        parallelism: -1\n")}),
    Case("max-attempts-negative", {"docker-compose.yml": _svc("    deploy:\n      restart_policy:"
                                                              "\n        max_attempts: -1\n")}),
    Case("retries-negative", {"docker-compose.yml": _svc("    healthcheck:\n      test: [CMD, "
                                                         "'true']\n      retries: -1\n")}),
    Case("config-mode-negative", {"docker-compose.yml": _svc(
        "    configs:\n      - source: c\n        mode: -1\n", _CONFIG), "c.txt": b"x"}),
    Case("published-70000", {"docker-compose.yml": _svc("    ports:\n      - published: 70000\n"
                                                        "        target: 80\n")}),
    Case("target-negative", {"docker-compose.yml": _svc("    ports:\n      - published: 8000\n"
                                                        "        target: -1\n")}),
    Case("duration-beyond-int64", {"docker-compose.yml": _svc(
        "    healthcheck:\n      test: [CMD, 'true']\n      interval: 99999999999999999999h\n")}),
    Case("tag-bool-maybe", {"docker-compose.yml": _svc("    tty: !!bool maybe\n")}),
    Case("service-name-newline", {"docker-compose.yml": b'services:\n  "web\\n":\n    image: i\n'}),
    Case("restart-newline", {"docker-compose.yml": _svc('    restart: "no\\n"\n')}),
    Case("deep-nesting", {"docker-compose.yml": _svc("    labels:\n      a: "
                                                     + "[" * 900 + "]" * 900 + "\n")}),
    Case("self-anchor", {"docker-compose.yml": b"x-a: &a\n  b: *a\nservices: {}\n"}),
    Case("empty-file", {"docker-compose.yml": b""}),
    Case("fifo-env-file", {"docker-compose.yml": _svc("    env_file: fifo\n"), "fifo": b"<fifo>"}),
]

# Values a hostile or careless user puts anywhere.
HOSTILE: list[Any] = [
    -1, 0, 2**63, 2**64, -(2**63) - 1, 10**30, 1e400, float("inf"), float("nan"), -0.0, 1.5,
    True, None, "", " ", "\0", "a\nb", "web\n", "${", "$", "${X:?boom}", "$$", "${X-${Y}}",
    "9" * 400, "1e999999999", "0x_", "-1s", "1h" * 60, "99999999999999999999h", ".inf",
    "NaN", "é", "\U0001F600", "a" * 3000, "../../etc/passwd", "/dev/zero", "-", "80-70",
    "0-65535:0-65535", "1.2.3.4:99999:80", "[::1]:80:80", "80:80/icmp", "a:b:c:d:e", [],
    [None], [[[[]]]], {}, {"x": None}, {"": ""}, ["a", {"b": 1}], "!!int abc",
]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {k: _replace(v, rest, value) if k == head else v for k, v in data.items()}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(data)]


def _dump(data: Any) -> bytes:
    class Dumper(yaml.SafeDumper):
        pass
    Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]
    return yaml.dump(data, Dumper=Dumper, allow_unicode=True, sort_keys=False).encode()


def _fixture_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _text_mutation(rng: random.Random, text: bytes) -> bytes:
    lines = text.split(b"\n")
    kind = rng.randrange(6)
    i = rng.randrange(len(lines))
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.insert(i, lines[i])
    elif kind == 2:
        return text[:rng.randrange(len(text) + 1)]
    elif kind == 3:
        pos = rng.randrange(len(text) + 1)
        return text[:pos] + bytes([rng.randrange(256)]) + text[pos:]
    elif kind == 4:
        lines[i] = b" " * rng.randrange(8) + lines[i].lstrip()
    else:
        lines[i] = lines[i] + rng.choice([b" &x", b" *x", b" !!int", b" {", b" [", b" '",
                                          b" !!binary", b": x", b" <<: *x"])
    return b"\n".join(lines)


def generate(count: int, seed: int = 20261203) -> list[Case]:
    """`KNOWN`, then `count` seeded mutations of the fidelity fixtures (deterministic)."""
    rng = random.Random(seed)
    fixtures = sorted(p for p in FIXTURES.iterdir() if (p / "docker-compose.yml").is_file())
    parsed = {}
    for folder in fixtures:
        files = _fixture_files(folder)
        parsed[folder.name] = (files, yaml.safe_load(files["docker-compose.yml"]))
    cases = list(KNOWN)
    for n in range(count):
        name = fixtures[n % len(fixtures)].name
        files, data = parsed[name]
        if n % 4 == 3:
            text = _text_mutation(rng, files["docker-compose.yml"])
            cases.append(Case(f"{name}-text-{n}", {**files, "docker-compose.yml": text}))
            continue
        paths = list(_paths(data))
        mutated = data
        for _ in range(1 + rng.randrange(3)):
            path = rng.choice(paths)
            mutated = _replace(mutated, path, rng.choice(HOSTILE))
            paths = list(_paths(mutated))
        cases.append(Case(f"{name}-value-{n}", {**files, "docker-compose.yml": _dump(mutated)}))
    return cases


# -- checking one case ----------------------------------------------------------------------

def _engine_ready(value: Any, where: str = "") -> str | None:
    """Why `value` (a spec) could not go to the Engine, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else f"{where}: integer {value} beyond 64 bits"
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else f"{where}: {value}"
    if isinstance(value, str):
        return f"{where}: NUL in {value!r}" if "\0" in value else None
    if isinstance(value, bytes):
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return f"{where}: unexpected {type(value).__name__}"
    for key, item in items:
        problem = _engine_ready(item, f"{where}.{key}")
        if problem:
            return problem
    return None


def run_case(case: Case, workdir: Path) -> str:
    """'error' (a clean ComposeError), 'ok' (Engine-ready specs) or 'BUG: ...'."""
    from compose_translator import ComposeError, load_project, translate

    for name, data in case.files.items():
        if data == b"<fifo>":
            os.mkfifo(workdir / name)
        else:
            (workdir / name).write_bytes(data)
    try:
        specs = translate(load_project([str(workdir / "docker-compose.yml")],
                                       environ=case.env), "fz")
    except ComposeError as exc:
        message = str(exc)
        if "Traceback" in message or not message.strip():
            return f"BUG: unclear message {message!r}"
        return "error"
    except Exception:
        return "BUG: " + traceback.format_exc(limit=-3)
    problem = _engine_ready({"services": specs.services, "networks": specs.networks,
                             "configs": specs.configs, "secrets": specs.secrets})
    return f"BUG: accepted but not Engine-ready: {problem}" if problem else "ok"


Check = Callable[[Case, Path], str]


def _child(cases: list[Case], start: int, conn: Any, check: Check) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    for index in range(start, len(cases)):
        conn.send(("start", index))
        with tempfile.TemporaryDirectory() as tmp:
            try:
                outcome = check(cases[index], Path(tmp))
            except MemoryError:
                outcome = "BUG: more memory than the bound"
        conn.send(("done", index, outcome))
    conn.send(("end",))


@dataclass
class Report:
    """Outcome of each case by name, and how long the run took."""

    outcomes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bugs(self) -> dict[str, str]:
        return {k: v for k, v in self.outcomes.items() if not v.startswith(("ok", "error"))}

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            kind = outcome.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return (f"{len(self.outcomes)} cases in {self.seconds:.1f} s: "
                + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def run(cases: list[Case], case_seconds: float = CASE_SECONDS, check: Check = run_case
        ) -> Report:
    """Run every case in a bounded child process; hangs are killed and recorded."""
    context = multiprocessing.get_context("fork")
    report = Report()
    began = time.monotonic()
    start = 0
    while start < len(cases):
        parent, child = context.Pipe()
        proc = context.Process(target=_child, args=(cases, start, child, check), daemon=True)
        proc.start()
        current = start
        while True:
            if not parent.poll(case_seconds):
                proc.kill()
                report.outcomes[cases[current].name] = f"HANG: over {case_seconds} s"
                start = current + 1
                break
            try:
                message = parent.recv()
            except EOFError:
                report.outcomes[cases[current].name] = f"CRASH: exit {proc.exitcode}"
                start = current + 1
                break
            if message[0] == "start":
                current = message[1]
            elif message[0] == "done":
                report.outcomes[cases[message[1]].name] = message[2]
            else:
                start = len(cases)
                break
        proc.join(5)
        parent.close()
    report.seconds = time.monotonic() - began
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="mutated cases (default 2000)")
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    report = run(generate(args.count, args.seed))
    print(report.summary())
    for name, outcome in report.bugs.items():
        print(f"--- {name}\n{outcome}")
    print(json.dumps({"cases": len(report.outcomes), "bugs": len(report.bugs),
                      "seconds": round(report.seconds, 1)}))
    return 1 if report.bugs else 0


if __name__ == "__main__":
    raise SystemExit(main())
