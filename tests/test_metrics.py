"""Latency percentiles a user reads in `run --json`: exact, never outside [min, max]."""
import random

from iovtui.sim.metrics import LatencyHistogram

from conftest import make_preset, sim_for


def test_equal_latencies_give_that_latency_exactly():
    h = LatencyHistogram()
    for _ in range(500):
        h.add(7209)
    assert h.percentile(50) == h.percentile(99) == 7209 and h.precision == "exact"


def test_percentiles_are_nearest_rank_samples():
    r = random.Random(3)
    xs = [r.randrange(900, 40_000) for _ in range(3000)]
    h = LatencyHistogram()
    for x in xs:
        h.add(x)
    s = sorted(xs)
    assert h.percentile(50) == s[1499] and h.percentile(99) == s[2969] and h.precision == "exact"


def test_many_distinct_values_fold_within_the_stated_precision_and_bounds():
    r = random.Random(5)
    xs = [r.randrange(1_000, 5_000_000) for _ in range(30_000)]
    h = LatencyHistogram()
    for x in xs:
        h.add(x)
    s = sorted(xs)
    assert h.precision == "±0.4 %" and len(h.counts) <= LatencyHistogram.EXACT_LIMIT
    for p, i in ((50, 14_999), (99, 29_699)):
        assert abs(h.percentile(p) - s[i]) <= 0.004 * s[i]
        assert s[0] <= h.percentile(p) <= s[-1]


def test_json_latency_is_inside_the_run_s_min_and_max():
    s = sim_for(make_preset(traffic={"rate": "500 Mb/s"}), "virtio", packets=300)
    s.run()
    lat = s.summary()["latency_ns"]
    assert lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"] and lat["precision"] == "exact"
