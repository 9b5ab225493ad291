"""The Prometheus exposition of the LB's per-group series."""

from __future__ import annotations

import pytest

from lb.metrics import BUCKETS, Metrics


def _lines(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if not line.startswith("#")}


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
    assert metrics.series("web", "v1") is web  # one object per frontend and group
    got = _lines(metrics.render())
    labels = 'frontend="web",group="v1"'
    assert got[f'dans_lb_requests_total{{{labels},code="200"}}'] == 3
    assert got[f'dans_lb_requests_total{{{labels},code="502"}}'] == 1
    assert got[f'dans_lb_errors_total{{{labels},kind="connect"}}'] == 2
    assert got['dans_lb_errors_total{frontend="web",group="-",kind="no_group"}'] == 1
    assert got[f"dans_lb_retries_total{{{labels}}}"] == 1
    assert got[f"dans_lb_in_flight{{{labels}}}"] == 2
    buckets = [got[f'dans_lb_request_duration_seconds_bucket{{{labels},le="{b}"}}']
               for b in BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[0] == 1 and buckets[BUCKETS.index(0.005)] == 2 and buckets[-1] == 3
    assert got[f'dans_lb_request_duration_seconds_bucket{{{labels},le="+Inf"}}'] == 4
    assert got[f"dans_lb_request_duration_seconds_count{{{labels}}}"] == 4
    assert got[f"dans_lb_request_duration_seconds_sum{{{labels}}}"] == pytest.approx(99.2034)


def test_every_metric_family_is_declared_once() -> None:
    text = Metrics().render()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert types == ["dans_lb_requests_total", "dans_lb_errors_total", "dans_lb_retries_total",
                     "dans_lb_in_flight", "dans_lb_request_duration_seconds"]
