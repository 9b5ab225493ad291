"""Property-based tests of the scalar parsers, interpolation and the merge rules."""

from __future__ import annotations

import copy
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from compose_translator._interpolate import InterpolationError, substitute
from compose_translator._merge import merge_files
from compose_translator._values import (
    INT64_MAX,
    parse_cpus,
    parse_duration,
    parse_ports,
    parse_size,
    to_int,
    to_port,
    to_uint,
)

settings.register_profile("dans", max_examples=300, deadline=None)
settings.load_profile("dans")

_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _only_value_error(fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except ValueError:
        return None


# -- durations ----------------------------------------------------------------------------

@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(_UNITS))),
                min_size=1, max_size=5), st.booleans())
def test_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]], negative: bool) -> None:
    text = ("-" if negative else "") + "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * _UNITS[unit] for n, unit in parts)
    if total > INT64_MAX:  # Go's time.ParseDuration refuses what int64 cannot hold
        assert _only_value_error(parse_duration, text) is None
    else:
        assert parse_duration(text) == (-total if negative else total)


@given(st.integers(0, INT64_MAX))
def test_duration_round_trips_every_int64_in_nanoseconds(nanos: int) -> None:
    assert parse_duration(f"{nanos}ns") == nanos


@given(st.text(max_size=40) | st.integers() | st.floats() | st.none())
def test_duration_never_fails_otherwise_and_stays_in_int64(value: Any) -> None:
    result = _only_value_error(parse_duration, value)
    assert result is None or -INT64_MAX - 1 <= result <= INT64_MAX


# -- sizes and CPUs -----------------------------------------------------------------------

@given(st.integers(0, 2**20), st.sampled_from(["", "b", "k", "kb", "m", "mb", "g", "gb", "K",
                                               "M", "G"]))
def test_size_multiplies_by_binary_units(number: int, unit: str) -> None:
    power = " kmg".index((unit[:1] if unit not in ("", "b") else " ").lower())
    assert parse_size(f"{number}{unit}") == number * 1024 ** power


@given(st.text(max_size=30) | st.integers() | st.floats() | st.booleans())
def test_size_is_a_non_negative_int64_or_a_value_error(value: Any) -> None:
    result = _only_value_error(parse_size, value)
    assert result is None or 0 <= result <= INT64_MAX


@given(st.decimals(min_value=0, max_value=10**6, places=9, allow_nan=False))
def test_cpus_are_exact_nano_cpus(value: Any) -> None:
    assert parse_cpus(str(value)) == int(value * 10**9)


@given(st.text(max_size=30) | st.floats() | st.integers())
def test_cpus_never_fail_otherwise(value: Any) -> None:
    result = _only_value_error(parse_cpus, value)
    assert result is None or 0 <= result <= 10**19


# -- integers -----------------------------------------------------------------------------

@given(st.integers() | st.text(max_size=45) | st.floats() | st.booleans() | st.none())
def test_integer_fields_keep_their_range(value: Any) -> None:
    for fn, low, high in ((to_int, -(2**63), INT64_MAX), (to_uint, 0, 2**64 - 1),
                          (to_port, 0, 65535)):
        result = _only_value_error(fn, value)
        assert result is None or low <= result <= high


# -- ports --------------------------------------------------------------------------------

_PORT = st.integers(0, 65535)


@given(_PORT, st.integers(0, 20), st.one_of(st.none(), _PORT),
       st.sampled_from(["", "/tcp", "/udp", "/sctp"]))
def test_port_ranges_expand_pairwise(target: int, width: int, published: int | None,
                                     proto: str) -> None:
    high = min(target + width, 65535)
    spec = f"{target}-{high}" if high != target else str(target)
    if published is not None:
        top = published + (high - target)
        if top > 65535:
            return
        spec = (f"{published}-{top}" if top != published else str(published)) + ":" + spec
    ports = parse_ports(spec + proto)
    assert sorted(p["target"] for p in ports) == list(range(target, high + 1))
    for port in ports:
        assert port["protocol"] == (proto[1:] or "tcp")
        if published is not None:
            assert port["published"] - published == port["target"] - target
        else:
            assert port["published"] is None


