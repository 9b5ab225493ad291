"""The Prometheus exposition of the LB: per-group series by version, and the upgrade's state."""

from __future__ import annotations

import pytest

from lb._backends import Resolver
from lb._balancer import FrontendRuntime
from lb._mesh import render_hops
from lb._metrics import BUCKETS, FAMILIES, MAX_RETIRED, Metrics
from lb._progress import PHASES, Progress, parse_update
from lb.errors import LBError
from lb.table import RoutingTable
from tests.lb.promtext import parse, total, values


def _lines(text: str) -> dict[str, float]:
    parse(text)  # well-formed first
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if not line.startswith("#")}


def _frontend(metrics: Metrics, groups: tuple[str, ...] = ("main",)) -> FrontendRuntime:
    table = RoutingTable.from_dict({"frontends": [{
        "name": "web", "listen": 8080, "active": groups[0],
        "groups": {g: {"backends": ["127.0.0.1:1"]} for g in groups}}]})
    return FrontendRuntime(table.frontends[0], Resolver(), metrics)


def test_series_render_counts_errors_in_flight_and_cumulative_buckets() -> None:
    metrics = Metrics()
    web = metrics.series("web", "v1")
    web.in_flight += 2
    for code, seconds in [(200, 0.0004), (200, 0.003), (502, 0.2), (200, 99.0)]:
        web.observe(code, seconds)
    web.error("connect")
    web.error("connect")
    web.retries += 1
    metrics.error("web", "-", "no_group")
    assert metrics.series("web", "v1") is web  # one object per frontend, group and version
    got = _lines(metrics.render())
    labels = 'frontend="web",group="v1",version="deployed"'
    assert got[f'dans_lb_requests_total{{{labels},code="200"}}'] == 3
    assert got[f'dans_lb_requests_total{{{labels},code="502"}}'] == 1
    assert got[f'dans_lb_errors_total{{{labels},kind="connect"}}'] == 2
    assert got['dans_lb_errors_total{frontend="web",group="-",version="none",'
               'kind="no_group"}'] == 1
    assert got[f"dans_lb_retries_total{{{labels}}}"] == 1
    assert got[f"dans_lb_in_flight{{{labels}}}"] == 2
    buckets = [got[f'dans_lb_request_duration_seconds_bucket{{{labels},le="{b}"}}']
               for b in BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[0] == 1 and buckets[BUCKETS.index(0.005)] == 2 and buckets[-1] == 3
    assert got[f'dans_lb_request_duration_seconds_bucket{{{labels},le="+Inf"}}'] == 4
    assert got[f"dans_lb_request_duration_seconds_count{{{labels}}}"] == 4
    assert got[f"dans_lb_request_duration_seconds_sum{{{labels}}}"] == pytest.approx(99.2034)


def test_every_registered_family_is_rendered_once_with_its_declared_labels() -> None:
    metrics = Metrics()
    s = metrics.series("web", "main")
    s.observe(200, 0.01)
    s.error("connect")
    metrics.pinned("web", "v1", 1.0)
    progress = Progress()
    progress.update(parse_update({"stack": "shop", "generation": "1", "strategy": "dans",
                                  "phase": "running", "step": {
                                      "index": 1, "total": 2, "kind": "route", "key": "r"}})[0])
    metrics.untraced["web"] = 1
    families = parse(metrics.render() + progress.render() + render_hops(metrics, {"web": "api"}))
    assert list(families) == list(FAMILIES)  # the registry is exactly what is exported
    for name, family in families.items():
        assert family.kind == FAMILIES[name].kind and family.help == FAMILIES[name].help
        assert family.samples, f"{name} has no sample"
        for (_, labels) in family.samples:
            names = tuple(k for k, _ in labels if k != "le")
            assert names == FAMILIES[name].labels, (name, labels)


def test_hostile_label_values_are_escaped_and_read_back_unchanged() -> None:
    # The routing table refuses quotes and backslashes in names; the renderer escapes
    # anyway, since names come from service names.
    metrics = Metrics()
    nasty = 'a"b\\c\nd} x="y'
    metrics.series(nasty, "g").observe(200, 0.1)
    text = metrics.render()
    assert "\nd}" not in text  # the newline did not end the line
    got = values(text, "dans_lb_requests_total", code="200")
    assert list(got) == [(("frontend", nasty), ("group", "g"), ("version", "deployed"),
                          ("code", "200"))]


def test_a_version_change_starts_new_series_and_every_counter_only_grows() -> None:
    metrics = Metrics()
    fe = _frontend(metrics, ("main", "dans-7"))
    main, temp = fe.groups["main"], fe.groups["dans-7"]
    main.begin()
    main.done(200, 0.01)
    main.begin()  # one request in flight across the change
    metrics.set_versions({"dans-7": "7"})
    fe.recount()
    temp.begin()
    temp.done(503, 0.2)
    before = metrics.render()
    metrics.set_versions({"main": "7"})
    fe.recount()
    main.done(200, 0.02)
    main.begin()
    main.done(200, 0.03)
    after = metrics.render()
    assert total(after, "dans_lb_requests_total", version="deployed") == 1
    assert total(after, "dans_lb_requests_total", version="7") == 3
    assert total(after, "dans_lb_requests_total", version="7", code="503") == 1
    assert total(after, "dans_lb_in_flight") == 0  # the in-flight request moved along
    old, new = parse(before), parse(after)
    for name, family in old.items():
        if family.kind in ("counter", "histogram"):
            for key, value in family.samples.items():
                assert new[name].samples[key] >= value, (key, value)


def test_series_of_groups_gone_are_bounded() -> None:
    metrics = Metrics()
    fe = _frontend(metrics)
    for i in range(3 * MAX_RETIRED):
        metrics.set_versions({"main": f"v{i}"})
        fe.recount()
        fe.groups["main"].begin()
        fe.groups["main"].done(200, 0.01)
    assert len(metrics.by_group) == MAX_RETIRED + 1  # the live one and the last retired
    text = metrics.render()
    assert total(text, "dans_lb_requests_total", version=f"v{3 * MAX_RETIRED - 1}") == 1
    assert not values(text, "dans_lb_requests_total", version="v0")


def test_progress_renders_phase_step_and_start_time_of_the_step() -> None:
    progress = Progress()
    idle = parse(progress.render())
    assert idle["dans_lb_upgrade_active"].samples == {("dans_lb_upgrade_active", ()): 0}
    assert not idle["dans_lb_upgrade_info"].samples
    body = {"stack": "shop", "generation": "48213", "strategy": "dans", "phase": "running",
            "step": {"index": 3, "total": 9, "kind": "route", "key": "route:lb"}}
    progress.update(parse_update(body)[0])
    started = progress.step_started
    progress.update(parse_update(body)[0])  # the same step again: its start stays
    assert progress.step_started == started > 0
    text = progress.render()
    assert total(text, "dans_lb_upgrade_active") == 1
    assert values(text, "dans_lb_upgrade_phase") == {
        (("phase", p),): float(p == "running") for p in PHASES}
    assert total(text, "dans_lb_upgrade_info", stack="shop", generation="48213",
                 strategy="dans") == 1
    assert total(text, "dans_lb_upgrade_step_index") == 3
    assert total(text, "dans_lb_upgrade_steps") == 9
    assert total(text, "dans_lb_upgrade_step_info", kind="route", step="route:lb") == 1
    assert total(text, "dans_lb_upgrade_updates_total") == 2
    assert total(text, "dans_lb_upgrade_step_started_timestamp_seconds") == \
        pytest.approx(started, abs=0.001)


def test_progress_body_with_versions_is_read() -> None:
    status, versions = parse_update({"phase": "done", "versions": {"main": "48213"}})
    assert status.phase == "done" and versions == {"main": "48213"}


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({"phase": "dancing"}, "phase must be one of"),
    ({"generation": 'x"}'}, "generation must be"),
    ({"generation": "a" * 65}, "generation must be"),
    ({"strategy": 3}, "strategy must be"),
    ({"stack": "a/b"}, "stack"),
    ({"stack": "x\ny"}, "stack"),
    ({"step": {"index": 4, "total": 3}}, "must not exceed"),
    ({"step": {"index": -1}}, "step.index"),
    ({"step": {"total": True}}, "step.total"),
    ({"step": "route"}, "step must be an object"),
    ({"step": {"kind": "a b"}}, "step.kind"),
    ({"versions": {"main": "v 1"}}, "version of group main"),
    ({"versions": {'ma"in': "1"}}, "group"),
    ({"versions": {f"g{i}": "1" for i in range(65)}}, "at most 64"),
], ids=["not-object", "phase", "generation-quote", "generation-long", "strategy-type",
        "stack-slash", "stack-newline", "index-over-total", "index-negative", "total-bool",
        "step-type", "kind-space", "version-space", "group-quote", "too-many-versions"])
def test_bad_progress_bodies_are_refused_with_400(body: object, message: str) -> None:
    with pytest.raises(LBError, match=message) as caught:
        parse_update(body)
    assert getattr(caught.value, "http_status", 400) == 400