@given(st.text(alphabet=string.digits + ":-/.[]abtcpu ", max_size=25))
def test_port_specs_are_valid_ports_or_a_value_error(spec: str) -> None:
    ports = _only_value_error(parse_ports, spec)
    for port in ports or []:
        assert 0 <= port["target"] <= 65535
        assert port["published"] is None or 0 <= port["published"] <= 65535


# -- interpolation ------------------------------------------------------------------------

_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_VALUES = st.text(alphabet=st.characters(blacklist_characters="$", blacklist_categories=["Cs"]),
                  max_size=20)


@given(_VALUES)
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert substitute(text, {}, set()) == text


@given(_NAMES, _VALUES, _VALUES, _VALUES)
def test_variables_are_replaced_and_escapes_kept(name: str, value: str, before: str,
                                                 after: str) -> None:
    env = {name: value}
    assert substitute(f"{before}${{{name}}}{after}", env, set()) == before + value + after
    assert substitute(f"$${name}", env, set()) == f"${name}"
    missing: set[str] = set()
    assert substitute(f"${{{name}}}", {}, missing) == ""
    assert missing == {name}


@given(_NAMES, _VALUES.filter(lambda s: "}" not in s), st.sampled_from([":-", "-"]),
       st.one_of(st.none(), st.just(""), _VALUES))
def test_defaults_follow_the_cli(name: str, default: str, sep: str, value: str | None) -> None:
    env = {} if value is None else {name: value}
    result = substitute(f"${{{name}{sep}{default}}}", env, set())
    use_default = value is None or (sep == ":-" and value == "")
    assert result == (default if use_default else value)


@given(st.text(max_size=30))
def test_substitution_fails_only_with_an_interpolation_error(text: str) -> None:
    try:
        substitute(text, {"A": "x"}, set())
    except InterpolationError:
        pass


# -- merging ------------------------------------------------------------------------------

_SCALARS = st.one_of(st.integers(-5, 5), st.text(string.ascii_lowercase, max_size=3))
_ENV = st.dictionaries(st.sampled_from(list("ABCDE")), _SCALARS, max_size=4)


def _file(image: str, env: dict[str, Any], ports: list[int]) -> dict[str, Any]:
    return {"services": {"app": {"image": image, "environment": env,
                                 "ports": [{"target": p, "published": p + 1000,
                                            "protocol": "tcp"} for p in ports]}},
            "networks": {}, "volumes": {}, "configs": {}, "secrets": {}}


_FILES = st.builds(_file, st.text(string.ascii_lowercase, min_size=1, max_size=4), _ENV,
                   st.lists(st.integers(1, 20), max_size=4, unique=True))


@given(_FILES)
def test_merging_one_file_or_the_same_file_twice_changes_nothing(one: dict[str, Any]) -> None:
    assert merge_files([one]) == one
    twice = merge_files([copy.deepcopy(one), copy.deepcopy(one)])
    assert twice["services"]["app"]["image"] == one["services"]["app"]["image"]
    assert twice["services"]["app"]["environment"] == one["services"]["app"]["environment"]
    assert len(twice["services"]["app"]["ports"]) == len(one["services"]["app"]["ports"])


@given(_FILES, _FILES)
def test_later_files_win_maps_merge_and_ports_key_by_published(base: dict[str, Any],
                                                               over: dict[str, Any]) -> None:
    original = copy.deepcopy(base)
    merged = merge_files([base, over])["services"]["app"]
    assert base == original  # inputs are not changed
    assert merged["image"] == over["services"]["app"]["image"]
    assert merged["environment"] == {**base["services"]["app"]["environment"],
                                     **over["services"]["app"]["environment"]}
    published = {p["published"] for p in merged["ports"]}
    assert published == {p["published"] for f in (base, over)
                         for p in f["services"]["app"]["ports"]}
    assert len(published) == len(merged["ports"])
